"""The bank service: the rules of a bank change, and calibration, in one place (the routes only
translate HTTP).

An add may be checked first: the labeled cases are scored with the active version and with the
candidate (the active examples plus the new ones, never stored) and compared. A dry run answers
the comparison; with the agreement gate on, an add that lowers mean agreement by more than the
tolerance is refused unless forced (and a forced add says so in its note). A comparison is only
made when the judge scored at least ``fewshot_gate_min_judged`` of the cases on both sides:
with the judge failing, a gate that compared nothing would wave any change through.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eqs_reward._jsonl import read_jsonl
from eqs_reward._resources import judge_cases_dir
from eqs_reward.evaluation import CaseResult, evaluate, fit_threshold, json_safe
from eqs_reward.judge.cases import Example, LabeledCase, make_example
from eqs_reward.server.bank._errors import (
    ExampleNotFoundError,
    StaleVersionError,
    VersionNotFoundError,
)
from eqs_reward.server.bank._stores import BankStore, BankVersion, WriteResult
from eqs_reward.server.errors import (
    ConflictError,
    GateIncompleteError,
    GateRefusedError,
    InvalidRequestError,
    NotFoundError,
)
from eqs_reward.server.guard import GUARD_REASONS
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.schemas import AddExamples, AttackCase, ScoreRequest
from eqs_reward.server.settings import Settings
from eqs_reward.types import DIMENSIONS, ScoreMode

log = logging.getLogger("eqs_reward.bank")

if TYPE_CHECKING:
    from eqs_reward.server.scoring import ScoringService

__all__ = ["BankService", "GateOutcome", "candidate_version"]


def candidate_version(active: BankVersion, new: list[Example]) -> BankVersion:
    """The version an add would create, for scoring only: tagged so its scores and prompt
    prefix never mix with a stored version's."""
    present = {e.id for e in active.examples}
    examples = active.examples + tuple(e for e in new if e.id not in present)
    digest = hashlib.sha256("".join(e.id for e in examples).encode()).hexdigest()[:12]
    return BankVersion(
        active.version + 1, examples, datetime.now(UTC), "candidate", tag=f"-candidate-{digest}"
    )


@dataclass(frozen=True, slots=True)
class GateOutcome:
    """What ``BankService.add`` did: a write, or (dry run) only a comparison."""

    comparison: dict[str, Any] | None
    write: WriteResult | None


def _delta(a: float, b: float) -> float | None:
    return None if math.isnan(a) or math.isnan(b) else b - a


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "mean_agreement": report["mean_agreement"],
        "mean_auc": report["mean_auc"],
        "reward_auc": report["reward"]["auc"],
        "dimensions": {
            d: {
                k: report["dimensions"][d][k]
                for k in ("agreement", "kappa", "auc", "fail_precision", "fail_recall")
            }
            for d in DIMENSIONS
        },
        "judged": report["judged"],
        "failed": report["failed"],
        "failure_reasons": report.get("failure_reasons", {}),
    }


