"""The taught head (issue 21): fit on labels, deterministic, stored with each bank version as JSON,
the default recipe's main signal, immediate to teach, and not raised by padding or repetition.
Real wordllama embeddings and real bank stores; the stub judge where a judge is needed."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from eqs_reward._resources import fewshot_seed_dir
from eqs_reward.evaluation import roc_auc
from eqs_reward.judge.cases import Context, ExampleIn, load_seed_examples
from eqs_reward.judge.stub import StubJudge
from eqs_reward.offline.fidelity import split_cases
from eqs_reward.server import build_app
from eqs_reward.server.bank import BankVersion, SQLiteBankStore
from eqs_reward.server.heads import WordLlamaEmbedder
from eqs_reward.server.heads.taught import (
    FEATURES,
    TaughtHead,
    TaughtModel,
    held_out,
    training_cases,
    views,
)
from eqs_reward.server.settings import Settings
from eqs_reward.types import DIMENSIONS
from tests._helpers import ROOT, make_settings

TOKEN = "taught-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLOORS = json.loads((ROOT / "loadtest" / "fidelity" / "floors.json").read_text())


@pytest.fixture(scope="module")
def head() -> TaughtHead:
    return TaughtHead(WordLlamaEmbedder(), training_cases())


@pytest.fixture(scope="module")
def seed_version() -> BankVersion:
    return BankVersion(1, tuple(load_seed_examples(fewshot_seed_dir())), datetime.now(UTC))


def _score(head: TaughtHead, version: BankVersion, pairs: list[tuple[str, str]]) -> list[Any]:
    items = [(Context(query=q), [s]) for q, s in pairs]
    return [rows[0] for rows, _ in asyncio.run(head.score(items, version))]


def test_the_fit_is_deterministic_and_stored_as_json(
    head: TaughtHead, seed_version: BankVersion
) -> None:
    first = asyncio.run(head.fit(seed_version.examples))
    second = asyncio.run(head.fit(seed_version.examples))
    assert first.to_json() == second.to_json()
    again = TaughtModel.from_json(first.to_json())
    assert again == first and again.version.startswith(f"{FEATURES}/wordllama")
    assert "pickle" not in first.to_json() and json.loads(first.to_json())["format"] == FEATURES


def test_no_validation_case_is_fit_on(head: TaughtHead) -> None:
    validation = {(c["context"]["query"], c["suggestion"]) for c in split_cases("validation")}
    fitted = {(c.context.query, c.suggestion) for c in head.training}
    assert not validation & fitted
    assert all(not held_out(c.context.query) for c in head.training)
    assert len(head.training) > 200


@pytest.mark.parametrize("split", ["validation", "dev"])
def test_the_taught_head_alone_holds_its_floors(
    head: TaughtHead, seed_version: BankVersion, split: str
) -> None:
    """Deterministic (no judge): the head's own ranking of the cases it never saw, against its
    own committed floors (beside the default recipe's, which CI holds on the real judge)."""
    cases = split_cases(split)
    rows = _score(head, seed_version, [(c["context"]["query"], c["suggestion"]) for c in cases])
    auc = {d: roc_auc([c["labels"][d] for c in cases], [r[d] for r in rows]) for d in DIMENSIONS}
    good = [int(all(c["labels"][d] for d in DIMENSIONS)) for c in cases]
    auc["product"] = roc_auc(good, [math.prod(r[d] for d in DIMENSIONS) for r in rows])
    for name, floor in FLOORS["_taught_head"][split].items():
        assert auc[name] >= floor, (name, auc)


PADDINGS = {
    "repeated": lambda s: f"{s} {s}",
    "tripled": lambda s: " ".join([s] * 3),
    "padded": lambda s: s + " please" * 20,
    "dots": lambda s: s + " ......",
    "shouted": lambda s: s.upper(),
    "second sentence": lambda s: (
        s + " It must be the best one with great reviews and fast shipping."
    ),
}
#: How much padding may raise one suggestion's taught product (the mean may not rise at all).
TOLERANCE = 0.2


@pytest.mark.parametrize("name", sorted(PADDINGS))
def test_padding_and_repetition_do_not_raise_the_taught_score(
    head: TaughtHead, seed_version: BankVersion, name: str
) -> None:
    cases = split_cases("validation")
    if name == "second sentence":  # only after a complete question is the rule exact
        cases = [c for c in cases if c["suggestion"].rstrip().endswith("?")]
    pairs = [(c["context"]["query"], c["suggestion"]) for c in cases]
    padded = [(q, PADDINGS[name](s)) for q, s in pairs]
    before = [math.prod(r[d] for d in DIMENSIONS) for r in _score(head, seed_version, pairs)]
    after = [math.prod(r[d] for d in DIMENSIONS) for r in _score(head, seed_version, padded)]
    raised = np.asarray(after) - np.asarray(before)
    assert raised.max() <= TOLERANCE and raised.mean() <= 0.005, (name, raised.max())
    if name == "second sentence":
        assert raised.max() <= 1e-9


@pytest.mark.parametrize("text", ["???", "\u200b", "...", "!!!!", "🙂🙂"])
def test_text_with_no_known_word_gets_a_finite_score(
    head: TaughtHead, seed_version: BankVersion, text: str
) -> None:
    (row,) = _score(head, seed_version, [("blender", text)])
    assert all(0.0 <= row[d] <= 1.0 for d in DIMENSIONS), row


def test_views_collapse_repetition_and_cut_after_the_first_sentence() -> None:
    assert views("Which blenders under $80? please please please") == [
        "Which blenders under $80? please",
        "Which blenders under $80?",
    ]
    assert views("glass jar glass jar glass jar") == ["glass jar"]
    assert views("WHICH BLENDERS CRUSH ICE?") == ["Which blenders crush ice?"]


# -- through the service -----------------------------------------------------------------------
def _shipped_default(tmp_path: Path, **overrides: Any) -> Settings:
    """The service as shipped: no recipe named anywhere (make_settings names qualeqs)."""
    default = Settings.model_fields["default_recipe"].default
    return make_settings(tmp_path, default_recipe=default, **overrides)


def _post(client: TestClient, query: str, *suggestions: str, **options: Any) -> dict[str, Any]:
    body = {
        "items": [{"context": {"query": query}, "suggestions": list(suggestions)}],
        "options": {"k": len(suggestions), "score_mode": "soft", **options},
    }
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_shipped_default_recipe_uses_the_taught_head(tmp_path: Path) -> None:
    assert Settings.model_fields["default_recipe"].default == "qualeqs-taught"
    stub = StubJudge()
    app = build_app(_shipped_default(tmp_path), judge_transport=httpx.ASGITransport(stub.app()))
    with TestClient(app) as client:
        body = _post(client, "blender for smoothies", "Which blenders under $80 can crush ice?")
        recipe = body["meta"]["recipe"]
        assert recipe["id"] == "qualeqs-taught"
        assert recipe["heads"]["taught"].startswith(f"{FEATURES}/wordllama")
        scored = body["results"][0]["suggestions"][0]
        assert {f"taught.{d}" for d in DIMENSIONS} <= set(scored["signals"])
        # the response's dimensions are the recipe's, and the reward is their product
        assert math.prod(scored[d] for d in DIMENSIONS) == pytest.approx(scored["reward"])
        paper = _post(
            client, "blender", "Which blenders under $80 can crush ice?", recipe="qualeqs"
        )
        assert paper["meta"]["recipe"]["id"] == "qualeqs"  # the paper's recipe, one option away


async def test_a_new_bank_version_gets_its_model_stored_at_once(tmp_path: Path) -> None:
    stub = StubJudge()
    settings = _shipped_default(tmp_path, admin_token=TOKEN)
    app = build_app(settings, judge_transport=httpx.ASGITransport(stub.app()))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            example = {
                "context": {"query": "standing desk"},
                "suggestion": "Which standing desks under $300 have a memory keypad?",
                "labels": {"answerability": 1, "factuality": 1, "information_gain": 1},
            }
            added = await client.post("/v1/fewshot", json={"examples": [example]}, headers=AUTH)
            assert added.status_code == 201, added.text
            version = added.json()["version"]
            store = app.state.bank
            family = app.state.scoring.heads.taught.family
            for _ in range(200):  # fitted in the background, the write's answer did not wait
                stored = await store.get_taught(version, family)
                if stored is not None:
                    break
                await asyncio.sleep(0.05)
        assert stored is not None and TaughtModel.from_json(stored).examples > 200


def test_teaching_is_immediate_for_the_text_and_its_paraphrases(tmp_path: Path) -> None:
    """One labeled bad case changes the reward of that text, and of a close paraphrase, on
    the next request: no manual retrain."""
    stub = StubJudge()
    settings = _shipped_default(tmp_path, admin_token=TOKEN)
    app = build_app(settings, judge_transport=httpx.ASGITransport(stub.app()))
    query = "I want to buy a router"
    bad = "Which wifi routers under $20 support WiFi 7 and cover 5,000 sq ft?"
    paraphrase = "Which wifi routers under $20 support WiFi 7 and cover 5000 sq ft?"
    with TestClient(app) as client:
        before = _post(client, query, bad)["results"][0]["suggestions"][0]
        example = {
            "context": {"query": query},
            "suggestion": bad,
            "labels": {"answerability": 1, "factuality": 0, "information_gain": 1},
            "rationale": "no WiFi 7 router covering that much sells for $20",
        }
        added = client.post("/v1/fewshot", json={"examples": [example]}, headers=AUTH)
        assert added.status_code == 201, added.text
        after = _post(client, query, bad)["results"][0]["suggestions"][0]
        near = _post(client, query, paraphrase)["results"][0]["suggestions"][0]
    assert before["signals"]["taught.factuality"] > 0.5
    for scored in (after, near):
        assert scored["signals"]["taught.factuality"] == pytest.approx(0.05)
        assert scored["signals"]["taught.answerability"] == pytest.approx(0.95)
        assert scored["reward"] < before["reward"] / 4


async def test_a_version_written_around_the_service_is_fitted_on_first_use(
    tmp_path: Path,
) -> None:
    store = SQLiteBankStore(tmp_path / "fewshot.sqlite3")
    await store.init(load_seed_examples(fewshot_seed_dir()))
    imported = [
        ExampleIn.model_validate(
            {
                "context": {"query": "office chair"},
                "suggestion": "Which mesh office chairs under $200 have lumbar support?",
                "labels": {"answerability": 1, "factuality": 1, "information_gain": 1},
            }
        )
    ]
    written = await store.add(imported, note="as 'eqs-reward bank import' writes")
    await store.close()
    stub = StubJudge()
    app = build_app(_shipped_default(tmp_path), judge_transport=httpx.ASGITransport(stub.app()))
    with TestClient(app) as client:
        body = _post(client, "office chair", "Any chairs?", fewshot_version=written.version)
        assert body["meta"]["recipe"]["heads"]["taught"].startswith(FEATURES)
        family = app.state.scoring.heads.taught.family
        stored = client.portal.call(app.state.bank.get_taught, written.version, family)  # type: ignore[union-attr]
    assert stored is not None


def test_no_embedder_is_a_503_naming_the_fix(tmp_path: Path) -> None:
    stub = StubJudge()
    settings = _shipped_default(
        tmp_path,
        embeddings_url="http://127.0.0.1:9/v1",
        embeddings_model="e",
        embeddings_timeout_s=0.5,
    )
    app = build_app(settings, judge_transport=httpx.ASGITransport(stub.app()))
    with TestClient(app) as client:
        body = {
            "items": [{"context": {"query": "desk"}, "suggestions": ["Which desks under $300?"]}],
            "options": {"k": 1},
        }
        response = client.post("/v1/score", json=body)
        assert response.status_code == 503, response.text
        assert "EQS_REWARD_EMBEDDINGS_URL" in response.json()["error"]["message"]
        fine = client.post("/v1/score", json={**body, "options": {"k": 1, "recipe": "qualeqs"}})
        assert fine.status_code == 200
