"""What the judge grades and learns from: the shopper's context, few-shot examples and labeled
cases, as validated models. The server's request schemas and the bank build on these.

Free text here comes from trainers, operators and policies. Validation refuses, with a 422 that
names the field, what would otherwise fail deep inside the service: a query with no visible
character, and lone UTF-16 surrogates (``"\\ud800"`` is valid JSON but not encodable text).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from eqs_reward._jsonl import iter_jsonl
from eqs_reward.rewards import normalise_text
from eqs_reward.types import DIMENSIONS, Intent

__all__ = [
    "Context",
    "Example",
    "ExampleIn",
    "LabeledCase",
    "Labels",
    "Text",
    "Turn",
    "dimension_failures",
    "has_lone_surrogate",
    "is_blank",
    "load_seed_examples",
    "make_example",
]

Source = Literal["seed", "online_bad_case", "annotated_positive"]


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a UTF-16 surrogate code point (it cannot be encoded as UTF-8)."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def is_blank(text: str) -> bool:
    """True when ``text`` has no visible character: only whitespace (any Unicode space, NBSP,
    ideographic space) and invisible format characters (zero-width space, joiners, bidi marks)."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cf", "Cc") for ch in text)


def _encodable(text: str) -> str:
    if has_lone_surrogate(text):
        raise ValueError("contains a lone UTF-16 surrogate (not valid Unicode text)")
    return text


def _visible(text: str) -> str:
    if is_blank(text):
        raise ValueError("must contain a visible character, not only whitespace")
    return text


#: Any free text that must be encodable; ``VisibleText`` must also show something.
Text = Annotated[str, AfterValidator(_encodable)]
VisibleText = Annotated[str, AfterValidator(_encodable), AfterValidator(_visible)]


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    content: Text


class Context(BaseModel):
    """The shopper's situation a suggestion is judged in."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: VisibleText = Field(min_length=1, description="the shopper's latest message")
    history: list[Turn] = Field(default_factory=list)
    profile: Text | None = None
    intent: Intent | None = None
    viewed_products: list[Annotated[Text, Field(min_length=1, max_length=200)]] | None = Field(
        default=None,
        max_length=50,
        description="ids or titles of products the shopper engaged with (for heads that ground "
        "suggestions in the catalog; the judges do not see them)",
    )

    def as_judged(self) -> Context:
        """The context as judged and keyed: whitespace folded in every free-text field. The
        judges do not read ``viewed_products``, so it is left out (their cache keys do not
        change with it); the catalog's heads read it from the request's context."""
        return Context.model_construct(
            query=normalise_text(self.query),
            history=[
                Turn.model_construct(role=t.role, content=normalise_text(t.content))
                for t in self.history
            ],
            profile=normalise_text(self.profile) if self.profile else None,
            intent=self.intent,
        )


def _exact_digit(value: object) -> object:
    # False == 0 and 1.0 == 1 in Python, so a plain Literal[0, 1] lets them through; a label
    # is the integer 0 or 1 and nothing that merely compares equal to one.
    if type(value) is not int:
        raise ValueError("must be the integer 0 or 1")
    return value


Digit = Annotated[Literal[0, 1], BeforeValidator(_exact_digit)]


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    answerability: Digit
    factuality: Digit
    information_gain: Digit


class ExampleIn(BaseModel):
    """An example as an operator submits it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    context: Context
    suggestion: VisibleText = Field(min_length=1, max_length=1000)
    labels: Labels
    rationale: Text = Field(default="", max_length=500)
    source: Source = "online_bad_case"

    def content_id(self) -> str:
        """Content-derived id: the same case (context, suggestion, labels) gets the same id."""
        payload = json.dumps(
            {
                "context": self.context.model_dump(mode="json"),
                "suggestion": normalise_text(self.suggestion),
                "labels": self.labels.model_dump(),
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return "ex-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


class Example(ExampleIn):
    """An example as the bank stores it: with its content id and when it was added."""

    id: str
    created_at: datetime


def make_example(data: ExampleIn, created_at: datetime | None = None) -> Example:
    return Example(
        **data.model_dump(include=set(ExampleIn.model_fields)),
        id=data.content_id(),
        created_at=created_at or datetime.now(UTC),
    )


class LabeledCase(BaseModel):
    """A case people labeled (the format of ``judge_cases/dev.jsonl``): for evaluation, the
    bank's agreement gate and calibration."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: str | None = Field(default=None, max_length=200)
    context: Context
    suggestion: VisibleText = Field(min_length=1, max_length=1000)
    labels: Labels


def load_seed_examples(folder: Path) -> list[Example]:
    """Every ``*.jsonl`` in ``folder`` (sorted by name) as seed examples, de-duplicated."""
    examples: list[Example] = []
    seen: set[str] = set()
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    for path in sorted(folder.glob("*.jsonl")):
        for number, raw in iter_jsonl(path):
            raw.setdefault("source", "seed")
            try:
                example = make_example(ExampleIn.model_validate(raw), created_at=epoch)
            except ValidationError as exc:
                raise ValueError(f"{path}:{number}: bad few-shot example: {exc}") from exc
            if example.id not in seen:
                seen.add(example.id)
                examples.append(example)
    return examples


def dimension_failures(examples: tuple[Example, ...] | list[Example]) -> dict[str, int]:
    """How many examples fail each dimension (a bank must show the judge every kind of failure)."""
    return {d: sum(1 for e in examples if getattr(e.labels, d) == 0) for d in DIMENSIONS}