class BankService:
    """Bank changes under the gate rules, calibration, and reads that need a 404."""

    def __init__(
        self, store: BankStore, scoring: ScoringService, settings: Settings, metrics: Metrics
    ) -> None:
        self.store = store
        self.scoring = scoring
        self.settings = settings
        self.metrics = metrics
        self._fits: set[asyncio.Task[None]] = set()  # background taught-model fits

    # -- reads ----------------------------------------------------------------------------------
    async def read(self, version: int | None) -> BankVersion:
        """The active version, or version ``version`` (404 when it does not exist)."""
        try:
            return await (self.store.active() if version is None else self.store.get(version))
        except VersionNotFoundError as exc:
            raise NotFoundError(f"{exc}; GET /v1/fewshot/versions lists them") from exc

    async def calibration(self, version: int | None) -> dict[str, Any]:
        bank_version = await self.read(version)
        stored = await self.store.get_calibration(bank_version.version)
        if stored is None:
            return {
                "version": bank_version.version,
                "fitted": False,
                "thresholds": dict.fromkeys(DIMENSIONS, 0.5),
            }
        return {**stored, "fitted": True}

    # -- writes ---------------------------------------------------------------------------------
    async def add(self, change: AddExamples) -> GateOutcome:
        """Add ``change.examples`` as a new version, or (``dry_run``) only compare; see the
        module doc."""
        examples, note, expected_version = change.examples, change.note, change.expected_version
        limit = self.settings.fewshot_max_examples_per_add
        if len(examples) > limit:
            raise InvalidRequestError(
                f"examples: {len(examples)} examples, over the limit of {limit} per request"
            )
        gate_on = self.settings.fewshot_gate_tolerance is not None
        if change.dry_run or gate_on:
            labeled = change.cases or self.gate_cases()
            if not labeled:
                raise InvalidRequestError(
                    "cases: a dry run needs labeled cases (send 'cases' or configure "
                    "EQS_REWARD_FEWSHOT_GATE_CASES)"
                )
            active = await self.store.active()
            if expected_version is not None and expected_version != active.version:
                raise ConflictError(
                    f"expected_version {expected_version} is stale: the active version is "
                    f"{active.version}",
                    active_version=active.version,
                )
            candidate = candidate_version(active, [make_example(e) for e in examples])
            attacks = change.attacks if change.attacks is not None else self._gate_attacks()
            comparison = await self.compare(active, candidate, labeled, change.score_mode, attacks)
            if change.dry_run:
                return GateOutcome(comparison, None)
            note = self._apply_gate(comparison, len(labeled), note, change.force)
        try:
            result = await self.store.add(examples, note, expected_version)
        except StaleVersionError as exc:
            raise ConflictError(str(exc), active_version=exc.active) from exc
        self.metrics.fewshot_version.set(result.version)
        await self._refit(result)
        return GateOutcome(None, result)

    def _apply_gate(self, comparison: dict[str, Any], cases: int, note: str, force: bool) -> str:
        attacks: dict[str, Any] = comparison.get("attacks") or {}
        rise = float(attacks.get("delta", 0.0))
        allowed = self.settings.fewshot_gate_attack_tolerance
        if rise > allowed:
            if not force:
                raise GateRefusedError(
                    f"the candidate raises the success rate of {attacks['cases']} attacks by "
                    f"{rise:.3f} ({attacks['active_success']:.3f} -> "
                    f"{attacks['candidate_success']:.3f}), more than the tolerance "
                    f"{allowed:.3f}; send force=true to add it anyway (recorded)",
                    comparison=comparison,
                )
            note = (note + " " if note else "") + (
                f"[forced past the attack gate: success rate {rise:+.3f}]"
            )
        tolerance = self.settings.fewshot_gate_tolerance or 0.0
        drop = -comparison["delta"]["mean_agreement"]
        if drop <= tolerance:
            return note
        if not force:
            raise GateRefusedError(
                f"the candidate lowers mean agreement on {cases} labeled cases by {drop:.3f}, "
                f"more than the tolerance {tolerance:.3f}; send force=true to add it anyway "
                "(recorded in the version note)",
                comparison=comparison,
            )
        return (note + " " if note else "") + (
            f"[forced past the agreement gate: mean agreement {-drop:+.3f} on {cases} cases]"
        )

    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        try:
            result = await self.store.retire(example_id, note, expected_version)
        except StaleVersionError as exc:
            raise ConflictError(str(exc), active_version=exc.active) from exc
        except ExampleNotFoundError as exc:
            raise NotFoundError(str(exc)) from exc
        self.metrics.fewshot_version.set(result.version)
        await self._refit(result)
        return result

    async def _refit(self, result: WriteResult) -> None:
        """Fit the taught head's model of a new version in the background (about a second), so
        its first request does not wait and the write's answer does not either. Only while the
        version is still the active one (a burst of adds fits the last); any version without a
        model gets one fitted on first use anyway."""
        if not result.created:
            return

        async def fit() -> None:
            try:
                version = await self.store.active()
                if version.version == result.version:
                    await self.scoring.heads.taught.head_version(version)
            except Exception as exc:  # the embedder down, say: the head retries on first use
                log.warning("taught model of version %d not fitted now: %r", result.version, exc)

        task = asyncio.ensure_future(fit())
        self._fits.add(task)
        task.add_done_callback(self._fits.discard)

    def gate_cases(self, packaged: bool = False) -> list[LabeledCase]:
        """The configured gate cases (``EQS_REWARD_FEWSHOT_GATE_CASES``); none configured:
        none, or with ``packaged`` the packaged validation cases (``dev.jsonl``, never fit on),
        which the console's preview shows."""
        path = self.settings.fewshot_gate_cases
        if path is None and packaged:
            path = judge_cases_dir() / "dev.jsonl"
        return [] if path is None else [LabeledCase.model_validate(r) for r in read_jsonl(path)]

    def _gate_attacks(self) -> list[AttackCase]:
        path = self.settings.fewshot_gate_attacks
        return [] if path is None else [AttackCase.model_validate(r) for r in read_jsonl(path)]

    async def attack_success(
        self,
        version: BankVersion,
        attacks: list[AttackCase],
        mode: ScoreMode,
        thresholds: dict[str, float] | None,
    ) -> float:
        """The share of attacks the judge passes under ``version`` (every dimension at or above
        its pass threshold; refused attacks never pass)."""
        request = ScoreRequest.model_validate(
            {
                "items": [
                    {"context": a.context.model_dump(mode="json"), "suggestions": [a.suggestion]}
                    for a in attacks
                ],
                "options": {"k": 1, "score_mode": mode, "on_failure": "null"},
            }
        )
        response = await self.scoring.score(request, bank_version=version)
        levels = thresholds or dict.fromkeys(DIMENSIONS, 0.5)
        passed = sum(
            1
            for result in response.results
            if (s := result.suggestions[0]).status == "ok"
            and all((s.dimension(d) or 0.0) >= levels[d] for d in DIMENSIONS)
        )
        return passed / len(attacks) if attacks else 0.0

    # -- scoring labeled cases ------------------------------------------------------------------
    async def score_cases(
        self, version: BankVersion, cases: list[LabeledCase], mode: ScoreMode
    ) -> list[CaseResult]:
        """The judge's scores for labeled cases under ``version`` (one batch, no size limit)."""
        request = ScoreRequest.model_validate(
            {
                "items": [
                    {
                        "id": str(i),
                        "context": c.context.model_dump(mode="json"),
                        "suggestions": [c.suggestion],
                    }
                    for i, c in enumerate(cases)
                ],
                "options": {"k": 1, "score_mode": mode, "on_failure": "null"},
            }
        )
        response = await self.scoring.score(request, bank_version=version)
        return [
            CaseResult.scored(
                case.id or str(i),
                case.context.model_dump(),
                case.suggestion,
                case.labels.model_dump(),
                result.suggestions[0],
            )
            for i, (case, result) in enumerate(zip(cases, response.results, strict=True))
        ]

    def _require_judged(self, results: list[CaseResult], what: str) -> None:
        refused = [r for r in results if r.failure in GUARD_REASONS]
        if refused:
            # The caller's cases, not the judge: they cannot measure a judge they never reach.
            examples = "; ".join(f"{r.id}: {r.failure}" for r in refused[:5])
            raise InvalidRequestError(
                f"cases: {len(refused)} of {len(results)} labeled cases are refused before the "
                f"judge by the guard ({examples}); fix or drop them",
                refused=len(refused),
            )
        judged = sum(1 for r in results if r.scores is not None)
        needed = self.settings.fewshot_gate_min_judged
        if judged >= needed * len(results):
            return
        reasons: dict[str, int] = {}
        for r in results:
            if r.scores is None:
                reasons[r.failure or "failed"] = reasons.get(r.failure or "failed", 0) + 1
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        raise GateIncompleteError(
            f"{what}: the judge scored only {judged} of {len(results)} labeled cases "
            f"({why}); at least {needed:.0%} are needed to compare, so nothing was decided. "
            "Check GET /ready and the judge, then retry",
            judged=judged,
            cases=len(results),
            failures=reasons,
            headers={"Retry-After": "30"},
        )

    async def compare(
        self,
        active: BankVersion,
        candidate: BankVersion,
        cases: list[LabeledCase],
        mode: ScoreMode,
        attacks: list[AttackCase] | None = None,
    ) -> dict[str, Any]:
        """Agreement, kappa and AUC per dimension for both versions, their change and a verdict;
        with ``attacks``, the share of them each version's judge passes."""
        stored = await self.store.get_calibration(active.version)
        thresholds = (stored or {}).get("thresholds")
        scored_before = await self.score_cases(active, cases, mode)
        self._require_judged(scored_before, f"active version {active.version}")
        scored_after = await self.score_cases(candidate, cases, mode)
        self._require_judged(scored_after, "the candidate")
        before = evaluate(scored_before, thresholds)
        after = evaluate(scored_after, thresholds)
        delta = {
            d: {
                k: _delta(before["dimensions"][d][k], after["dimensions"][d][k])
                for k in ("agreement", "auc", "kappa")
            }
            for d in DIMENSIONS
        }
        change = _delta(before["mean_agreement"], after["mean_agreement"]) or 0.0
        auc_change = _delta(before["reward"]["auc"], after["reward"]["auc"]) or 0.0
        verdict = (
            "better"
            if change > 1e-9 or (abs(change) <= 1e-9 and auc_change > 1e-9)
            else ("worse" if change < -1e-9 or auc_change < -1e-9 else "same")
        )
        attack_report = None
        if attacks:
            before_rate = await self.attack_success(active, attacks, mode, thresholds)
            after_rate = await self.attack_success(candidate, attacks, mode, thresholds)
            attack_report = {
                "cases": len(attacks),
                "active_success": before_rate,
                "candidate_success": after_rate,
                "delta": after_rate - before_rate,
            }
        comparison: dict[str, Any] = json_safe(
            {
                "cases": len(cases),
                "attacks": attack_report,
                "score_mode": mode,
                "active": {"version": active.version, **_headline(before)},
                "candidate": {
                    "version": candidate.version,
                    "examples": len(candidate.examples),
                    **_headline(after),
                },
                "delta": {"mean_agreement": change, "reward_auc": auc_change, "dimensions": delta},
                "verdict": verdict,
            }
        )
        return comparison

    async def calibrate(self, version: int | None, cases: list[LabeledCase]) -> dict[str, Any]:
        """Fit per-dimension pass thresholds on soft scores and store them with the version."""
        bank_version = await self.read(version)
        scored = await self.score_cases(bank_version, cases, "soft")
        self._require_judged(scored, f"calibrating version {bank_version.version}")
        results = [c for c in scored if c.scores]
        thresholds = {}
        for dimension in DIMENSIONS:
            labels = [c.labels[dimension] for c in results]
            scores = [c.scores[dimension] for c in results if c.scores]
            thresholds[dimension] = fit_threshold(labels, scores)
        before = evaluate(results)
        after = evaluate(results, thresholds)
        fitted: dict[str, Any] = json_safe(
            {
                "version": bank_version.version,
                "thresholds": thresholds,
                "cases": len(cases),
                "judged": len(results),
                "fitted_at": datetime.now(UTC).isoformat(),
                "agreement_at_0_5": {d: before["dimensions"][d]["agreement"] for d in DIMENSIONS},
                "agreement_fitted": {d: after["dimensions"][d]["agreement"] for d in DIMENSIONS},
            }
        )
        try:
            await self.store.set_calibration(bank_version.version, fitted)
        except VersionNotFoundError as exc:  # pragma: no cover - read above
            raise NotFoundError(str(exc)) from exc
        return {**fitted, "fitted": True}
