"""Which scored suggestions are worth an operator's look: a pure function of a request, its
response and the rules (``Settings.review_*``), so the request path only pays for a loop."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eqs_reward.server.review._item import ReviewItem
from eqs_reward.server.schemas import ScoreRequest
from eqs_reward.server.settings import Settings
from eqs_reward.types import DIMENSIONS, ItemResult, ScoreResponse, SuggestionScore

__all__ = ["ReviewRules", "select"]


@dataclass(frozen=True, slots=True)
class ReviewRules:
    """The sampling rules (see the ``review_*`` settings)."""

    failure_rate: float
    refusal_rate: float
    uniform_rate: float
    disagreement_min: float
    near_margin: float
    taught_gap: float

    @classmethod
    def of(cls, settings: Settings) -> ReviewRules:
        return cls(
            settings.review_failure_rate,
            settings.review_refusal_rate,
            settings.review_uniform_rate,
            settings.review_disagreement_min,
            settings.review_near_margin,
            settings.review_taught_gap,
        )


def new_id() -> str:
    """Sortable by time (nanoseconds, zero-padded), unique (a random tail): the queue's cursor."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _reasons(
    result: ItemResult, suggestion: SuggestionScore, rules: ReviewRules, rng: random.Random
) -> Iterator[str]:
    signals = suggestion.signals or {}
    if suggestion.status == "failed" and rng.random() < rules.failure_rate:
        yield "judge_failed"
    if suggestion.status == "rejected" and rng.random() < rules.refusal_rate:
        yield f"refused:{suggestion.reason or 'rejected'}"
    if suggestion.status != "ok":
        return
    if result.disagreement is not None and result.disagreement >= rules.disagreement_min:
        yield "disagreement"
    judge = [signals.get(f"judge.{d}") for d in DIMENSIONS]
    if any(v is not None and 0.0 < v < 1.0 and abs(v - 0.5) <= rules.near_margin for v in judge):
        yield "near_threshold"
    taught = [signals.get(f"taught.{d}") for d in DIMENSIONS]
    if any(
        j is not None and t is not None and abs(j - t) >= rules.taught_gap
        for j, t in zip(judge, taught, strict=True)
    ):
        yield "judge_vs_taught"
    if rng.random() < rules.uniform_rate:
        yield "uniform"


def select(
    request: ScoreRequest, response: ScoreResponse, rules: ReviewRules, rng: random.Random
) -> list[ReviewItem]:
    """The request's suggestions worth a look, each with every reason it was picked for."""
    meta = response.meta
    recipe: dict[str, Any] = meta.recipe or {}
    picked: list[ReviewItem] = []
    now = datetime.now(UTC)
    for item, result in zip(request.items, response.results, strict=True):
        context: dict[str, Any] | None = None
        for suggestion in result.suggestions:
            reasons = list(_reasons(result, suggestion, rules, rng))
            if not reasons:
                continue
            if context is None:
                context = item.context.model_dump(mode="json", exclude_none=True)
            picked.append(
                ReviewItem(
                    id=new_id(),
                    created_at=now,
                    reasons=reasons,
                    context=context,
                    suggestion=suggestion.text,
                    status=suggestion.status,
                    failure=suggestion.reason,
                    reward=suggestion.reward,
                    dimensions={d: suggestion.dimension(d) for d in DIMENSIONS},
                    signals=dict(suggestion.signals or {}),
                    disagreement=result.disagreement,
                    recipe=recipe.get("id"),
                    recipe_version=recipe.get("version"),
                    fewshot_version=meta.fewshot_version,
                    score_mode=meta.score_mode,
                    judge_model=meta.judge_model,
                    prompt_version=meta.prompt_version,
                )
            )
    return picked
