"""The few-shot bank: labeled judge cases shown to the judge before the case it grades.

Every bank state is an immutable, numbered version. This module holds the example model, the
seed loader (``fewshot_bank/*.jsonl``, version 1) and the read interface the scorer uses
(``FewshotBank``); the stores are in ``service.bank``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.rewards import DIMENSIONS, normalise_text
from service.schemas import Context

Source = Literal["seed", "online_bad_case", "annotated_positive"]


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answerability: Literal[0, 1]
    factuality: Literal[0, 1]
    information_gain: Literal[0, 1]


class ExampleIn(BaseModel):
    """An example as an operator submits it."""

    model_config = ConfigDict(extra="forbid")

    context: Context
    suggestion: str = Field(min_length=1, max_length=1000)
    labels: Labels
    rationale: str = Field(default="", max_length=500)
    source: Source = "online_bad_case"

    @field_validator("suggestion")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("suggestion must not be blank")
        return value

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
    id: str
    created_at: datetime


def make_example(data: ExampleIn, created_at: datetime | None = None) -> Example:
    return Example(
        **data.model_dump(include=set(ExampleIn.model_fields)),
        id=data.content_id(),
        created_at=created_at or datetime.now(UTC),
    )


@dataclass(frozen=True, slots=True)
class BankVersion:
    """One immutable state of the bank."""

    version: int
    examples: tuple[Example, ...]
    created_at: datetime
    note: str = ""
    tag: str = ""  # set on unsaved candidate versions (dry runs), so they never share a key

    @property
    def cache_id(self) -> str:
        """What cache keys and prompt prefixes are keyed by."""
        return f"{self.version}{self.tag}"


class VersionNotFoundError(LookupError):
    """The requested few-shot version does not exist."""


class FewshotBank(Protocol):
    """What the scorer needs from a bank: the active version and any pinned one."""

    async def active(self) -> BankVersion: ...

    async def get(self, version: int) -> BankVersion: ...

    async def ping(self) -> None: ...


def load_seed_examples(folder: Path) -> list[Example]:
    """Read every ``*.jsonl`` in ``folder`` (sorted by name) as seed examples, de-duplicated."""
    examples: list[Example] = []
    seen: set[str] = set()
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    for path in sorted(folder.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                raw.setdefault("source", "seed")
                example = make_example(ExampleIn.model_validate(raw), created_at=epoch)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: bad few-shot example: {exc}") from exc
            if example.id not in seen:
                seen.add(example.id)
                examples.append(example)
    return examples


def dimension_failures(examples: tuple[Example, ...] | list[Example]) -> dict[str, int]:
    """How many examples fail each dimension (a bank must show the judge every kind of failure)."""
    return {d: sum(1 for e in examples if getattr(e.labels, d) == 0) for d in DIMENSIONS}
