"""Request models of the HTTP contract (``../shared/api-contract.md``).

Shape and type errors are pydantic's and answer 422 naming the field. Size limits that depend on
settings (items, suggestions, characters) are the HTTP layer's (``routes/score.py``) and answer
413 naming the limit. Responses are the dependency-free dataclasses of ``eqs_reward.types``.
Text a policy wrote (suggestions, completions) is taken as it comes: what cannot be judged is
refused per suggestion, never by failing the whole batch.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from eqs_reward.judge.cases import Context, ExampleIn, LabeledCase, Labels, Text
from eqs_reward.server.settings import MAX_INT64
from eqs_reward.types import OnFailure, ScoreMode

__all__ = [
    "AddExamples",
    "AttackCase",
    "Calibrate",
    "ErrorBody",
    "ErrorDetail",
    "GetRewardQuery",
    "GetRewardRequest",
    "GetRewardResponse",
    "LabelCase",
    "PublishCases",
    "RetireExample",
    "ScoreItem",
    "ScoreOptions",
    "ScoreRequest",
    "SlimeQuery",
    "TrainerQuery",
]

#: slime's route answers within this, and a failed sample waits this long for its siblings:
#: both well under slime's own timeout, so slime never retries a request still being worked on.
SLIME_DEADLINE_S = 25.0
SLIME_GROUP_WAIT_S = 20.0


class ScoreItem(BaseModel):
    """One suggestion set to score, in a context."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "oneOf": [{"required": ["suggestions"]}, {"required": ["completion"]}],
            "description": "exactly one of 'suggestions' (a list) or 'completion' (raw text)",
        },
    )

    id: Text | None = Field(default=None, max_length=200, description="echoed back")
    context: Context
    # Absent, not null: the schema says so (SkipJsonSchema), and null is refused like any
    # other wrong type.
    suggestions: list[str] | SkipJsonSchema[None] = None
    completion: str | SkipJsonSchema[None] = Field(
        default=None, description='the policy\'s raw text, e.g. {"options": [...]}'
    )

    @field_validator("suggestions", "completion", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("leave it out rather than sending null")
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ScoreItem:
        if (self.suggestions is None) == (self.completion is None):
            raise ValueError("each item needs exactly one of 'suggestions' or 'completion'")
        return self


class ScoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    k: int | None = Field(
        default=3, ge=1, le=1000, description="expected suggestions per item; null: any"
    )
    score_mode: ScoreMode = "binary"
    fewshot_version: int | None = Field(
        default=None, ge=1, le=MAX_INT64, description="null: the active version"
    )
    on_failure: OnFailure = "null"
    cache: bool = Field(
        default=True,
        description="false: read and write neither cache tier and share no other caller's "
        "in-flight judge call: ask the judge again (repeat runs measure its spread)",
    )
    group_size: int | None = Field(
        default=None,
        ge=2,
        le=1024,
        description="for trainers that send one sample per request: the samples per context in "
        "a group (GRPO's G); a failed item then reports its group's mean reward in 'group'",
    )
    deadline_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="the caller's own deadline (under the server's): the answer comes within "
        "it, with the samples not scored by then failed (reason 'deadline'); judge calls another "
        "request shares, or whose result will fill the cache, finish; a cache: false call stops",
    )
    group_wait_s: float = Field(
        default=30.0,
        ge=0,
        le=300,
        description="with group_size: how long a failed item may wait for its siblings' rewards",
    )
    recipe: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the recipe combining the reward heads (GET /v1/recipes); null: the "
        "server's default (QualEQS)",
    )
    end_tokens: list[Text] = Field(
        default_factory=list,
        max_length=16,
        description="end or stop tokens of the policy's chat template to ignore at the end of a "
        "completion, beyond the common families' (ChatML, Llama 3, Mistral, Gemma, ...)",
    )


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[ScoreItem] = Field(min_length=1)
    options: ScoreOptions = Field(default_factory=ScoreOptions)


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorBody(BaseModel):
    """The one error envelope of every non-2xx answer."""

    error: ErrorDetail


# -- OpenRLHF --------------------------------------------------------------------------------


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward body: ``query`` is prompt + response, decoded by the trainer
    (with special tokens kept); ``labels`` carry the shopper's query or a JSON context."""

    model_config = ConfigDict(extra="allow", strict=True)

    query: list[str] = Field(min_length=1, description="prompt + response texts")
    prompts: list[str] | None = None
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _same_lengths(self) -> GetRewardRequest:
        for name in ("prompts", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.query):
                raise ValueError(f"'{name}' has {len(value)} entries for {len(self.query)} queries")
        return self


