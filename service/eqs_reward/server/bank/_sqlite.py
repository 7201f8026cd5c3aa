"""The few-shot bank in one SQLite file: the embedded default (semantics in ``_stores``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from eqs_reward.judge.cases import Example, ExampleIn
from eqs_reward.server.bank._errors import (
    ExampleNotFoundError,
    StaleVersionError,
    VersionNotFoundError,
)
from eqs_reward.server.bank._stores import BankVersion, VersionInfo, WriteResult, _Store

__all__ = ["SQLiteBankStore"]

T = TypeVar("T")


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
        self.log.info("migrating the few-shot bank %s to linear storage", self.path)
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
            (version, self._now().isoformat(), note, count),
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
        result = await self._call(self._add_sync, self._unique(examples), note, expected_version)
        self._wrote()
        return result

    async def retire(
        self, example_id: str, note: str = "", expected_version: int | None = None
    ) -> WriteResult:
        note = note or f"retire {example_id}"
        result = await self._call(self._retire_sync, example_id, note, expected_version)
        self._wrote()
        return result
