"""The versioned few-shot bank stores: SQLite (embedded default) and Redis (shared by replicas).

Semantics, identical in both:

- An example is immutable and identified by its content (``ExampleIn.content_id``).
- A version is an immutable, ordered list of example ids. Version 1 is the seed
  (``fewshot_bank/*.jsonl``), created on first start. The newest version is the active one.
- ``add`` appends the examples not already in the active version and creates version N+1; when
  every example is already there it creates nothing and says so (idempotent retries).
  ``expected_version`` makes it conditional: a stale one raises ``StaleVersionError`` (409).
- ``retire`` creates N+1 without one example.
- Writes are atomic and serialised (SQLite ``BEGIN IMMEDIATE``; a Redis Lua script), so
  concurrent writers never produce two versions with one number and never lose an add; an add
  that returned has been committed (SQLite ``synchronous=FULL``; Redis: run it with AOF, see the
  README).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import redis.exceptions

from service.fewshot import BankVersion, Example, ExampleIn, VersionNotFoundError, make_example
from service.rewards import DIMENSIONS
from service.settings import Settings

log = logging.getLogger("eqs_reward.bank")

# How long a store trusts the active version it read. Writes through this process are seen at
# once; another process's or replica's write within this time. It keeps a store round trip
# (a thread hop for SQLite, a network one for Redis) off every scoring request.
ACTIVE_TTL_S = 1.0


class StaleVersionError(Exception):
    """``expected_version`` is not the active version any more (someone else wrote first)."""

    def __init__(self, expected: int, active: int) -> None:
        super().__init__(f"expected_version {expected} is stale: the active version is {active}")
        self.expected = expected
        self.active = active


class BankUnavailableError(RuntimeError):
    """The store cannot be reached (503)."""


class ExampleNotFoundError(LookupError):
    """The example is not in the active version."""


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


class BankStore(Protocol):
    """The full bank interface (the scorer only needs ``active``/``get``/``ping``)."""

    async def init(self, seed: list[Example]) -> None: ...
    async def active(self) -> BankVersion: ...
    async def get(self, version: int) -> BankVersion: ...
    async def versions(self) -> list[VersionInfo]: ...
    async def add(
        self, examples: list[ExampleIn], note: str = "", expected_version: int | None = None
    ) -> WriteResult: ...
    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult: ...
    async def set_calibration(self, version: int, thresholds: dict[str, Any]) -> None: ...
    async def get_calibration(self, version: int) -> dict[str, Any] | None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


class _VersionCache:
    """Versions are immutable, so a version read once is kept (bounded)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._data: dict[int, BankVersion] = {}

    def get(self, version: int) -> BankVersion | None:
        return self._data.get(version)

    def put(self, value: BankVersion) -> BankVersion:
        if len(self._data) >= self.size:
            self._data.pop(min(self._data))
        self._data[value.version] = value
        return value


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
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    note TEXT NOT NULL,
    example_ids TEXT NOT NULL
);
"""


class SQLiteBankStore:
    """The bank in one SQLite file (WAL, synchronous=FULL). Blocking calls run in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._cache = _VersionCache()
        self._active: BankVersion | None = None
        self._active_until = 0.0

    def _run(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            return fn(*args)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(self._run, fn, *args)

    # -- reads --------------------------------------------------------------------------------
    def _latest(self) -> int:
        row = self._conn.execute("SELECT MAX(version) FROM versions").fetchone()
        return int(row[0] or 0)

    def _read(self, version: int) -> BankVersion:
        row = self._conn.execute(
            "SELECT created_at, note, example_ids FROM versions WHERE version = ?", (version,)
        ).fetchone()
        if row is None:
            raise VersionNotFoundError(f"few-shot version {version} does not exist")
        ids = json.loads(row[2])
        bodies = (
            dict(
                self._conn.execute(
                    f"SELECT id, body FROM examples WHERE id IN ({','.join('?' * len(ids))})", ids
                ).fetchall()
            )
            if ids
            else {}
        )
        examples = tuple(Example.model_validate_json(bodies[i]) for i in ids)
        return BankVersion(version, examples, datetime.fromisoformat(row[0]), row[1])

    async def active(self) -> BankVersion:
        if self._active is not None and time.monotonic() < self._active_until:
            return self._active
        latest = await self._call(self._latest)
        if latest == 0:
            raise VersionNotFoundError("the few-shot bank is empty (not initialised)")
        self._active = await self.get(latest)
        self._active_until = time.monotonic() + ACTIVE_TTL_S
        return self._active

    async def get(self, version: int) -> BankVersion:
        cached = self._cache.get(version)
        if cached is not None:
            return cached
        return self._cache.put(await self._call(self._read, version))

    async def versions(self) -> list[VersionInfo]:
        def read() -> list[VersionInfo]:
            rows = self._conn.execute(
                "SELECT version, created_at, note, example_ids FROM versions ORDER BY version"
            ).fetchall()
            return [
                VersionInfo(v, datetime.fromisoformat(c), n, len(json.loads(ids)))
                for v, c, n, ids in rows
            ]

        result: list[VersionInfo] = await self._call(read)
        return result

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
        row = await self._call(
            lambda: self._conn.execute(
                "SELECT body FROM calibrations WHERE version = ?", (version,)
            ).fetchone()
        )
        return None if row is None else dict(json.loads(row[0]))

    async def ping(self) -> None:
        await self._call(lambda: self._conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._call(self._conn.close)

    # -- writes -------------------------------------------------------------------------------
    def _write(
        self,
        change: Any,
        note: str,
        expected_version: int | None,
        new_examples: list[Example],
    ) -> WriteResult:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            latest = self._latest()
            if expected_version is not None and expected_version != latest:
                raise StaleVersionError(expected_version, latest)
            if latest:
                row = conn.execute(
                    "SELECT example_ids FROM versions WHERE version = ?", (latest,)
                ).fetchone()
                current = json.loads(row[0])
            else:
                current = []
            ids, added, duplicates = change(current)
            if ids == current and latest:
                conn.execute("ROLLBACK")
                return WriteResult(latest, False, [], duplicates)
            for example in new_examples:
                if example.id in added:
                    conn.execute(
                        "INSERT OR IGNORE INTO examples (id, body) VALUES (?, ?)",
                        (example.id, example.model_dump_json()),
                    )
            conn.execute(
                "INSERT INTO versions (version, created_at, note, example_ids) VALUES (?,?,?,?)",
                (latest + 1, _now().isoformat(), note, json.dumps(ids)),
            )
            conn.execute("COMMIT")
            return WriteResult(latest + 1, True, added, duplicates)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def init(self, seed: list[Example]) -> None:
        def change(current: list[str]) -> tuple[list[str], list[str], list[str]]:
            return [e.id for e in seed], [e.id for e in seed], []

        def run() -> None:
            if self._latest() == 0:
                # StaleVersionError: another process seeded it first.
                with contextlib.suppress(StaleVersionError):
                    self._write(change, "seed", 0, seed)

        await self._call(run)

    async def add(
        self, examples: list[ExampleIn], note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        new = _unique(examples)

        def change(current: list[str]) -> tuple[list[str], list[str], list[str]]:
            present = set(current)
            added = [e.id for e in new if e.id not in present]
            duplicates = [e.id for e in new if e.id in present]
            return current + added, added, duplicates

        result: WriteResult = await self._call(self._write, change, note, expected_version, new)
        self._active_until = 0.0
        return result

    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        def change(current: list[str]) -> tuple[list[str], list[str], list[str]]:
            if example_id not in current:
                raise ExampleNotFoundError(f"example {example_id} is not in the active version")
            return [i for i in current if i != example_id], [], []

        note = note or f"retire {example_id}"
        result: WriteResult = await self._call(self._write, change, note, expected_version, [])
        self._active_until = 0.0
        return result


def _unique(examples: list[ExampleIn]) -> list[Example]:
    out: list[Example] = []
    seen: set[str] = set()
    now = _now()
    for data in examples:
        example = make_example(data, created_at=now)
        if example.id not in seen:
            seen.add(example.id)
            out.append(example)
    return out


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------

# KEYS[1] latest-version key; ARGV: prefix, expected (or -1), created_at, note, mode,
# then for mode "add": id1, body1, id2, body2, ...; for mode "retire": the id.
_WRITE_SCRIPT = """
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local expected = tonumber(ARGV[2])
if expected >= 0 and expected ~= latest then
  return {'stale', latest}
end
local current = {}
if latest > 0 then
  current = cjson.decode(cjson.decode(redis.call('GET', ARGV[1] .. 'version:' .. latest))['ids'])
end
local present = {}
for _, id in ipairs(current) do present[id] = true end
local ids = {}
local added = {}
local duplicates = {}
if ARGV[5] == 'retire' then
  local target = ARGV[6]
  if not present[target] then return {'missing', latest} end
  for _, id in ipairs(current) do if id ~= target then table.insert(ids, id) end end
else
  for _, id in ipairs(current) do table.insert(ids, id) end
  for i = 6, #ARGV, 2 do
    local id = ARGV[i]
    if present[id] then
      table.insert(duplicates, id)
    else
      present[id] = true
      redis.call('SET', ARGV[1] .. 'example:' .. id, ARGV[i + 1], 'NX')
      table.insert(ids, id)
      table.insert(added, id)
    end
  end
  if #added == 0 and latest > 0 then
    return {'unchanged', latest, cjson.encode(duplicates)}
  end
end
local version = latest + 1
local body = cjson.encode({created_at = ARGV[3], note = ARGV[4], ids = cjson.encode(ids)})
redis.call('SET', ARGV[1] .. 'version:' .. version, body)
redis.call('SET', KEYS[1], version)
return {'created', version, cjson.encode(added), cjson.encode(duplicates)}
"""


class RedisBankStore:
    """The bank in Redis, shared by every replica. Writes are one atomic Lua script.

    Keys (under ``prefix``): ``latest`` (int), ``version:<n>`` (JSON: created_at, note, ids),
    ``example:<id>`` (JSON). Version and example keys are never modified once written.
    """

    def __init__(self, client: Any, prefix: str = "eqs-reward:fewshot:") -> None:
        self.redis = client
        self.prefix = prefix
        self._cache = _VersionCache()
        self._script = client.register_script(_WRITE_SCRIPT)
        self._last_active: BankVersion | None = None
        self._active_until = 0.0

    @property
    def _latest_key(self) -> str:
        return self.prefix + "latest"

    async def _latest(self) -> int:
        return int(await self.redis.get(self._latest_key) or 0)

    async def active(self) -> BankVersion:
        if self._last_active is not None and time.monotonic() < self._active_until:
            return self._last_active
        try:
            latest = await self._latest()
        except redis.exceptions.RedisError as exc:
            # Keep scoring with the last active version seen rather than failing every request;
            # /ready reports the store as unavailable meanwhile.
            if self._last_active is None:
                raise BankUnavailableError(f"few-shot store unreachable: {exc}") from exc
            log.warning(
                "few-shot store unreachable (%r); using version %d", exc, self._last_active.version
            )
            return self._last_active
        if latest == 0:
            raise VersionNotFoundError("the few-shot bank is empty (not initialised)")
        self._last_active = await self.get(latest)
        self._active_until = time.monotonic() + ACTIVE_TTL_S
        return self._last_active

    async def get(self, version: int) -> BankVersion:
        cached = self._cache.get(version)
        if cached is not None:
            return cached
        try:
            raw = await self.redis.get(f"{self.prefix}version:{version}")
        except redis.exceptions.RedisError as exc:
            raise BankUnavailableError(f"few-shot store unreachable: {exc}") from exc
        if raw is None:
            raise VersionNotFoundError(f"few-shot version {version} does not exist")
        body = json.loads(raw)
        ids = json.loads(body["ids"]) if body["ids"] not in ("{}", "[]") else []
        bodies = await self.redis.mget([f"{self.prefix}example:{i}" for i in ids]) if ids else []
        examples = tuple(Example.model_validate_json(b) for b in bodies)
        value = BankVersion(
            version, examples, datetime.fromisoformat(body["created_at"]), body["note"]
        )
        return self._cache.put(value)

    async def versions(self) -> list[VersionInfo]:
        latest = await self._latest()
        if not latest:
            return []
        raws = await self.redis.mget([f"{self.prefix}version:{n}" for n in range(1, latest + 1)])
        out = []
        for number, raw in enumerate(raws, 1):
            body = json.loads(raw)
            ids = json.loads(body["ids"]) if body["ids"] not in ("{}", "[]") else []
            out.append(
                VersionInfo(
                    number, datetime.fromisoformat(body["created_at"]), body["note"], len(ids)
                )
            )
        return out

    async def _run_script(
        self, expected: int | None, note: str, mode: str, args: list[str]
    ) -> list[Any]:
        result: list[Any] = await self._script(
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
        return [r.decode() if isinstance(r, bytes) else r for r in result]

    async def init(self, seed: list[Example]) -> None:
        if await self._latest():
            return
        args = [x for e in seed for x in (e.id, e.model_dump_json())]
        await self._run_script(0, "seed", "add", args)  # 'stale' if another replica seeded

    async def add(
        self, examples: list[ExampleIn], note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        new = _unique(examples)
        args = [x for e in new for x in (e.id, e.model_dump_json())]
        result = await self._run_script(expected_version, note, "add", args)
        self._active_until = 0.0
        return self._result(result, expected_version)

    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        note = note or f"retire {example_id}"
        result = await self._run_script(expected_version, note, "retire", [example_id])
        self._active_until = 0.0
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
        await self.redis.set(f"{self.prefix}calibration:{version}", json.dumps(thresholds))

    async def get_calibration(self, version: int) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{self.prefix}calibration:{version}")
        return None if raw is None else dict(json.loads(raw))

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        return None  # the client belongs to the app


def _ids(raw: str) -> list[str]:
    # cjson encodes an empty Lua table as an object: "{}".
    value = json.loads(raw)
    return list(value) if isinstance(value, list) else []


def open_store(settings: Settings, redis_client: Any | None) -> BankStore:
    """The configured store: SQLite in the data dir (default), or Redis shared by replicas."""
    if settings.fewshot_store == "redis":
        if redis_client is None:
            raise RuntimeError("EQS_REWARD_FEWSHOT_STORE=redis needs EQS_REWARD_REDIS_URL")
        return RedisBankStore(redis_client, prefix=settings.redis_key_prefix + "fewshot:")
    return SQLiteBankStore(settings.data_dir / "fewshot.sqlite3")


def read_examples_jsonl(path: Path) -> list[ExampleIn]:
    """Examples from JSONL (the export format, or hand-written cases); ids and timestamps in
    the file are ignored, since ids derive from content."""
    out: list[ExampleIn] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            raw.pop("id", None)
            raw.pop("created_at", None)
            out.append(ExampleIn.model_validate(raw))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
    return out


# --------------------------------------------------------------------------------------------
# Selection under a token budget
# --------------------------------------------------------------------------------------------


def estimate_tokens(example: Example) -> int:
    """A cheap, deterministic token estimate of one rendered example (about 4 characters a
    token, plus the fixed framing of the two turns)."""
    text = example.context.query + example.suggestion + (example.context.profile or "")
    text += "".join(t.content for t in example.context.history)
    return 40 + len(text) // 4


def select_examples(examples: tuple[Example, ...], budget_tokens: int) -> tuple[Example, ...]:
    """Which examples of a version the judge sees when they outgrow ``budget_tokens``.

    Deterministic for a version (it depends only on the version's ordered examples):
    1. Reserve, for each dimension, the newest example that fails it, then the newest example
       that passes all three, so every kind of failure (and a positive) stays represented.
    2. Fill the rest of the budget with the remaining examples, newest first (newest = the
       latest online bad cases, the ones operators just taught).
    3. Show the chosen examples in bank order, so a version that fits keeps its exact prefix.
    Within the budget, nothing is dropped and appends only extend the prompt.
    """
    if budget_tokens <= 0 or sum(estimate_tokens(e) for e in examples) <= budget_tokens:
        return examples
    newest_first = list(reversed(examples))
    chosen: set[str] = set()
    used = 0
    reserved: list[Example] = []
    for dimension in DIMENSIONS:
        failing = next((e for e in newest_first if getattr(e.labels, dimension) == 0), None)
        if failing is not None:
            reserved.append(failing)
    positive = next(
        (e for e in newest_first if all(getattr(e.labels, d) == 1 for d in DIMENSIONS)), None
    )
    if positive is not None:
        reserved.append(positive)
    for example in [*reserved, *newest_first]:
        if example.id in chosen:
            continue
        cost = estimate_tokens(example)
        if used + cost > budget_tokens and example not in reserved:
            continue
        chosen.add(example.id)
        used += cost
    return tuple(e for e in examples if e.id in chosen)