class TrainerQuery(BaseModel):
    """The query string of the routes that speak a trainer's own protocol (``/get_reward``,
    ``/slime``): what such a trainer pins through the URL it is given."""

    fewshot_version: Annotated[int, Field(ge=1, le=MAX_INT64)] | SkipJsonSchema[None] = Field(
        default=None, description="pin the few-shot version"
    )
    recipe: Annotated[str, Field(min_length=1, max_length=64)] | SkipJsonSchema[None] = Field(
        default=None,
        description="pin the recipe combining the reward heads (GET /v1/recipes); default: the "
        "server's",
    )
    group_size: Annotated[int, Field(ge=2, le=1024)] | SkipJsonSchema[None] = Field(
        default=None,
        description="the trainer's samples per prompt (OpenRLHF's --rollout.n_samples_per_prompt, "
        "slime's --n-samples-per-prompt): a failed sample then gets the mean reward of its "
        "prompt's other samples, which the service remembers",
    )
    deadline_s: Annotated[float, Field(gt=0, le=3600)] | SkipJsonSchema[None] = Field(
        default=None, description="the caller's deadline: samples not scored by then are failed"
    )


class GetRewardQuery(TrainerQuery):
    """``/get_reward``'s query string: the pins, and the policy's own end tokens."""

    end_tokens: Annotated[str, Field(max_length=400)] | SkipJsonSchema[None] = Field(
        default=None,
        description="the policy's own end or stop tokens, comma-separated, if its chat "
        "template's are not among the common ones",
    )


class SlimeQuery(TrainerQuery):
    """``/slime``'s query string: the pins, its deadline under the route's own."""

    deadline_s: Annotated[float, Field(gt=0, le=SLIME_DEADLINE_S)] | SkipJsonSchema[None] = Field(
        default=None, description=f"a deadline under the route's own {SLIME_DEADLINE_S:g} s"
    )


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, Any]


# -- few-shot bank ---------------------------------------------------------------------------


class AttackCase(BaseModel):
    """A suggestion written to win reward it does not deserve (``family`` is informative)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    family: Text | None = Field(default=None, max_length=100)
    context: Context
    suggestion: str = Field(min_length=1, max_length=2000)


class BankChange(BaseModel):
    """What every change to the bank states beside its examples: why (the version's note),
    the version it expects to replace, whether only to compare (dry run) and on what, and
    whether to override the gate."""

    model_config = ConfigDict(extra="forbid", strict=True)

    note: Text = Field(default="", max_length=500)
    expected_version: int | None = Field(default=None, ge=0, le=MAX_INT64)
    dry_run: bool = Field(
        default=False, description="evaluate the candidate version on labeled cases; store nothing"
    )
    cases: list[LabeledCase] | None = Field(
        default=None,
        max_length=2000,
        description="labeled cases for the comparison (else the configured gate cases)",
    )
    attacks: list[AttackCase] | None = Field(
        default=None,
        max_length=2000,
        description="attacks whose success rate the candidate must not raise (else the "
        "configured gate attacks)",
    )
    score_mode: ScoreMode = "soft"
    force: bool = Field(default=False, description="add even if the gate refuses (recorded)")


class AddExamples(BankChange):
    examples: list[ExampleIn] = Field(min_length=1)


class Calibrate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int | None = Field(
        default=None, ge=1, le=MAX_INT64, description="default: the active version"
    )
    cases: list[LabeledCase] = Field(min_length=2, max_length=2000)


class RetireExample(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    note: Text = Field(default="", max_length=500)
    expected_version: int | None = Field(default=None, ge=0, le=MAX_INT64)


class LabelCase(BaseModel):
    """An operator's labels for a case in the review queue, and why."""

    model_config = ConfigDict(extra="forbid", strict=True)

    labels: Labels
    rationale: Text = Field(default="", max_length=500)


class PublishCases(BankChange):
    """Labeled review cases into a new bank version, through the bank's gate."""

    ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="the cases to publish (each labeled, not yet published); default: every "
        "labeled case not yet published, newest first, up to the per-add limit",
    )
