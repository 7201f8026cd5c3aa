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

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis.exceptions

from eqs_reward.judge.cases import Example, ExampleIn, make_example
from eqs_reward.server.settings import Settings

__all__ = [
    "ACTIVE_TTL_S",
    "BankStore",
    "BankUnavailableError",
    "BankVersion",
    "ExampleNotFoundError",
    "FewshotBank",
    "RedisBankStore",
    "SQLiteBankStore",
    "StaleVersionError",
    "VersionInfo",
    "VersionNotFoundError",
    "WriteResult",
]

log = logging.getLogger("eqs_reward.bank")
T = TypeVar("T")

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


class VersionNotFoundError(LookupError):
    """The requested few-shot version does not exist."""


class StaleVersionError(Exception):
    """``expected_version`` is not the active version any more (someone else wrote first)."""

    def __init__(self, expected: int, active: int) -> None:
        super().__init__(f"expected_version {expected} is stale: the active version is {active}")
        self.expected = expected
        self.active = active


class BankUnavailableError(RuntimeError):
    """The store cannot be reached, or has lost its data (503)."""


class ExampleNotFoundError(LookupError):
    """The example is not in the active version."""


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


def _now() -> datetime:
    return datetime.now(UTC)


def _unique(examples: Iterable[ExampleIn]) -> list[Example]:
    out: list[Example] = []
    seen: set[str] = set()
    now = _now()
    for data in examples:
        example = make_example(data, created_at=now)
        if example.id not in seen:
            seen.add(example.id)
            out.append(example)
    return out


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

    def __init__(self, cache_bytes: int | None = None) -> None:
        self.cache_bytes = _default_cache_bytes() if cache_bytes is None else cache_bytes
        self._versions: OrderedDict[int, tuple[BankVersion, int]] = OrderedDict()
        self._cached_bytes = 0
        self._active: BankVersion | None = None
        self._active_until = 0.0

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
            log.warning(
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


# --------------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calibrations (
    version INTEGER PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS taught_models (
    version INTEGER NOT NULL,
    embedder TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (version, embedder)
);
CREATE TABLE IF NOT EXISTS bank_versions (
    version INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    note TEXT NOT NULL,
    example_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    example_id TEXT NOT NULL REFERENCES examples(id),
    added_in INTEGER NOT NULL,
    retired_in INTEGER
);
CREATE INDEX IF NOT EXISTS memberships_active ON memberships (retired_in, example_id);
"""

_MEMBERS_OF = """
SELECT m.example_id, e.body FROM memberships m JOIN examples e ON e.id = m.example_id
WHERE m.added_in <= ?1 AND (m.retired_in IS NULL OR m.retired_in > ?1)
ORDER BY m.position
"""


class SQLiteBankStore(_Store):
    """The bank in one SQLite file (WAL, synchronous=FULL). Blocking calls run in a thread."""

    def __init__(self, path: Path, *, cache_bytes: int | None = None) -> None:
        super().__init__(cache_bytes)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._lock = threading.Lock()
        with self._lock:
            self._migrate_v1()
            self._create_schema()

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return fn(*args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._run, fn, *args)

    def _create_schema(self) -> None:
        # One statement at a time: executescript would COMMIT an open transaction first.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._conn.execute(statement)

    def _migrate_v1(self) -> None:
        """Rewrite a 0.1 bank (a full id list per version) as memberships, in one transaction."""
        conn = self._conn
        columns = {row[1] for row in conn.execute("PRAGMA table_info(versions)").fetchall()}
        if "example_ids" not in columns:
            return
        log.info("migrating the few-shot bank %s to linear storage", self.path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._create_schema()
            rows = conn.execute(
                "SELECT version, created_at, note, example_ids FROM versions ORDER BY version"
            ).fetchall()
            open_position: dict[str, int] = {}
            for version, created_at, note, ids_json in rows:
                ids = json.loads(ids_json)
                current = set(ids)
                for example_id in [i for i in open_position if i not in current]:
                    conn.execute(
                        "UPDATE memberships SET retired_in = ? WHERE position = ?",
                        (version, open_position.pop(example_id)),
                    )
                for example_id in ids:
                    if example_id not in open_position:
                        cursor = conn.execute(
                            "INSERT INTO memberships (example_id, added_in) VALUES (?, ?)",
                            (example_id, version),
                        )
                        open_position[example_id] = int(cursor.lastrowid or 0)
                conn.execute(
                    "INSERT INTO bank_versions (version, created_at, note, example_count) "
                    "VALUES (?, ?, ?, ?)",
                    (version, created_at, note, len(ids)),
                )
            conn.execute("DROP TABLE versions")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("VACUUM")

    # -- reads --------------------------------------------------------------------------------
    def _latest_sync(self) -> int:
        row = self._conn.execute("SELECT MAX(version) FROM bank_versions").fetchone()
        return int(row[0] or 0)

    async def _latest(self) -> int:
        return await self._call(self._latest_sync)

    def _read_sync(self, version: int) -> BankVersion:
        row = self._conn.execute(
            "SELECT created_at, note FROM bank_versions WHERE version = ?", (version,)
        ).fetchone()
        if row is None:
            raise VersionNotFoundError(f"few-shot version {version} does not exist")
        members = self._conn.execute(_MEMBERS_OF, (version,)).fetchall()
        examples = tuple(Example.model_validate_json(body) for _, body in members)
        return BankVersion(version, examples, datetime.fromisoformat(row[0]), row[1])

    async def _read(self, version: int) -> BankVersion:
        return await self._call(self._read_sync, version)

    async def versions(self, limit: int, after: int = 0) -> tuple[list[VersionInfo], int]:
        def read() -> tuple[list[VersionInfo], int]:
            rows = self._conn.execute(
                "SELECT version, created_at, note, example_count FROM bank_versions "
                "WHERE version > ? ORDER BY version LIMIT ?",
                (after, limit),
            ).fetchall()
            infos = [VersionInfo(v, datetime.fromisoformat(c), n, k) for v, c, n, k in rows]
            return infos, self._latest_sync()

        return await self._call(read)

    async def set_calibration(self, version: int, thresholds: dict[str, Any]) -> None:
        """Store (or replace) the pass thresholds fitted for a version."""
        await self.get(version)  # raises for an unknown version

        def write() -> None:
            self._conn.execute(
                "INSERT OR REPLACE INTO calibrations (version, body) VALUES (?, ?)",
                (version, json.dumps(thresholds)),
            )

        await self._call(write)

    async def get_calibration(self, version: int) -> dict[str, Any] | None:
        def read() -> Any:
            return self._conn.execute(
                "SELECT body FROM calibrations WHERE version = ?", (version,)
            ).fetchone()

        row = await self._call(read)
        return None if row is None else dict(json.loads(row[0]))

    async def set_taught(self, version: int, embedder: str, body: str) -> None:
        """Store (or replace) the taught head's model of a version (JSON, per embedder)."""

        def write() -> None:
            self._conn.execute(
                "INSERT OR REPLACE INTO taught_models (version, embedder, body) VALUES (?, ?, ?)",
                (version, embedder, body),
            )

        await self._call(write)

    async def get_taught(self, version: int, embedder: str) -> str | None:
        def read() -> Any:
            return self._conn.execute(
                "SELECT body FROM taught_models WHERE version = ? AND embedder = ?",
                (version, embedder),
            ).fetchone()

        row = await self._call(read)
        return None if row is None else str(row[0])

    async def ping(self) -> None:
        await self._call(lambda: self._conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._call(self._conn.close)

    # -- writes -------------------------------------------------------------------------------
    def _begin(self, expected_version: int | None) -> int:
        self._conn.execute("BEGIN IMMEDIATE")
        latest = self._latest_sync()
        if expected_version is not None and expected_version != latest:
            self._conn.execute("ROLLBACK")
            raise StaleVersionError(expected_version, latest)
        return latest

    def _commit_version(self, version: int, note: str) -> None:
        conn = self._conn
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM memberships WHERE retired_in IS NULL"
        ).fetchone()
        conn.execute(
            "INSERT INTO bank_versions (version, created_at, note, example_count) "
            "VALUES (?, ?, ?, ?)",
            (version, _now().isoformat(), note, count),
        )
        conn.execute("COMMIT")

    def _add_sync(self, new: list[Example], note: str, expected_version: int | None) -> WriteResult:
        conn = self._conn
        latest = self._begin(expected_version)
        try:
            active = {
                row[0]
                for row in conn.execute(
                    "SELECT example_id FROM memberships WHERE retired_in IS NULL"
                ).fetchall()
            }
            added = [e for e in new if e.id not in active]
            duplicates = [e.id for e in new if e.id in active]
            if not added and latest:
                conn.execute("ROLLBACK")
                return WriteResult(latest, False, [], duplicates)
            version = latest + 1
            for example in added:
                conn.execute(
                    "INSERT OR IGNORE INTO examples (id, body) VALUES (?, ?)",
                    (example.id, example.model_dump_json()),
                )
                conn.execute(
                    "INSERT INTO memberships (example_id, added_in) VALUES (?, ?)",
                    (example.id, version),
                )
            self._commit_version(version, note)
            return WriteResult(version, True, [e.id for e in added], duplicates)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _retire_sync(self, example_id: str, note: str, expected_version: int | None) -> WriteResult:
        conn = self._conn
        latest = self._begin(expected_version)
        try:
            version = latest + 1
            cursor = conn.execute(
                "UPDATE memberships SET retired_in = ? WHERE example_id = ? AND retired_in IS NULL",
                (version, example_id),
            )
            if cursor.rowcount == 0:
                raise ExampleNotFoundError(f"example {example_id} is not in the active version")
            self._commit_version(version, note)
            return WriteResult(version, True, [], [])
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def init(self, seed: list[Example]) -> None:
        def run() -> None:
            if self._latest_sync() == 0:
                with contextlib.suppress(StaleVersionError):  # another process seeded it first
                    self._add_sync(seed, "seed", 0)

        await self._call(run)

    async def add(
        self, examples: list[ExampleIn], note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        result = await self._call(self._add_sync, _unique(examples), note, expected_version)
        self._wrote()
        return result

    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        note = note or f"retire {example_id}"
        result = await self._call(self._retire_sync, example_id, note, expected_version)
        self._wrote()
        return result


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------

# Keys under the prefix P: P.."latest" (int); P.."version:"..n (JSON: created_at, note, count);
# P.."example:"..id (JSON, never modified); P.."members" (list of "id@added_in", in position
# order); P.."active" (hash id -> "id@added_in" for examples in the newest version);
# P.."retired" (hash "id@added_in" -> the version that retired it).
# KEYS[1] = P.."latest"; ARGV: prefix, expected (-1: any), created_at, note, mode, then for
# "add": id1, body1, id2, body2, ...; for "retire": the id.
_WRITE_SCRIPT = """
local p = ARGV[1]
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local expected = tonumber(ARGV[2])
if expected >= 0 and expected ~= latest then
  return {'stale', latest}
end
local version = latest + 1
local added = {}
local duplicates = {}
if ARGV[5] == 'retire' then
  local member = redis.call('HGET', p .. 'active', ARGV[6])
  if not member then return {'missing', latest} end
  redis.call('HDEL', p .. 'active', ARGV[6])
  redis.call('HSET', p .. 'retired', member, version)
else
  for i = 6, #ARGV, 2 do
    local id = ARGV[i]
    if redis.call('HEXISTS', p .. 'active', id) == 1 then
      table.insert(duplicates, id)
    else
      redis.call('SET', p .. 'example:' .. id, ARGV[i + 1], 'NX')
      local member = id .. '@' .. version
      redis.call('RPUSH', p .. 'members', member)
      redis.call('HSET', p .. 'active', id, member)
      table.insert(added, id)
    end
  end
  if #added == 0 and latest > 0 then
    return {'unchanged', latest, cjson.encode(duplicates)}
  end
end
local count = redis.call('HLEN', p .. 'active')
local body = cjson.encode({created_at = ARGV[3], note = ARGV[4], count = count})
redis.call('SET', p .. 'version:' .. version, body)
redis.call('SET', KEYS[1], version)
return {'created', version, cjson.encode(added), cjson.encode(duplicates)}
"""


def _ids(raw: str) -> list[str]:
    # cjson encodes an empty Lua table as an object: "{}".
    value = json.loads(raw)
    return list(value) if isinstance(value, list) else []


class RedisBankStore(_Store):
    """The bank in Redis, shared by every replica. Writes are one atomic Lua script."""

    def __init__(
        self, client: Any, prefix: str = "eqs-reward:fewshot:", *, cache_bytes: int | None = None
    ) -> None:
        super().__init__(cache_bytes)
        self.redis = client
        self.prefix = prefix
        self._script = client.register_script(_WRITE_SCRIPT)

    @property
    def _latest_key(self) -> str:
        return self.prefix + "latest"

    async def _guard(self, call: Any) -> Any:
        try:
            return await call
        except redis.exceptions.RedisError as exc:
            raise BankUnavailableError(f"few-shot store unreachable: {exc}") from exc

    async def _latest(self) -> int:
        return int(await self._guard(self.redis.get(self._latest_key)) or 0)

    async def _read(self, version: int) -> BankVersion:
        raw = await self._guard(self.redis.get(f"{self.prefix}version:{version}"))
        if raw is None:
            raise VersionNotFoundError(f"few-shot version {version} does not exist")
        body = json.loads(raw)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(self.prefix + "members", 0, -1)
        pipe.hgetall(self.prefix + "retired")
        members, retired = await self._guard(pipe.execute())
        ids: list[str] = []
        for raw_member in members:
            member = raw_member.decode()
            example_id, _, added_in = member.rpartition("@")
            retired_in = retired.get(raw_member)
            if int(added_in) <= version and (retired_in is None or int(retired_in) > version):
                ids.append(example_id)
        bodies = (
            await self._guard(self.redis.mget([f"{self.prefix}example:{i}" for i in ids]))
            if ids
            else []
        )
        examples = tuple(Example.model_validate_json(b) for b in bodies)
        return BankVersion(
            version, examples, datetime.fromisoformat(body["created_at"]), body["note"]
        )

    async def versions(self, limit: int, after: int = 0) -> tuple[list[VersionInfo], int]:
        latest = await self._latest()
        numbers = list(range(after + 1, min(latest, after + limit) + 1))
        if not numbers:
            return [], latest
        raws = await self._guard(self.redis.mget([f"{self.prefix}version:{n}" for n in numbers]))
        out = []
        for number, raw in zip(numbers, raws, strict=True):
            body = json.loads(raw)
            out.append(
                VersionInfo(
                    number, datetime.fromisoformat(body["created_at"]), body["note"], body["count"]
                )
            )
        return out, latest

    async def _run_script(
        self, expected: int | None, note: str, mode: str, args: list[str]
    ) -> list[Any]:
        result: list[Any] = await self._guard(
            self._script(
                keys=[self._latest_key],
                args=[
                    self.prefix,
                    -1 if expected is None else expected,
                    _now().isoformat(),
                    note,
                    mode,
                    *args,
                ],
            )
        )
        return [r.decode() if isinstance(r, bytes) else r for r in result]

    async def init(self, seed: list[Example]) -> None:
        await self._migrate_v1()
        if await self._latest():
            return
        args = [x for e in seed for x in (e.id, e.model_dump_json())]
        await self._run_script(0, "seed", "add", args)  # 'stale' if another replica seeded

    async def _migrate_v1(self) -> None:
        """Rewrite a 0.1 bank (each version body holding its full id list) as memberships."""
        latest = await self._latest()
        if not latest or await self._guard(self.redis.exists(self.prefix + "members")):
            return
        first = json.loads(await self._guard(self.redis.get(f"{self.prefix}version:1")) or "{}")
        if "ids" not in first:
            return
        log.info("migrating the Redis few-shot bank %s to linear storage", self.prefix)
        open_member: dict[str, str] = {}
        pipe = self.redis.pipeline(transaction=True)
        for version in range(1, latest + 1):
            body = json.loads(await self.redis.get(f"{self.prefix}version:{version}"))
            ids = _ids(body["ids"])
            current = set(ids)
            for example_id in [i for i in open_member if i not in current]:
                pipe.hset(self.prefix + "retired", open_member.pop(example_id), version)
            for example_id in ids:
                if example_id not in open_member:
                    open_member[example_id] = f"{example_id}@{version}"
                    pipe.rpush(self.prefix + "members", open_member[example_id])
            slim = {"created_at": body["created_at"], "note": body["note"], "count": len(ids)}
            pipe.set(f"{self.prefix}version:{version}", json.dumps(slim))
        if open_member:
            pipe.hset(self.prefix + "active", mapping=open_member)
        await self._guard(pipe.execute())

    async def add(
        self, examples: list[ExampleIn], note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        new = _unique(examples)
        args = [x for e in new for x in (e.id, e.model_dump_json())]
        result = await self._run_script(expected_version, note, "add", args)
        self._wrote()
        return self._result(result, expected_version)

    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        note = note or f"retire {example_id}"
        result = await self._run_script(expected_version, note, "retire", [example_id])
        self._wrote()
        if result[0] == "missing":
            raise ExampleNotFoundError(f"example {example_id} is not in the active version")
        return self._result(result, expected_version)

    @staticmethod
    def _result(result: list[Any], expected: int | None) -> WriteResult:
        status, version = result[0], int(result[1])
        if status == "stale":
            raise StaleVersionError(expected or 0, version)
        if status == "unchanged":
            return WriteResult(version, False, [], _ids(result[2]))
        added = _ids(result[2]) if len(result) > 2 else []
        duplicates = _ids(result[3]) if len(result) > 3 else []
        return WriteResult(version, True, added, duplicates)

    async def set_calibration(self, version: int, thresholds: dict[str, Any]) -> None:
        await self.get(version)
        await self._guard(
            self.redis.set(f"{self.prefix}calibration:{version}", json.dumps(thresholds))
        )

    async def get_calibration(self, version: int) -> dict[str, Any] | None:
        raw = await self._guard(self.redis.get(f"{self.prefix}calibration:{version}"))
        return None if raw is None else dict(json.loads(raw))

    async def set_taught(self, version: int, embedder: str, body: str) -> None:
        await self._guard(self.redis.set(f"{self.prefix}taught:{version}:{embedder}", body))

    async def get_taught(self, version: int, embedder: str) -> str | None:
        raw = await self._guard(self.redis.get(f"{self.prefix}taught:{version}:{embedder}"))
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def ping(self) -> None:
        await self._guard(self.redis.ping())

    async def close(self) -> None:
        return None  # the client belongs to the app
