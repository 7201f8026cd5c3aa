"""The names and shapes every part of eqs-reward shares, with no dependency beyond the standard
library: the judge's dimensions, score modes, failure options and policies, statuses, and the
``/v1/score`` response (built by the server, parsed by the client; one definition for both).

The response classes are plain frozen dataclasses so the trainer-side client needs neither
pydantic nor FastAPI. ``to_dict``/``from_dict`` are written out by hand: they run for every
suggestion of every response, and ``dataclasses.asdict`` deep-copies recursively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

__all__ = [
    "DIMENSIONS",
    "FAILURE_POLICIES",
    "Dimension",
    "FailurePolicy",
    "Intent",
    "ItemResult",
    "OnFailure",
    "ResultStatus",
    "ScoreMeta",
    "ScoreMode",
    "ScoreResponse",
    "SuggestionScore",
    "SuggestionStatus",
    "parse_failure_policy",
]

Dimension = Literal["answerability", "factuality", "information_gain"]
#: The three QualEQS criteria, in the order of the reward product and of every report.
DIMENSIONS: tuple[str, str, str] = ("answerability", "factuality", "information_gain")
assert get_args(Dimension) == DIMENSIONS

ScoreMode = Literal["binary", "soft"]
OnFailure = Literal["null", "zero"]
Intent = Literal["product_recommendation", "product_qa", "platform_qa", "small_talk"]
SuggestionStatus = Literal["ok", "failed", "rejected"]
ResultStatus = Literal["ok", "partial", "failed"]

#: What a trainer-side adapter gives a sample the service could not judge (see
#: ``eqs_reward.client`` for what each one does under group normalisation).
FailurePolicy = Literal["group_mean", "zero", "skip"]
FAILURE_POLICIES: tuple[str, ...] = get_args(FailurePolicy)


def parse_failure_policy(value: str, *, source: str = "failure policy") -> FailurePolicy:
    """The policy named by ``value``; a clear ``ValueError`` for anything else (never a silent
    fallback: a typo in a training run's environment must stop it, not change its rewards)."""
    cleaned = value.strip().lower()
    if cleaned not in FAILURE_POLICIES:
        raise ValueError(f"{source}={value!r}: use one of {', '.join(FAILURE_POLICIES)}")
    return cast(FailurePolicy, cleaned)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class SuggestionScore:
    """One suggestion's scores. Dimensions and reward are null when the judge failed (or 0 with
    ``on_failure: "zero"``); a ``rejected`` suggestion has reward 0 and a ``reason``."""

    text: str
    status: SuggestionStatus
    cached: bool = False
    answerability: float | None = None
    factuality: float | None = None
    information_gain: float | None = None
    reward: float | None = None
    reason: str | None = None

    def dimension(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "status": self.status,
            "cached": self.cached,
            "answerability": self.answerability,
            "factuality": self.factuality,
            "information_gain": self.information_gain,
            "reward": self.reward,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SuggestionScore:
        return cls(
            text=str(raw["text"]),
            status=raw["status"],
            cached=bool(raw.get("cached", False)),
            answerability=_float(raw.get("answerability")),
            factuality=_float(raw.get("factuality")),
            information_gain=_float(raw.get("information_gain")),
            reward=_float(raw.get("reward")),
            reason=raw.get("reason"),
        )


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One scored item (one suggestion set): format reward, set reward ``r_q`` and disagreement
    ``u_q`` (null when a suggestion failed and ``on_failure`` is ``"null"``)."""

    id: str | None
    status: ResultStatus
    format_reward: float
    format_problem: str | None
    reward: float | None
    disagreement: float | None
    suggestions: tuple[SuggestionScore, ...] = ()
    #: Only for a failed item of a request with ``options.group_size``: what the service knew of
    #: its group, ``{"mean": float | None, "seen": int, "judged": int}``; ``mean`` is the reward
    #: that makes it neutral (the mean of its judged siblings).
    group: dict[str, Any] | None = None

    @property
    def neutral_reward(self) -> float | None:
        """The reward to train on: the set reward, or for a failed item the mean of its group's
        judged samples as the service remembered them (None when it knows of none)."""
        if self.reward is not None:
            return self.reward
        return None if self.group is None else self.group.get("mean")

    def dimension_mean(self, dimension: str) -> float | None:
        """The mean of one dimension over the suggestions the judge scored (None if none)."""
        values = [v for s in self.suggestions if (v := s.dimension(dimension)) is not None]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "format_reward": self.format_reward,
            "format_problem": self.format_problem,
            "reward": self.reward,
            "disagreement": self.disagreement,
            "suggestions": [s.to_dict() for s in self.suggestions],
        }
        if self.group is not None:
            out["group"] = self.group
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ItemResult:
        return cls(
            id=raw.get("id"),
            status=raw["status"],
            format_reward=float(raw["format_reward"]),
            format_problem=raw.get("format_problem"),
            reward=_float(raw.get("reward")),
            disagreement=_float(raw.get("disagreement")),
            suggestions=tuple(SuggestionScore.from_dict(s) for s in raw["suggestions"]),
            group=raw.get("group"),
        )


@dataclass(frozen=True, slots=True)
class ScoreMeta:
    """What the scores were computed with: pin these to reproduce them."""

    judge_model: str
    prompt_version: str
    fewshot_version: int
    score_mode: ScoreMode

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge_model": self.judge_model,
            "prompt_version": self.prompt_version,
            "fewshot_version": self.fewshot_version,
            "score_mode": self.score_mode,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ScoreMeta:
        return cls(
            judge_model=str(raw["judge_model"]),
            prompt_version=str(raw["prompt_version"]),
            fewshot_version=int(raw["fewshot_version"]),
            score_mode=raw["score_mode"],
        )


@dataclass(frozen=True, slots=True)
class ScoreResponse:
    """The body of a ``POST /v1/score`` answer: one result per item, in request order."""

    results: tuple[ItemResult, ...]
    meta: ScoreMeta

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "meta": self.meta.to_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ScoreResponse:
        return cls(
            results=tuple(ItemResult.from_dict(r) for r in raw["results"]),
            meta=ScoreMeta.from_dict(raw["meta"]),
        )
