"""The names and shapes every part of eqs-reward shares, with no dependency beyond the standard
library: the judge's dimensions, score modes, failure options and policies, statuses, and the
``/v1/score`` response (built by the server, parsed by the client; one definition for both).

The response classes are plain frozen dataclasses so the trainer-side client needs neither
pydantic nor FastAPI. ``to_dict``/``from_dict`` are written out by hand: they run for every
suggestion of every response, and ``dataclasses.asdict`` deep-copies recursively.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from eqs_reward._jsonl import record

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


def _signals(raw: Any) -> dict[str, float | None] | None:
    return None if raw is None else {str(k): _float(v) for k, v in raw.items()}


class _Record:
    """A plain record: its JSON object is its fields (``to_dict``)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return record(self)


@dataclass(frozen=True, slots=True)
class SuggestionScore(_Record):
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
    #: Every signal of the recipe's heads, ``{"<head>.<signal>": value}`` (null where a head
    #: failed; empty for a refused suggestion). None only from a server older than recipes.
    signals: dict[str, float | None] | None = None

    def dimension(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value

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
            signals=_signals(raw.get("signals")),
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
    #: The recipe's set-level signals (``{"exclusivity.diversity": 0.8}``); empty when its heads
    #: give none, None only from a server older than recipes.
    set_signals: dict[str, float | None] | None = None

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

    def signal_means(self, names: Sequence[str] | None = None) -> dict[str, float | None]:
        """Every signal of the result: suggestion signals averaged over the suggestions that have
        them, set signals as they are (None where there is none). ``names`` (the recipe's, from
        ``ScoreMeta.recipe``) fixes the keys, so every result of a run logs the same ones."""
        if names is None:
            found = (n for s in self.suggestions for n in (s.signals or {}))
            names = [*dict.fromkeys(found), *(self.set_signals or {})]
        out: dict[str, float | None] = {}
        for name in names:
            if self.set_signals and name in self.set_signals:
                out[name] = self.set_signals[name]
                continue
            values = [v for s in self.suggestions if (v := (s.signals or {}).get(name)) is not None]
            out[name] = sum(values) / len(values) if values else None
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "format_reward": self.format_reward,
            "format_problem": self.format_problem,
            "reward": self.reward,
            "disagreement": self.disagreement,
            "suggestions": [s.to_dict() for s in self.suggestions],
            "set_signals": self.set_signals,
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
            set_signals=_signals(raw.get("set_signals")),
        )


@dataclass(frozen=True, slots=True)
class ScoreMeta(_Record):
    """What the scores were computed with: pin these to reproduce them."""

    judge_model: str
    prompt_version: str
    fewshot_version: int
    score_mode: ScoreMode
    #: The recipe the rewards were combined with, ``{"id": "qualeqs", "version": 1}`` (None only
    #: from a server older than recipes).
    recipe: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ScoreMeta:
        return cls(
            judge_model=str(raw["judge_model"]),
            prompt_version=str(raw["prompt_version"]),
            fewshot_version=int(raw["fewshot_version"]),
            score_mode=raw["score_mode"],
            recipe=raw.get("recipe"),
        )


@dataclass(frozen=True, slots=True)
class ScoreResponse:
    """The body of a ``POST /v1/score`` answer: one result per item, in request order."""

    results: tuple[ItemResult, ...]
    meta: ScoreMeta

    @property
    def signal_names(self) -> list[str]:
        """The recipe's suggestion and set signals, in order (what every result can report)."""
        recipe = self.meta.recipe or {}
        return [*recipe.get("signals", ()), *recipe.get("set_signals", ())]

    def signal_logs(self) -> dict[str, list[float | None]]:
        """One column per signal of the recipe (per result: see ``ItemResult.signal_means``),
        the same columns for every result: what the trainer adapters log."""
        names = self.signal_names
        means = [r.signal_means(names) for r in self.results]
        return {name: [m[name] for m in means] for name in names}

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "meta": self.meta.to_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ScoreResponse:
        return cls(
            results=tuple(ItemResult.from_dict(r) for r in raw["results"]),
            meta=ScoreMeta.from_dict(raw["meta"]),
        )
