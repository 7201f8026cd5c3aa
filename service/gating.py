"""Gating a few-shot change by measured agreement: score labeled cases with the active version
and with a candidate (the active examples plus the new ones, never stored), and compare.

Also fits the per-dimension pass thresholds ("calibration") of a version on labeled cases.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.evaluation import DIMENSIONS, CaseResult, evaluate, fit_threshold, json_safe
from service.fewshot import BankVersion, Example, Labels
from service.schemas import Context, ScoreRequest
from service.scoring import Scorer


class LabeledCase(BaseModel):
    """A case people labeled (the format of judge_cases/dev.jsonl)."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    context: Context
    suggestion: str = Field(min_length=1, max_length=1000)
    labels: Labels


def candidate_version(active: BankVersion, new: list[Example]) -> BankVersion:
    """The version an add would create, for scoring only: tagged so its scores and prompt
    prefix never mix with a stored version's."""
    present = {e.id for e in active.examples}
    examples = active.examples + tuple(e for e in new if e.id not in present)
    digest = hashlib.sha256("".join(e.id for e in examples).encode()).hexdigest()[:12]
    return BankVersion(
        active.version + 1, examples, datetime.now(UTC), "candidate", tag=f"-candidate-{digest}"
    )


async def score_cases(
    scorer: Scorer, version: BankVersion, cases: list[LabeledCase], mode: Literal["binary", "soft"]
) -> list[CaseResult]:
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
    response = await scorer.score(request, bank_version=version)
    out = []
    for i, (case, result) in enumerate(zip(cases, response.results, strict=True)):
        suggestion = result.suggestions[0]
        scores = None
        if suggestion.status == "ok":
            scores = {d: float(getattr(suggestion, d)) for d in DIMENSIONS}
        out.append(
            CaseResult(
                id=case.id or str(i),
                context=case.context.model_dump(),
                suggestion=case.suggestion,
                labels=case.labels.model_dump(),
                scores=scores,
            )
        )
    return out


def json_safe_dict(value: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = json_safe(value)
    return cleaned


def headline(report: dict[str, Any]) -> dict[str, Any]:
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
    }


def _delta(a: float, b: float) -> float | None:
    return None if math.isnan(a) or math.isnan(b) else b - a


async def compare(
    scorer: Scorer,
    active: BankVersion,
    candidate: BankVersion,
    cases: list[LabeledCase],
    mode: Literal["binary", "soft"],
    thresholds: dict[str, float] | None,
) -> dict[str, Any]:
    before = evaluate(await score_cases(scorer, active, cases, mode), thresholds)
    after = evaluate(await score_cases(scorer, candidate, cases, mode), thresholds)
    delta = {
        d: {
            k: _delta(before["dimensions"][d][k], after["dimensions"][d][k])
            for k in ("agreement", "auc", "kappa")
        }
        for d in DIMENSIONS
    }
    change = (_delta(before["mean_agreement"], after["mean_agreement"])) or 0.0
    auc_change = _delta(before["reward"]["auc"], after["reward"]["auc"]) or 0.0
    verdict = (
        "better"
        if change > 1e-9 or (abs(change) <= 1e-9 and auc_change > 1e-9)
        else ("worse" if change < -1e-9 or auc_change < -1e-9 else "same")
    )
    return json_safe_dict(
        {
            "cases": len(cases),
            "score_mode": mode,
            "active": {"version": active.version, **headline(before)},
            "candidate": {
                "version": candidate.version,
                "examples": len(candidate.examples),
                **headline(after),
            },
            "delta": {"mean_agreement": change, "reward_auc": auc_change, "dimensions": delta},
            "verdict": verdict,
        }
    )


async def calibrate(
    scorer: Scorer, version: BankVersion, cases: list[LabeledCase]
) -> dict[str, Any]:
    """Per-dimension pass thresholds that agree best with the labels, from soft scores."""
    results = [c for c in await score_cases(scorer, version, cases, "soft") if c.scores]
    thresholds = {}
    for dimension in DIMENSIONS:
        labels = [c.labels[dimension] for c in results]
        scores = [c.scores[dimension] for c in results if c.scores]
        thresholds[dimension] = fit_threshold(labels, scores) if scores else 0.5
    before = evaluate(results)
    after = evaluate(results, thresholds)
    return json_safe_dict(
        {
            "version": version.version,
            "thresholds": thresholds,
            "cases": len(cases),
            "fitted_at": datetime.now(UTC).isoformat(),
            "agreement_at_0_5": {d: before["dimensions"][d]["agreement"] for d in DIMENSIONS},
            "agreement_fitted": {d: after["dimensions"][d]["agreement"] for d in DIMENSIONS},
        }
    )
