"""The operator's products: reading JSONL, CSV or Parquet, every bad row reported, nothing
half-loaded.

A product has an ``id``, a ``title``, and optionally a ``brand``, a ``category``, a ``price`` with
its ``currency`` (ISO 4217, default USD) and free ``attributes`` (any other column, or an
``attributes`` object). A file is read whole and checked whole: one bad row fails the load with
every problem listed (row number, field, why), so a catalog is never half replaced.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqs_reward._jsonl import JsonlError, iter_jsonl, record

__all__ = ["CatalogError", "Product", "RowError", "catalog_digest", "read_products"]

MAX_ERRORS = 50
_CORE = ("id", "title", "brand", "category", "price", "currency", "attributes")


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # 1-based data row (a header or comment line is not counted)
    field: str
    why: str

    def __str__(self) -> str:
        return f"row {self.row}, {self.field}: {self.why}"


class CatalogError(ValueError):
    """A catalog file that does not load; ``errors`` lists every bad row (up to 50)."""

    def __init__(self, message: str, errors: Iterable[RowError] = ()) -> None:
        self.errors = list(errors)
        lines = [message, *(f"  {e}" for e in self.errors[:MAX_ERRORS])]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    title: str
    brand: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str = "USD"
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """What search matches: title, brand, category and attribute values."""
        parts = [self.title, self.brand or "", self.category or "", *self.attributes.values()]
        return " ".join(p for p in parts if p)

    def to_row(self) -> dict[str, Any]:
        return record(self)


def _text(value: Any, name: str, row: int, errors: list[RowError], *, required: bool) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        if required:
            errors.append(RowError(row, name, "missing"))
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        errors.append(RowError(row, name, f"expected text, got {type(value).__name__}"))
        return None
    text = str(value).strip()
    if len(text) > 1000:
        errors.append(RowError(row, name, "longer than 1,000 characters"))
        return None
    if not text and required:
        errors.append(RowError(row, name, "blank"))
        return None
    return text or None


def _price(value: Any, row: int, errors: list[RowError]) -> float | None:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        errors.append(RowError(row, "price", "expected a number, got a boolean"))
        return None
    try:
        price = float(str(value).replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        errors.append(RowError(row, "price", f"not a number: {str(value)[:40]!r}"))
        return None
    if not math.isfinite(price) or price < 0:
        errors.append(RowError(row, "price", f"must be a finite, non-negative number, got {price}"))
        return None
    return price


def _product(raw: dict[str, Any], row: int, errors: list[RowError]) -> Product | None:
    before = len(errors)
    product_id = _text(raw.get("id"), "id", row, errors, required=True)
    title = _text(raw.get("title"), "title", row, errors, required=True)
    brand = _text(raw.get("brand"), "brand", row, errors, required=False)
    category = _text(raw.get("category"), "category", row, errors, required=False)
    price = _price(raw.get("price"), row, errors)
    currency = _text(raw.get("currency"), "currency", row, errors, required=False) or "USD"
    currency = currency.upper()
    if len(currency) != 3 or not currency.isalpha():
        errors.append(RowError(row, "currency", f"not an ISO 4217 code: {currency!r}"))
    attributes: dict[str, str] = {}
    nested = raw.get("attributes")
    if isinstance(nested, str) and nested.strip().startswith("{"):
        try:
            nested = json.loads(nested)
        except json.JSONDecodeError:
            errors.append(RowError(row, "attributes", "not a JSON object"))
            nested = None
    if isinstance(nested, dict):
        extra = dict(nested)
    elif nested in (None, ""):
        extra = {}
    else:
        errors.append(RowError(row, "attributes", "expected an object of name: value"))
        extra = {}
    extra.update({k: v for k, v in raw.items() if k not in _CORE})
    for name, value in extra.items():
        text = _text(value, f"attributes.{name}", row, errors, required=False)
        if text is not None:
            attributes[str(name)] = text
    if len(errors) > before or product_id is None or title is None:
        return None
    return Product(product_id, title, brand, category, price, currency, attributes)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        try:
            for _, value in iter_jsonl(path):
                if set(value) != {"_comment"}:  # a header saying what the file is
                    yield value
        except JsonlError as exc:
            raise CatalogError(str(exc)) from exc
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            lines = (line for line in handle if not line.startswith("#"))
            yield from csv.DictReader(lines)
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - the catalog extra brings it
            raise CatalogError(
                "reading Parquet needs pyarrow: pip install 'eqs-reward[catalog]'"
            ) from exc
        yield from pq.read_table(path).to_pylist()
    else:
        raise CatalogError(f"{path}: use .jsonl, .csv or .parquet (got {suffix or 'no suffix'})")


def read_products(path: Path, *, max_products: int = 2_000_000) -> list[Product]:
    """Every product of the file, or ``CatalogError`` listing every bad row."""
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    products: list[Product] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for row, raw in enumerate(_rows(path), start=1):
        if row > max_products:
            raise CatalogError(f"{path}: more than {max_products:,} products")
        product = _product(raw, row, errors)
        if product is None:
            continue
        if product.id in seen:
            errors.append(RowError(row, "id", f"duplicate of row {seen[product.id]}"))
            continue
        seen[product.id] = row
        products.append(product)
    if errors:
        raise CatalogError(f"{path}: {len(errors)} bad row(s); nothing was loaded", errors)
    if not products:
        raise CatalogError(f"{path}: no products")
    return products


def catalog_digest(products: Iterable[Product]) -> str:
    """A content digest: the same products give the same digest, whatever the file format."""
    digest = hashlib.blake2b(digest_size=8)
    for product in sorted(products, key=lambda p: p.id):
        line = json.dumps(product.to_row(), sort_keys=True, ensure_ascii=False)
        digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()
