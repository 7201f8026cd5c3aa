"""Two search backends behind one small interface.

- ``SQLiteCatalog``: FTS5 in a file under the data directory, in process (the embedded default;
  one replica);
- ``PostgresCatalog``: PostgreSQL full-text search (``tsvector`` with a GIN index), one catalog
  shared by every replica.

Both index the same terms (``eqs_reward.catalog._text.terms``, so matching does not depend on
the backend's stemmer) and rank any-term matches by their own relevance (bm25, ``ts_rank``).
A load is one transaction: readers see the old catalog or the new one, never a mix. Another
backend (OpenSearch, Elasticsearch) implements the six methods of ``CatalogBackend``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from eqs_reward._jsonl import record
from eqs_reward.catalog._products import Product, catalog_digest
from eqs_reward.catalog._text import terms

__all__ = ["CatalogBackend", "CatalogInfo", "PostgresCatalog", "SQLiteCatalog"]


@dataclass(frozen=True, slots=True)
class CatalogInfo:
    """The catalog being served: ``version`` counts loads; ``digest`` is its content."""

    version: int
    digest: str
    count: int
    loaded_at: str

    @property
    def key(self) -> str:
        """What cache keys carry."""
        return f"catalog-{self.version}-{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        return record(self)


class CatalogBackend(Protocol):
    name: str

    async def active(self) -> CatalogInfo | None: ...

    async def load(self, products: Sequence[Product]) -> CatalogInfo: ...

    async def search(self, words: Sequence[str], limit: int) -> list[Product]: ...

    async def has_phrase(self, words: Sequence[str]) -> bool: ...

    async def get(self, ids: Sequence[str]) -> list[Product]: ...

    async def brands(self) -> list[str]: ...

    async def close(self) -> None: ...


def _search_text(product: Product) -> str:
    return " ".join(terms(product.text))


def _product(row: Sequence[Any]) -> Product:
    attributes = row[6]
    if isinstance(attributes, str):
        attributes = json.loads(attributes)
    return Product(row[0], row[1], row[2], row[3], row[4], row[5], dict(attributes or {}))


def _sqlite_row(rowid: int, p: Product) -> tuple[Any, ...]:
    attributes = json.dumps(p.attributes, ensure_ascii=False)
    return (rowid, p.id, p.title, p.brand, p.category, p.price, p.currency, attributes)


def _pg_row(p: Product) -> tuple[Any, ...]:
    attributes = json.dumps(p.attributes, ensure_ascii=False)
    return (p.id, p.title, p.brand, p.category, p.price, p.currency, attributes, _search_text(p))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- SQLite FTS5 ---------------------------------------------------------------------------------
_FTS = (
    "CREATE VIRTUAL TABLE products_fts USING fts5("
    "terms, content='', tokenize='unicode61 remove_diacritics 2')"
)


class SQLiteCatalog:
    """FTS5 over the products, in one SQLite file (WAL: searches go on during a load)."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._local.execute("PRAGMA journal_mode=WAL")
        self._local.executescript(
            """
            CREATE TABLE IF NOT EXISTS catalog_versions(
                version INTEGER PRIMARY KEY, digest TEXT NOT NULL, count INTEGER NOT NULL,
                loaded_at TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS products(
                rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, title TEXT NOT NULL,
                brand TEXT, category TEXT, price REAL, currency TEXT NOT NULL,
                attributes TEXT NOT NULL);
            """
        )
        self._local.execute(
            _FTS.replace("CREATE VIRTUAL TABLE", "CREATE VIRTUAL TABLE IF NOT EXISTS")
        )
        self._lock = asyncio.Lock()

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    def _active(self) -> CatalogInfo | None:
        row = self._local.execute(
            "SELECT version, digest, count, loaded_at FROM catalog_versions "
            "ORDER BY version DESC LIMIT 1"
        ).fetchone()
        return None if row is None else CatalogInfo(*row)

    async def active(self) -> CatalogInfo | None:
        return await self._run(self._active)  # type: ignore[no-any-return]

    def _load(self, products: Sequence[Product]) -> CatalogInfo:
        db = self._local
        digest = catalog_digest(products)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM products")
            # A contentless index cannot DELETE: it is rebuilt, in the same transaction.
            db.execute("DROP TABLE products_fts")
            db.execute(_FTS)
            db.executemany(
                "INSERT INTO products(rowid, id, title, brand, category, price, currency, "
                "attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [_sqlite_row(n, p) for n, p in enumerate(products, start=1)],
            )
            db.executemany(
                "INSERT INTO products_fts(rowid, terms) VALUES (?, ?)",
                [(n, _search_text(p)) for n, p in enumerate(products, start=1)],
            )
            version = (
                db.execute("SELECT max(version) FROM catalog_versions").fetchone()[0] or 0
            ) + 1
            info = CatalogInfo(version, digest, len(products), _now())
            db.execute(
                "INSERT INTO catalog_versions VALUES (?, ?, ?, ?)",
                (info.version, info.digest, info.count, info.loaded_at),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return info

    async def load(self, products: Sequence[Product]) -> CatalogInfo:
        return await self._run(self._load, products)  # type: ignore[no-any-return]

    @staticmethod
    def _match(words: Sequence[str], joiner: str) -> str:
        return joiner.join('"' + w.replace('"', '""') + '"' for w in words)

    def _search(self, words: Sequence[str], limit: int) -> list[Product]:
        if not words:
            return []
        rows = self._local.execute(
            "SELECT p.id, p.title, p.brand, p.category, p.price, p.currency, p.attributes "
            "FROM products_fts f JOIN products p ON p.rowid = f.rowid "
            "WHERE products_fts MATCH ? ORDER BY bm25(products_fts) LIMIT ?",
            (self._match(words, " OR "), limit),
        ).fetchall()
        return [_product(r) for r in rows]

    async def search(self, words: Sequence[str], limit: int) -> list[Product]:
        return await self._run(self._search, list(words), limit)  # type: ignore[no-any-return]

    def _has_phrase(self, words: Sequence[str]) -> bool:
        phrase = '"' + " ".join(w.replace('"', '""') for w in words) + '"'
        row = self._local.execute(
            "SELECT 1 FROM products_fts WHERE products_fts MATCH ? LIMIT 1", (phrase,)
        ).fetchone()
        return row is not None

    async def has_phrase(self, words: Sequence[str]) -> bool:
        return bool(await self._run(self._has_phrase, list(words))) if words else False

    def _get(self, ids: Sequence[str]) -> list[Product]:
        marks = ",".join("?" * len(ids))
        rows = self._local.execute(
            "SELECT id, title, brand, category, price, currency, attributes FROM products "
            f"WHERE id IN ({marks})",
            list(ids),
        ).fetchall()
        return [_product(r) for r in rows]

    async def get(self, ids: Sequence[str]) -> list[Product]:
        if not ids:
            return []
        found: list[Product] = await self._run(self._get, list(ids))
        return found

    def _brands(self) -> list[str]:
        rows = self._local.execute(
            "SELECT DISTINCT brand FROM products WHERE brand IS NOT NULL"
        ).fetchall()
        return [r[0] for r in rows]

    async def brands(self) -> list[str]:
        return await self._run(self._brands)  # type: ignore[no-any-return]

    async def close(self) -> None:
        async with self._lock:
            self._local.close()


# -- PostgreSQL full-text search -----------------------------------------------------------------
_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS eqs_catalog_versions(
    version SERIAL PRIMARY KEY, digest TEXT NOT NULL, count INTEGER NOT NULL,
    loaded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS eqs_catalog_products(
    version INTEGER NOT NULL, id TEXT NOT NULL, title TEXT NOT NULL, brand TEXT, category TEXT,
    price DOUBLE PRECISION, currency TEXT NOT NULL, attributes JSONB NOT NULL,
    terms TEXT NOT NULL,
    doc TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', terms)) STORED,
    PRIMARY KEY (version, id));
CREATE INDEX IF NOT EXISTS eqs_catalog_products_doc ON eqs_catalog_products USING GIN (doc);
"""


#: The rows of the newest load (a load commits its version row and its products together).
_ACTIVE = "version = (SELECT max(version) FROM eqs_catalog_versions)"


class PostgresCatalog:
    """PostgreSQL full-text search; one connection per replica, searches serialised on it (each
    is a millisecond-scale index lookup)."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            async with self._conn.transaction():
                await self._conn.execute("SELECT pg_advisory_xact_lock(7361002)")
                await self._conn.execute(_PG_SCHEMA)
        return self._conn

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read, on the connection this backend holds (one query at a time)."""
        async with self._lock:
            conn = await self._connection()
            cursor = await conn.execute(sql, args)
            rows: list[Any] = await cursor.fetchall()
        return rows

    async def active(self) -> CatalogInfo | None:
        rows = await self._rows(
            "SELECT version, digest, count, loaded_at FROM eqs_catalog_versions "
            "ORDER BY version DESC LIMIT 1"
        )
        return CatalogInfo(*rows[0]) if rows else None

    async def load(self, products: Sequence[Product]) -> CatalogInfo:
        digest = catalog_digest(products)
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                # One load at a time, across replicas too.
                await conn.execute("SELECT pg_advisory_xact_lock(7361003)")
                cursor = await conn.execute(
                    "INSERT INTO eqs_catalog_versions(digest, count, loaded_at) "
                    "VALUES (%s, %s, %s) RETURNING version, digest, count, loaded_at",
                    (digest, len(products), _now()),
                )
                info = CatalogInfo(*(await cursor.fetchone()))
                async with conn.cursor().copy(
                    "COPY eqs_catalog_products(version, id, title, brand, category, price, "
                    "currency, attributes, terms) FROM STDIN"
                ) as copy:
                    for p in products:
                        await copy.write_row((info.version, *_pg_row(p)))
                await conn.execute(
                    "DELETE FROM eqs_catalog_products WHERE version < %s", (info.version,)
                )
        return info

    async def search(self, words: Sequence[str], limit: int) -> list[Product]:
        if not words:
            return []
        # Terms are letters and digits only (the tokenizer's), quoted for to_tsquery anyway.
        query = " | ".join("'" + w.replace("'", "''") + "'" for w in words)
        rows = await self._rows(
            "SELECT id, title, brand, category, price, currency, attributes "
            "FROM eqs_catalog_products, to_tsquery('simple', %s) q "
            f"WHERE {_ACTIVE} AND doc @@ q "
            "ORDER BY ts_rank(doc, q) DESC, id LIMIT %s",
            (query, limit),
        )
        return [_product(r) for r in rows]

    async def has_phrase(self, words: Sequence[str]) -> bool:
        if not words:
            return False
        query = " <-> ".join("'" + w.replace("'", "''") + "'" for w in words)
        rows = await self._rows(
            f"SELECT 1 FROM eqs_catalog_products WHERE {_ACTIVE} "
            "AND doc @@ to_tsquery('simple', %s) LIMIT 1",
            (query,),
        )
        return bool(rows)

    async def get(self, ids: Sequence[str]) -> list[Product]:
        if not ids:
            return []
        rows = await self._rows(
            "SELECT id, title, brand, category, price, currency, attributes "
            f"FROM eqs_catalog_products WHERE {_ACTIVE} AND id = ANY(%s)",
            (list(ids),),
        )
        return [_product(r) for r in rows]

    async def brands(self) -> list[str]:
        rows = await self._rows(
            f"SELECT DISTINCT brand FROM eqs_catalog_products WHERE {_ACTIVE} AND brand IS NOT NULL"
        )
        return [r[0] for r in rows]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
