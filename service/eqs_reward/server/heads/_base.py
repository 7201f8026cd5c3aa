"""What every computed head (exclusivity, retrieval, clicks) offers the scoring service."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from eqs_reward.judge.cases import Context

__all__ = ["ComputedHead", "HeadScores", "HeadUnavailableError", "Reread"]

T = TypeVar("T")

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


class Reread(Generic[T]):
    """What a head serves that another process may change (a fitted click model, a loaded
    catalog): kept, and read again while there is none or once it is ``PERIOD_S`` old, so a
    change shows without a restart and without a read per request."""

    PERIOD_S = 5.0

    def __init__(self, missing: type[HeadUnavailableError], fix: str) -> None:
        self.value: T | None = None
        self.missing, self.fix = missing, fix
        self._read_at = -math.inf

    def current(self) -> T:
        """The value read; if there is none, ``missing`` saying how to provide one."""
        if self.value is None:
            raise self.missing(self.fix)
        return self.value

    def due(self) -> bool:
        return self.value is None or time.monotonic() - self._read_at > self.PERIOD_S

    def set(self, value: T | None) -> None:
        self.value, self._read_at = value, time.monotonic()

    def expire(self) -> None:
        """Read again on the next use (as once ``PERIOD_S`` has passed)."""
        self._read_at = -math.inf
