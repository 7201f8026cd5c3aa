"""The catalog package: the demo data, the three file formats, row errors and budgets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eqs_reward import _resources
from eqs_reward.catalog import (
    CatalogError,
    SQLiteCatalog,
    catalog_digest,
    parse_budget,
    read_products,
)
from eqs_reward.offline.demo import demo_catalog, write_demo

DEMO = _resources.demo_dir() / "catalog.jsonl"


def test_the_demo_data_is_the_generators_and_says_what_it_is(tmp_path: Path) -> None:
    catalog, clicks = write_demo(tmp_path)
    for made, shipped in ((catalog, DEMO), (clicks, DEMO.with_name("clicks.jsonl"))):
        assert made.read_bytes() == shipped.read_bytes()
        header = json.loads(shipped.read_text().splitlines()[0])
        assert "made by the eqs-reward project" in header["_comment"]


def test_the_three_formats_load_the_same_catalog(tmp_path: Path) -> None:
    rows = demo_catalog(40)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flat = [{**{k: v for k, v in r.items() if k != "attributes"}, **r["attributes"]} for r in rows]
    with (tmp_path / "p.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "p.parquet")
    digests = {
        catalog_digest(read_products(tmp_path / name)) for name in ("p.jsonl", "p.csv", "p.parquet")
    }
    assert len(digests) == 1


async def test_a_bad_row_names_row_field_and_why_and_loads_nothing(tmp_path: Path) -> None:
    backend = SQLiteCatalog(tmp_path / "catalog.sqlite3")
    before = await backend.load(read_products(DEMO))
    bad = tmp_path / "bad.jsonl"
    rows = [
        {"id": "a", "title": "Glass blender", "price": 40},
        {"id": "b", "title": "", "price": "cheap"},
        {"id": "a", "title": "Again", "price": -3, "currency": "dollars"},
        {"title": "No id", "attributes": ["x"]},
    ]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CatalogError) as caught:
        read_products(bad)
    text = str(caught.value)
    for expected in (
        "row 2, title: missing",
        "row 2, price: not a number: 'cheap'",
        "row 3, price: must be a finite, non-negative number",
        "row 3, currency: not an ISO 4217 code: 'DOLLARS'",
        "row 4, id: missing",
        "row 4, attributes: expected an object",
        "nothing was loaded",
    ):
        assert expected in text, expected
    assert await backend.active() == before  # the served catalog is untouched
    await backend.close()


@pytest.mark.parametrize(
    ("text", "low", "high", "currency"),
    [
        ("TP-Link routers under $100 that support Wi-Fi 6?", None, 100.0, "USD"),
        ("Any routers below 2,500 PHP?", None, 2500.0, "PHP"),
        ("Blenders around 50 euros?", 40.0, 60.0, "EUR"),
        ("Sofas between $300 and $500?", 300.0, 500.0, "USD"),
        ("Desks for $80 or less?", None, 80.0, "USD"),
    ],
)
def test_budgets_are_read_with_their_currency(
    text: str, low: float | None, high: float | None, currency: str
) -> None:
    budget = parse_budget(text)
    assert budget is not None
    assert (budget.low, budget.high, budget.currency) == pytest.approx((low, high, currency))


@pytest.mark.parametrize("text", ["Glass jar blenders with 1000 W motors?", "Desks 32 inch wide?"])
def test_a_number_without_a_currency_or_budget_word_is_not_a_budget(text: str) -> None:
    assert parse_budget(text) is None
