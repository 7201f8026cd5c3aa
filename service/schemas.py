"""Request and response models of the HTTP contract (``../shared/api-contract.md``).

Size limits that depend on settings (items, suggestions, characters) are enforced in
``service.scoring.check_limits`` so they answer 413 with the limit named; shape and type errors
are pydantic's and answer 422.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Intent = Literal["product_recommendation", "product_qa", "platform_qa", "small_talk"]
ScoreMode = Literal["binary", "soft"]
OnFailure = Literal["null", "zero"]
SuggestionStatus = Literal["ok", "failed", "rejected"]
ResultStatus = Literal["ok", "partial", "failed"]


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str


class Context(BaseModel):
    """The shopper's situation a suggestion is judged in."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="the shopper's latest message")
    history: list[Turn] = Field(default_factory=list)
    profile: str | None = None
    intent: Intent | None = None


class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="echoed back")
    context: Context
    suggestions: list[str] | None = None
    completion: str | None = Field(
        default=None, description='the policy\'s raw text, e.g. {"options": [...]}'
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ScoreItem:
        if (self.suggestions is None) == (self.completion is None):
            raise ValueError("each item needs exactly one of 'suggestions' or 'completion'")
        return self


class ScoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(default=3, ge=1, description="expected suggestions per item; null: any")
    score_mode: ScoreMode = "binary"
    fewshot_version: int | None = Field(default=None, ge=1, description="null: active version")
    on_failure: OnFailure = "null"
    cache: bool = Field(
        default=True, description="false: ask the judge again (repeat runs measure its spread)"
    )


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ScoreItem] = Field(min_length=1)
    options: ScoreOptions = Field(default_factory=ScoreOptions)


class SuggestionScore(BaseModel):
    text: str
    status: SuggestionStatus
    cached: bool = False
    answerability: float | None = None
    factuality: float | None = None
    information_gain: float | None = None
    reward: float | None = None
    reason: str | None = None


class ItemResult(BaseModel):
    id: str | None = None
    status: ResultStatus
    format_reward: float
    format_problem: str | None = None
    reward: float | None
    disagreement: float | None
    suggestions: list[SuggestionScore]


class ScoreMeta(BaseModel):
    judge_model: str
    prompt_version: str
    fewshot_version: int
    score_mode: ScoreMode


class ScoreResponse(BaseModel):
    results: list[ItemResult]
    meta: ScoreMeta


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorBody(BaseModel):
    """The one error envelope of every non-2xx answer."""

    error: ErrorDetail
