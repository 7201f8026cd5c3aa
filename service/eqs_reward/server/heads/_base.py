"""What every computed head (exclusivity, retrieval, clicks) offers the scoring service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from eqs_reward.judge.cases import Context

__all__ = ["ComputedHead", "HeadScores", "HeadUnavailableError"]

#: Per item: per-suggestion signals and set signals.
HeadScores = list[tuple[list[dict[str, float]], dict[str, float]]]


class HeadUnavailableError(RuntimeError):
    """The head has nothing to work from (no catalog loaded, no click model fitted): a
    configuration to fix, answered 503, not a failure to flag on every suggestion."""


class ComputedHead(Protocol):
    """A head computed here rather than asked of the judge: all items of a request at once."""

    name: str

    async def head_version(self) -> str:
        """Its version now (what it computes with); ``HeadUnavailableError`` if it cannot run."""
        ...

    async def score(self, items: Sequence[tuple[Context, Sequence[str]]]) -> HeadScores: ...
