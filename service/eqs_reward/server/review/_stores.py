"""Where the review queue is kept: beside the bank, in the same kind of store (a SQLite file in
the data directory, or Redis shared by replicas). Both keep every case as its JSON under its id
(sortable by time), read newest first from a cursor, and bound the *unlabeled* cases by count
and age; a labeled case is kept until it is published and beyond (an operator's work is never
dropped). A label is written before its request returns (SQLite ``synchronous=FULL``; Redis:
run it with AOF, as for the bank)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from eqs_reward.server.review._item import ReviewItem

__all__ = ["RedisReviewStore", "ReviewStore", "SQLiteReviewStore"]

T = TypeVar("T")


def _id_floor(when: datetime) -> str:
    """The smallest id of a case created at ``when`` (ids start with the time in ns)."""
    return f"{int(when.timestamp() * 1e9):020d}"


class ReviewStore(Protocol):
    async def add(self, items: Sequence[ReviewItem]) -> None: ...
    async def put(self, item: ReviewItem) -> None: ...
    async def get(self, item_id: str) -> ReviewItem | None: ...
    async def older(self, before: str | None, count: int) -> list[ReviewItem]:
        """Up to ``count`` cases with ids below ``before`` (all if None), newest first."""
        ...

    async def trim(self, keep: int, created_after: datetime) -> int:
        """Drop unlabeled cases past the newest ``keep`` or created before ``created_after``;
        how many went."""
        ...

    async def close(self) -> None: ...


class SQLiteReviewStore:
    """The queue in one SQLite file (WAL, synchronous=FULL); blocking calls run in a thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS review ("
            "id TEXT PRIMARY KEY, labeled INTEGER NOT NULL, body TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)

    def _write(self, items: Sequence[ReviewItem]) -> None:
        rows = [(i.id, int(i.labels is not None), i.model_dump_json()) for i in items]
        self._conn.executemany("INSERT OR REPLACE INTO review VALUES (?, ?, ?)", rows)

    async def add(self, items: Sequence[ReviewItem]) -> None:
        await self._call(self._write, items)

    async def put(self, item: ReviewItem) -> None:
        await self._call(self._write, [item])

    async def get(self, item_id: str) -> ReviewItem | None:
        row = await self._call(
            lambda: self._conn.execute(
                "SELECT body FROM review WHERE id = ?", (item_id,)
            ).fetchone()
        )
        return None if row is None else ReviewItem.model_validate_json(row[0])

    async def older(self, before: str | None, count: int) -> list[ReviewItem]:
        rows = await self._call(
            lambda: self._conn.execute(
                "SELECT body FROM review WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before or "~", count),
            ).fetchall()
        )
        return [ReviewItem.model_validate_json(r[0]) for r in rows]

    def _trim(self, keep: int, floor: str) -> int:
        cursor = self._conn.execute(
            "DELETE FROM review WHERE labeled = 0 AND (id < ? OR id NOT IN "
            "(SELECT id FROM review WHERE labeled = 0 ORDER BY id DESC LIMIT ?))",
            (floor, keep),
        )
        return cursor.rowcount

    async def trim(self, keep: int, created_after: datetime) -> int:
        return await self._call(self._trim, keep, _id_floor(created_after))

    async def close(self) -> None:
        await self._call(self._conn.close)


class RedisReviewStore:
    """The queue in Redis, shared by every replica: each case's JSON under ``<prefix>item:<id>``,
    the ids in two sorted sets ordered by id (all of them; the unlabeled ones)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self.index = prefix + "index"
        self.unlabeled = prefix + "unlabeled"

    def _key(self, item_id: str) -> str:
        return self.prefix + "item:" + item_id

    async def add(self, items: Sequence[ReviewItem]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for item in items:
                self._queue_put(pipe, item)
            await pipe.execute()

    def _queue_put(self, pipe: Any, item: ReviewItem) -> None:
        pipe.set(self._key(item.id), item.model_dump_json())
        pipe.zadd(self.index, {item.id: 0})
        if item.labels is None:
            pipe.zadd(self.unlabeled, {item.id: 0})
        else:
            pipe.zrem(self.unlabeled, item.id)

    async def put(self, item: ReviewItem) -> None:
        await self.add([item])

    async def get(self, item_id: str) -> ReviewItem | None:
        raw = await self.redis.get(self._key(item_id))
        return None if raw is None else ReviewItem.model_validate_json(raw)

    async def older(self, before: str | None, count: int) -> list[ReviewItem]:
        top = "+" if before is None else "(" + before
        ids = await self.redis.zrevrangebylex(self.index, top, "-", start=0, num=count)
        if not ids:
            return []
        raws = await self.redis.mget([self._key(i.decode()) for i in ids])
        return [ReviewItem.model_validate_json(raw) for raw in raws if raw is not None]

    async def trim(self, keep: int, created_after: datetime) -> int:
        old = await self.redis.zrangebylex(self.unlabeled, "-", "(" + _id_floor(created_after))
        extra = max(0, await self.redis.zcard(self.unlabeled) - keep - len(old))
        if extra:
            old += await self.redis.zrange(self.unlabeled, len(old), len(old) + extra - 1)
        if not old:
            return 0
        ids = [i.decode() if isinstance(i, bytes) else i for i in old]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*[self._key(i) for i in ids])
            pipe.zrem(self.index, *ids)
            pipe.zrem(self.unlabeled, *ids)
            await pipe.execute()
        return len(ids)

    async def close(self) -> None:
        return None
