"""The shop's own catalog: products read from the operator's files, versioned, searched by an
in-process SQLite FTS5 index or by PostgreSQL full-text search (``eqs-reward catalog load``).
The retrieval head (``eqs_reward.server.heads.retrieval``) grounds suggestions in it."""

from pathlib import Path

from eqs_reward.catalog._backends import (
    CatalogBackend,
    CatalogInfo,
    PostgresCatalog,
    SQLiteCatalog,
)
from eqs_reward.catalog._products import (
    CatalogError,
    Product,
    RowError,
    catalog_digest,
    read_products,
)
from eqs_reward.catalog._text import Budget, brand_candidates, parse_budget, split_budget, terms

__all__ = [
    "Budget",
    "CatalogBackend",
    "CatalogError",
    "CatalogInfo",
    "PostgresCatalog",
    "Product",
    "RowError",
    "SQLiteCatalog",
    "brand_candidates",
    "catalog_digest",
    "open_catalog",
    "parse_budget",
    "read_products",
    "split_budget",
    "terms",
]


def open_catalog(backend: str, data_dir: Path, postgres_url: str | None) -> CatalogBackend:
    """The configured backend: ``sqlite`` (a file in ``data_dir``) or ``postgres``."""
    if backend == "postgres":
        if not postgres_url:
            raise ValueError("the postgres catalog backend needs EQS_REWARD_CATALOG_POSTGRES_URL")
        return PostgresCatalog(postgres_url)
    if backend == "sqlite":
        return SQLiteCatalog(data_dir / "catalog.sqlite3")
    raise ValueError(f"unknown catalog backend {backend!r}: use sqlite or postgres")
