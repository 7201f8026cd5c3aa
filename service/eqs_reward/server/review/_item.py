"""One case in the review queue, and what a page of the queue is filtered by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from eqs_reward.judge.cases import Labels

__all__ = ["ReviewItem", "ReviewQuery"]


class ReviewItem(BaseModel):
    """A scored suggestion sampled for review: what was scored and how (the context as the
    trainer sent it, the verdicts, every head's signals, the recipe and bank version), why it was
    picked, and, once an operator has looked, the labels and the bank version it went into.
    The suggestion and the context are policy and shopper text: untrusted wherever shown."""

    id: str
    created_at: datetime
    reasons: list[str]
    context: dict[str, Any]
    suggestion: str
    status: str
    failure: str | None = None
    reward: float | None = None
    dimensions: dict[str, float | None] = Field(default_factory=dict)
    signals: dict[str, float | None] = Field(default_factory=dict)
    disagreement: float | None = None
    recipe: str | None = None
    recipe_version: int | None = None
    fewshot_version: int
    score_mode: str
    judge_model: str
    prompt_version: str
    labels: Labels | None = None
    rationale: str = ""
    labeled_at: datetime | None = None
    published_in: int | None = None


@dataclass(frozen=True, slots=True)
class ReviewQuery:
    """A page's filters (each optional): a reason (``refused`` matches every guard reason),
    the recipe, the bank version, a time window, labeled or not."""

    reason: str | None = None
    recipe: str | None = None
    fewshot_version: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    labeled: bool | None = None
    published: bool | None = None

    def matches(self, item: ReviewItem) -> bool:
        reasons = {r.split(":", 1)[0] for r in item.reasons} | set(item.reasons)
        return (
            (self.reason is None or self.reason in reasons)
            and (self.recipe is None or item.recipe == self.recipe)
            and (self.fewshot_version is None or item.fewshot_version == self.fewshot_version)
            and (self.since is None or item.created_at >= self.since)
            and (self.until is None or item.created_at < self.until)
            and (self.labeled is None or (item.labels is not None) == self.labeled)
            and (self.published is None or (item.published_in is not None) == self.published)
        )
