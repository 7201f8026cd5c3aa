"""The retrieval head on both catalog backends (SQLite FTS5 in a file of the test's own, and
PostgreSQL for real: 127.0.0.1:5432, each test its own database), and the grounded recipe
through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from eqs_reward import _resources
from eqs_reward.catalog import (
    CatalogBackend,
    PostgresCatalog,
    read_products,
)
from eqs_reward.judge.cases import Context
from eqs_reward.judge.stub import StubJudge
from eqs_reward.offline.demo import demo_catalog
from eqs_reward.server import build_app
from eqs_reward.server.heads.retrieval import RetrievalHead
from tests._helpers import assert_envelope, make_settings

DEMO = _resources.demo_dir() / "catalog.jsonl"
ROUTER = "I want to buy a router"


async def signals(head: RetrievalHead, *suggestions: str, **context: Any) -> list[dict[str, float]]:
    ((per, _),) = await head.score([(Context(query=ROUTER, **context), list(suggestions))])
    return per


async def test_the_retrieval_head_grounds_suggestions_in_the_catalog(
    catalog: CatalogBackend,
) -> None:
    head = RetrievalHead(catalog)
    too_cheap, affordable, unknown_brand, known_brand, nothing = await signals(
        head,
        "Any Netgear Wi-Fi 6 routers under $100?",  # the shop's cheapest router: $149.99
        "Netgear Wi-Fi 6 routers under $300?",
        "TP-Link mesh routers?",  # a brand the shop does not sell
        "Which ASUS gaming routers are tri-band?",
        "Do you have snorkels for kayaks?",  # nothing like it in the shop
    )
    assert too_cheap["budget"] == 0.0 < 0.5 < affordable["budget"]
    assert unknown_brand["brand"] == 0.0 and known_brand["brand"] == 1.0
    assert nothing["hits"] == nothing["match"] == 0.0
    assert known_brand["hits"] == known_brand["match"] == 1.0
    assert unknown_brand["match"] == 0.5  # "tp" and "link" are in no product
    # No budget stated, no brand named: nothing to contradict.
    assert nothing["budget"] == nothing["brand"] == 1.0


async def test_viewed_products_move_the_consistency_signal(catalog: CatalogBackend) -> None:
    head = RetrievalHead(catalog)
    viewed = [p.id for p in await catalog.search(["asus", "gaming", "router"], 3)]
    titles = [p.title for p in await catalog.get(viewed)]
    near, far = await signals(
        head, "Which ASUS gaming routers?", "Any velvet sofas?", viewed_products=viewed
    )
    assert near["consistency"] > 0.5 and far["consistency"] == 0.0
    by_title, _ = await signals(
        head, "Which ASUS gaming routers?", "Any velvet sofas?", viewed_products=titles
    )
    assert by_title["consistency"] == near["consistency"]  # titles resolve to the same ids
    alone, _ = await signals(head, "Which ASUS gaming routers?", "Any velvet sofas?")
    assert alone["consistency"] == 1.0  # nothing viewed: nothing to be consistent with


async def test_set_diversity_is_minielms_d(catalog: CatalogBackend) -> None:
    head = RetrievalHead(catalog)
    ((_, echo),) = await head.score([(Context(query="Netgear routers"), ["Netgear routers?"])])
    assert echo["diversity"] == 0.0  # it retrieves only what the query already did
    ((_, varied),) = await head.score(
        [(Context(query="Netgear routers"), ["Any ASUS tri-band routers?", "Eero mesh routers?"])]
    )
    assert varied["diversity"] > 0.5 and 0.0 < varied["coverage"] <= 1.0


async def test_a_new_catalog_version_changes_the_heads_version_and_its_cache(
    catalog: CatalogBackend,
) -> None:
    head = RetrievalHead(catalog)
    first = await head.head_version()
    (before,) = await signals(head, "Any Netgear Wi-Fi 6 routers under $100?")
    rows = demo_catalog()
    rows.append(
        {
            "id": "cheap-1",
            "title": "Netgear Wi-Fi 6 router AX1800",
            "brand": "Netgear",
            "category": "router",
            "price": 79.99,
            "currency": "USD",
        }
    )
    path_rows = [read_products_row(r) for r in rows]
    await catalog.load(path_rows)
    head._info.expire()  # as after the 5 s re-read
    assert await head.head_version() != first
    (after,) = await signals(head, "Any Netgear Wi-Fi 6 routers under $100?")
    assert before["budget"] == 0.0 < after["budget"]


def read_products_row(row: dict[str, Any]) -> Any:
    from eqs_reward.catalog import Product

    return Product(
        row["id"], row["title"], row.get("brand"), row.get("category"), row.get("price"),
        row.get("currency", "USD"), dict(row.get("attributes", {})),
    )  # fmt: skip


def test_the_grounded_recipe_through_the_api(tmp_path: Path, postgres_url: str) -> None:
    """On PostgreSQL, through /v1/score: 503 naming the fix before a catalog is loaded, then
    every retrieval signal; the judge's verdicts and the catalog's multiply."""
    stub = StubJudge()
    settings = make_settings(
        tmp_path, catalog_backend="postgres", catalog_postgres_url=postgres_url
    )
    app = build_app(settings, judge_transport=httpx.ASGITransport(app=stub.app()))
    body = {
        "items": [
            {
                "context": {"query": ROUTER},
                "suggestions": [
                    "Any Netgear Wi-Fi 6 routers under $100?",
                    "Netgear Wi-Fi 6 routers under $300?",
                    "Which TP-Link mesh routers have three bands?",
                ],
            }
        ],
        "options": {"recipe": "qualeqs-grounded"},
    }
    with TestClient(app) as client:
        message = assert_envelope(client.post("/v1/score", json=body), 503, "unavailable")
        assert "eqs-reward catalog load" in message
        import asyncio

        async def load() -> None:
            backend = PostgresCatalog(postgres_url)
            await backend.load(read_products(DEMO))
            await backend.close()

        asyncio.run(load())
        for head in client.app.state.scoring.heads._retrieval.values():  # type: ignore[attr-defined]
            head._info.expire()  # as after the 5 s re-read
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["meta"]["recipe"]["heads"]["retrieval"].startswith("retrieval-v1/catalog-1-")
        (result,) = data["results"]
        cheap, fine, unknown = result["suggestions"]
        assert cheap["answerability"] == 1.0 and cheap["signals"]["retrieval.budget"] == 0.0
        assert cheap["reward"] == 0.0  # the judge passed it; the catalog says it cannot be met
        assert fine["reward"] > 0.5
        assert unknown["signals"]["retrieval.brand"] == 0.0 and unknown["reward"] == 0.0
        assert set(result["set_signals"]) == {"retrieval.diversity", "retrieval.coverage"}
