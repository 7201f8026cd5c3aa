"""The versioned few-shot bank stores: SQLite (embedded default) and Redis (shared by replicas).

Semantics, identical in both:

- An example is immutable and identified by its content (``ExampleIn.content_id``).
- A version is an immutable, ordered set of examples. Version 1 is the seed, created on first
  start. The newest version is the active one.
- ``add`` appends the examples not already in the active version and creates version N+1; when
  every example is already there it creates nothing and says so (idempotent retries).
  ``expected_version`` makes it conditional: a stale one raises ``StaleVersionError`` (409).
- ``retire`` creates N+1 without one example.
- Writes are atomic and serialised (SQLite ``BEGIN IMMEDIATE``; a Redis Lua script), so
  concurrent writers never produce two versions with one number and never lose an add; an add
  that returned has been committed (SQLite ``synchronous=FULL``; Redis: run it with AOF).

Storage is linear in the number of changes: each example keeps one *membership* per stay in the
bank (the version that added it, the version that retired it, and its position), and a version
row holds only its time, note and size. Version N is the memberships with
``added_in <= N < retired_in``, in position order. (The 0.1 layout stored every version's full id
list, which grew quadratically; it is migrated on open.)
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from eqs_reward.judge.cases import Example, ExampleIn, make_example
from eqs_reward.server.bank._errors import (
    BankUnavailableError,
)
from eqs_reward.server.settings import Settings

__all__ = [
    "ACTIVE_TTL_S",
    "BankStore",
    "BankVersion",
    "FewshotBank",
    "VersionInfo",
    "WriteResult",
]


# How long a store trusts the active version it read. Writes through this process are seen at
# once; another process's or replica's write within this time. It keeps a store round trip
# (a thread hop for SQLite, a network one for Redis) off every scoring request.
ACTIVE_TTL_S = 1.0


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


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    created_at: datetime
    note: str
    example_count: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: the active version after it, and which ids it added or found present."""

    version: int
    created: bool
    added: list[str]
    duplicates: list[str]


class FewshotBank(Protocol):
    """What scoring needs from a bank: the active version and any pinned one."""

    async def active(self) -> BankVersion: ...
    async def get(self, version: int) -> BankVersion: ...


class BankStore(FewshotBank, Protocol):
    """The full bank interface."""

    async def init(self, seed: list[Example]) -> None: ...
    async def active(self) -> BankVersion: ...
    async def get(self, version: int) -> BankVersion: ...
    async def versions(self, limit: int, after: int = 0) -> tuple[list[VersionInfo], int]: ...
    async def add(
        self, examples: list[ExampleIn], note: str = "", expected_version: int | None = None
    ) -> WriteResult: ...
    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult: ...
    async def set_calibration(self, version: int, thresholds: dict[str, Any]) -> None: ...
    async def get_calibration(self, version: int) -> dict[str, Any] | None: ...
    async def set_taught(self, version: int, embedder: str, body: str) -> None: ...
    async def get_taught(self, version: int, embedder: str) -> str | None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


_EMPTY = (
    "the few-shot bank is empty: its store lost its data (a Redis without persistence that "
    "restarted?). Restore it with 'eqs-reward bank import' from an export, then restart"
)


def version_bytes(version: BankVersion) -> int:
    """What a version counts against the store's byte bound: its examples' JSON size."""
    return sum(len(example.model_dump_json()) for example in version.examples)


def _default_cache_bytes() -> int:
    default = Settings.model_fields["fewshot_version_cache_bytes"].default
    assert isinstance(default, int)
    return default


class _Store:
    """What both stores share: immutable versions kept once read, least recently used first out
    when their bytes pass ``cache_bytes`` (a count bound let 64 reads of a large bank take
    gigabytes), and the active version trusted for ``ACTIVE_TTL_S`` (or, while the store is
    unreachable, the last one read, so scoring goes on while bank reads and writes answer 503).
    A version larger than the whole bound is served but not kept (the active one is held apart).
    """

    log = logging.getLogger("eqs_reward.bank")

    def __init__(self, cache_bytes: int | None = None) -> None:
        self.cache_bytes = _default_cache_bytes() if cache_bytes is None else cache_bytes
        self._versions: OrderedDict[int, tuple[BankVersion, int]] = OrderedDict()
        self._cached_bytes = 0
        self._active: BankVersion | None = None
        self._active_until = 0.0

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)

    @classmethod
    def _unique(cls, examples: Iterable[ExampleIn]) -> list[Example]:
        """The examples as stored (ids from their content, one creation time), each once."""
        out: list[Example] = []
        seen: set[str] = set()
        now = cls._now()
        for data in examples:
            example = make_example(data, created_at=now)
            if example.id not in seen:
                seen.add(example.id)
                out.append(example)
        return out

    @property
    def cached_bytes(self) -> int:
        """The bytes the kept versions count against ``cache_bytes`` (never more than it)."""
        return self._cached_bytes

    async def _latest(self) -> int:
        raise NotImplementedError

    async def _read(self, version: int) -> BankVersion:
        raise NotImplementedError

    async def get(self, version: int) -> BankVersion:
        cached = self._versions.get(version)
        if cached is not None:
            self._versions.move_to_end(version)
            return cached[0]
        value = await self._read(version)
        size = version_bytes(value)
        if size <= self.cache_bytes and version not in self._versions:
            while self._versions and self._cached_bytes + size > self.cache_bytes:
                _, (_, dropped) = self._versions.popitem(last=False)
                self._cached_bytes -= dropped
            self._versions[version] = (value, size)
            self._cached_bytes += size
        return value

    async def active(self) -> BankVersion:
        if self._active is not None and time.monotonic() < self._active_until:
            return self._active
        try:
            latest = await self._latest()
        except BankUnavailableError as exc:
            if self._active is None:
                raise
            self.log.warning(
                "few-shot store unavailable (%s); using version %d", exc, self._active.version
            )
            return self._active
        if latest == 0:
            raise BankUnavailableError(_EMPTY)
        self._active = await self.get(latest)
        self._active_until = time.monotonic() + ACTIVE_TTL_S
        return self._active

    def _wrote(self) -> None:
        self._active_until = 0.0
