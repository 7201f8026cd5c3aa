"""Reward heads and recipes through the real app (stub judge in-process, real wordllama
embeddings, real Redis where keys are shared): the default recipe is QualEQS exactly, the blended
one returns every head's signal, and a recipe's version is in the keys of exactly its scores."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from eqs_reward import _resources
from eqs_reward.judge.stub import StubJudge
from eqs_reward.rewards import set_reward, suggestion_reward
from eqs_reward.server import build_app
from eqs_reward.server.recipes import Recipe, RecipeError, load_recipes
from tests._helpers import GOOD, GOOD2, SHORT, assert_envelope, item, make_settings, score_body
from tests.server import golden_default

GOLDEN = Path(__file__).with_name("golden_default.json")
BLEND_SIGNALS = [
    "judge.answerability",
    "judge.factuality",
    "judge.information_gain",
    "exclusivity.novelty",
    "exclusivity.distinctness",
    "shopper.tap",
]
ROUTER = "I want to buy a router"
ECHO = "What kind of router do you want to buy?"  # the example: gain 0.56 from the judge
ROUTERS = [
    ECHO,
    "Which Wi-Fi 6 routers under $100 cover a 3-bedroom house?",
    "Which routers under $100 cover a three bedroom house?",
    "Is a TP-Link mesh system better than one router for a two-story home?",
]


def _strip_new(value: Any) -> Any:
    """An answer as it was before recipes: without the fields the contract added for them."""
    if isinstance(value, dict):
        out = {k: _strip_new(v) for k, v in value.items() if k not in ("signals", "set_signals")}
        if "meta" in out:
            out["meta"].pop("recipe", None)
        if "extra_logs" in out:
            out["extra_logs"] = {
                k: v
                for k, v in out["extra_logs"].items()
                if "." not in k and not k.startswith("recipe")
            }
        return out
    if isinstance(value, list):
        return [_strip_new(v) for v in value]
    return value


@pytest.mark.parametrize("named", [False, True])
def test_a_request_naming_no_recipe_gets_exactly_what_it_got_before(
    make_client: Any, stub: StubJudge, named: bool
) -> None:
    """The answers recorded from the service before recipes (tests/server/golden_default.py),
    replayed on the same stub answers: every field they had is identical, to the last bit."""
    client = make_client()

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if named and path == "/v1/score":
            body = {**body, "options": {**body.get("options", {}), "recipe": "qualeqs"}}
        if named and path == "/get_reward":
            path += "?recipe=qualeqs"
        response = client.post(path, json=body)
        return response.status_code, response.json()

    def set_pattern(pattern: str) -> None:
        stub.behaviour.fail_pattern = pattern

    answers = golden_default.replay(post, set_pattern)
    before = json.loads(GOLDEN.read_text())
    assert _strip_new(answers) == before
    # What was added is the default recipe's: the judge's three signals, equal to the fields.
    first = answers[0]["body"]["results"][0]
    assert first["set_signals"] == {}
    for suggestion in first["suggestions"]:
        assert suggestion["signals"] == {
            f"judge.{d}": suggestion[d] for d in ("answerability", "factuality", "information_gain")
        }
    assert answers[0]["body"]["meta"]["recipe"]["id"] == "qualeqs"


@given(
    st.lists(
        st.tuples(*[st.floats(0, 1, allow_nan=False)] * 3),
        min_size=0,
        max_size=8,
    ),
    st.sampled_from([0.0, 1.0]),
)
def test_the_default_recipe_is_the_reward_math_to_the_last_bit(
    scores: list[tuple[float, float, float]], r_f: float
) -> None:
    recipe = load_recipes(_resources.prompts_dir() / "recipes")["qualeqs"]
    rows = []
    for a, f, i in scores:
        signals = {"judge.answerability": a, "judge.factuality": f, "judge.information_gain": i}
        reward = recipe.suggestion_reward(signals)
        assert reward == suggestion_reward(a, f, i)
        rows.append({**signals, "reward": reward})
    assert recipe.set_reward(r_f, rows, {}) == set_reward(r_f, [r["reward"] for r in rows])


def test_the_blended_recipe_returns_every_signal_and_combines_them_as_written(
    client: TestClient,
) -> None:
    body = score_body(
        item(ROUTER, *ROUTERS[:3], id="router"),
        item("I want a blender", GOOD, GOOD2, SHORT, id="blender"),
        recipe="qualeqs-blend",
        k=None,
    )
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["meta"]["recipe"] == {
        "id": "qualeqs-blend",
        "version": 1,
        "signals": BLEND_SIGNALS,
        "set_signals": ["exclusivity.diversity", "shopper.any_tap"],
        "heads": {
            "judge": "qualeqs-v2",
            "exclusivity": "exclusivity-v1/wordllama-l2_supercat-256/0.75-0.85",
            "shopper": "shopper-v1",
        },
    }
    for result in data["results"]:
        assert result["status"] == "ok"
        rewards = []
        for s in result["suggestions"]:
            v = s["signals"]
            assert list(v) == BLEND_SIGNALS and all(0.0 <= x <= 1.0 for x in v.values())
            quality = math.prod(v[n] for n in BLEND_SIGNALS[:5])
            assert s["reward"] == pytest.approx(0.8 * quality + 0.2 * v["shopper.tap"])
            assert s["answerability"] == v["judge.answerability"]
            rewards.append(s["reward"])
        taps = [s["signals"]["shopper.tap"] for s in result["suggestions"]]
        any_tap = 1 - math.prod(1 - t for t in taps)
        diversity = result["set_signals"]["exclusivity.diversity"]
        assert result["set_signals"]["shopper.any_tap"] == pytest.approx(any_tap)
        expected = (0.8 * sum(rewards) / len(rewards) + 0.2 * any_tap) * (0.5 + 0.5 * diversity)
        assert result["reward"] == pytest.approx(result["format_reward"] * expected)
    router = data["results"][0]["suggestions"]
    # The echo of the query and the two near-duplicates are discounted; the judge passed them.
    assert router[0]["signals"]["exclusivity.novelty"] < 0.2
    assert router[0]["information_gain"] == 1.0
    assert router[1]["signals"]["exclusivity.distinctness"] < 0.5
    assert router[2]["signals"]["exclusivity.distinctness"] < 0.5
    assert router[0]["reward"] < 0.3 < data["results"][1]["suggestions"][0]["reward"]


def test_get_reward_pins_the_recipe_and_logs_every_signal(client: TestClient) -> None:
    completion = json.dumps({"options": ROUTERS[1:4]})
    body = {"query": ["p" + completion], "prompts": ["p"], "labels": [ROUTER]}
    response = client.post("/get_reward?recipe=qualeqs-blend", json=body)
    assert response.status_code == 200, response.text
    logs = response.json()["extra_logs"]
    for name in (*BLEND_SIGNALS, "exclusivity.diversity", "shopper.any_tap"):
        assert len(logs[name]) == 1 and 0.0 <= logs[name][0] <= 1.0, name
    assert logs["recipe:qualeqs-blend"] == [1.0] and logs["recipe_version"] == [1.0]
    plain = client.post("/get_reward", json=body).json()
    assert plain["extra_logs"]["recipe:qualeqs"] == [1.0]
    assert "shopper.tap" not in plain["extra_logs"]


def test_an_unknown_recipe_is_a_422_naming_the_known_ones(client: TestClient) -> None:
    response = client.post(
        "/v1/score", json=score_body(item("desk", GOOD), k=1, recipe="qualeqs-blnd")
    )
    message = assert_envelope(response, 422, "invalid_request")
    assert "qualeqs-blnd" in message and "qualeqs-blend" in message
    body = {"query": ["p{}"], "prompts": ["p"], "labels": ["desk"]}
    assert_envelope(client.post("/get_reward?recipe=nope", json=body), 422)


def test_get_recipes_lists_them_with_their_heads(client: TestClient) -> None:
    response = client.get("/v1/recipes")
    assert response.status_code == 200
    data = response.json()
    assert data["default"] == "qualeqs"
    by_id = {r["id"]: r for r in data["recipes"]}
    assert set(by_id) == {
        "qualeqs",
        "qualeqs-blend",
        "qualeqs-grounded",
        "qualeqs-clicks",
        "qualeqs-taught",
    }
    assert list(by_id["qualeqs"]["heads"]) == ["judge"]
    blend = by_id["qualeqs-blend"]["heads"]
    assert blend["shopper"]["settings"] == {"prompt": "shopper-v1"}
    assert blend["exclusivity"]["set_signals"] == ["diversity"]
    assert "/v1/recipes" in client.get("/openapi.json").json()["paths"]


def test_a_failed_head_is_flagged_never_an_error_and_never_cached(
    client: TestClient, stub: StubJudge
) -> None:
    stub.behaviour.fail_keys = "t"  # the shopper's calls fail; the judge's succeed
    body = score_body(item("desk", GOOD, GOOD2), k=2, recipe="qualeqs-blend")
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["status"] == "failed" and result["reward"] is None
    for s in result["suggestions"]:
        assert s["status"] == "failed" and s["reason"] == "server_error" and s["reward"] is None
        assert s["signals"]["shopper.tap"] is None
        assert s["signals"]["judge.answerability"] == 1.0  # what did run is still reported
    assert result["set_signals"]["shopper.any_tap"] is None
    metrics = client.get("/metrics").text
    assert 'eqs_reward_head_failures_total{head="shopper",reason="server_error"}' in metrics
    stub.behaviour.fail_keys = ""
    again = client.post("/v1/score", json=body).json()["results"][0]
    assert again["status"] == "ok"
    assert [s["cached"] for s in again["suggestions"]] == [False, False]  # the shopper re-ran
    # The judge's verdicts were kept: only the shopper was asked again.
    assert 'eqs_reward_head_duration_seconds_count{head="judge"} 2.0' in (
        client.get("/metrics").text
    )


def test_an_unreachable_embeddings_endpoint_fails_the_suggestions_not_the_request(
    make_client: Any,
) -> None:
    client = make_client(embeddings_url="http://127.0.0.1:9/v1", embeddings_model="m")
    body = score_body(item("desk", GOOD, GOOD2), k=2, recipe="qualeqs-blend", on_failure="zero")
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["status"] == "failed" and result["reward"] == 0.0
    assert {s["reason"] for s in result["suggestions"]} == {"embedding"}
    assert 'head="exclusivity",reason="embedding"' in client.get("/metrics").text
    # A recipe without the head never touches the embedder.
    plain = client.post("/v1/score", json=score_body(item("desk", GOOD, GOOD2), k=2))
    assert plain.json()["results"][0]["status"] == "ok"


async def test_an_openai_compatible_embeddings_endpoint_serves_the_head() -> None:
    """The endpoint variant, against an OpenAI-shaped server answering wordllama's vectors in
    reverse order (the vLLM-served variant runs in tests/vllm/test_scoring.py)."""
    from eqs_reward.server.heads import OpenAIEmbedder, WordLlamaEmbedder

    local = WordLlamaEmbedder()
    seen: list[Any] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        vectors = await local.embed(body["input"])
        data = [{"index": n, "embedding": v.tolist()} for n, v in enumerate(vectors)]
        return httpx.Response(200, json={"data": data[::-1], "model": body["model"]})

    remote = OpenAIEmbedder("http://emb/v1", "e5", transport=httpx.MockTransport(handler))
    texts = [ROUTER, ECHO, ROUTERS[1]]
    got = await remote.embed(texts)
    want = await local.embed(texts)
    assert (abs(got - want) < 1e-5).all()  # order restored from "index"
    await remote.embed(texts)
    assert len(seen) == 1 and seen[0]["model"] == "e5"  # the second time from its cache
    await remote.aclose()


def _prompts_copy(tmp_path: Path, blend_version: int) -> Path:
    folder = tmp_path / f"prompts-{blend_version}"
    if not folder.exists():
        shutil.copytree(_resources.prompts_dir(), folder)
    path = folder / "recipes" / "qualeqs-blend.toml"
    path.write_text(path.read_text().replace("version = 1\n", f"version = {blend_version}\n", 1))
    return folder


def test_a_recipe_version_changes_the_keys_of_exactly_its_scores(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Two deployments sharing one real Redis: the second has the blended recipe at version 2.
    Its default-recipe scores all come from the first's cache; its blended ones are asked
    again, judge and shopper alike."""
    prefix = redis_prefix
    shared = redis.Redis.from_url(redis_url)
    body_default = score_body(item("desk", GOOD, GOOD2, SHORT))
    body_blend = score_body(item("desk", GOOD, GOOD2, SHORT), recipe="qualeqs-blend")

    def deployment(version: int) -> tuple[StubJudge, TestClient]:
        stub = StubJudge()
        settings = make_settings(
            tmp_path / f"v{version}",
            prompts_dir=_prompts_copy(tmp_path, version),
            redis_url=redis_url,
            redis_key_prefix=prefix,
            cache_max_entries=0,  # only Redis: what a fresh replica sees
        )
        app = build_app(settings, judge_transport=httpx.ASGITransport(app=stub.app()))
        return stub, TestClient(app)

    try:
        stub1, first = deployment(1)
        with first:
            for body in (body_default, body_blend):
                assert first.post("/v1/score", json=body).status_code == 200
        assert stub1.calls == 3 + 6  # the default's judge; the blend's judge and shopper
        keys_after_first = set(shared.scan_iter(f"{prefix}*"))
        assert len(keys_after_first) == 9
        stub2, second = deployment(2)
        with second:
            same = second.post("/v1/score", json=body_default).json()["results"][0]
            assert all(s["cached"] for s in same["suggestions"])
            assert stub2.calls == 0  # the default recipe's scores: untouched
            blended = second.post("/v1/score", json=body_blend).json()
            assert blended["meta"]["recipe"]["version"] == 2
            assert not any(s["cached"] for s in blended["results"][0]["suggestions"])
            assert stub2.calls == 6  # the blended recipe's: all new keys
        assert len(set(shared.scan_iter(f"{prefix}*"))) == 9 + 6
    finally:
        shared.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            'suggestion_reward = { product = ["judge.answerability", "shopper.tap"] }',
            "not a signal",
        ),
        ('suggestion_reward = { exec = "import os" }', "unknown operation"),
        ("suggestion_reward = \"__import__('os')\"", "not a signal"),
        ('suggestion_reward = { mean_over = "reward" }', "belong to the set"),
        ("suggestion_reward = { weighted = { terms = [1.0], weights = [true] } }", "weights"),
        ('id = "other"', "file name"),
        ("version = 0", "positive integer"),
        ('[heads.judge]\nprompt = "x"', "no setting"),
        (
            'suggestion_reward = { stacked = { terms = ["judge.answerability"], coef = [1], '
            "intercept = 0, threshold = 1.5, power = 1 } }",
            "threshold",
        ),
        (
            'suggestion_reward = { stacked = { terms = ["judge.answerability"], coef = [], '
            "intercept = 0, threshold = 0.5, power = 1 } }",
            "as many coefficients",
        ),
        (
            'suggestion_reward = { stacked = { terms = ["judge.answerability"], coef = [1], '
            "intercept = 0, threshold = 0.5, power = 0 } }",
            "power",
        ),
        (
            'suggestion_reward = { stacked = { terms = ["judge.answerability"], coef = [1], '
            "intercept = nan, threshold = 0.5, power = 1 } }",
            "finite",
        ),
        (
            'suggestion_reward = { stacked = { terms = ["judge.answerability"], coef = [1] } }',
            "needs",
        ),
    ],
)
def test_a_recipe_file_is_checked_and_never_run(tmp_path: Path, change: str, message: str) -> None:
    fields = {
        "id": '"bad"',
        "version": "1",
        "suggestion_reward": '{ product = ["judge.answerability"] }',
        "set_reward": '{ product = ["format", { mean_over = "reward" }] }',
    }
    heads = "[heads.judge]\n"
    if change.startswith("[heads"):
        heads = change + "\n"
    else:
        key, _, value = change.partition(" = ")
        fields[key] = value
    path = tmp_path / "bad.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in fields.items()) + heads)
    with pytest.raises(RecipeError, match=message):
        Recipe.from_toml(path)


def test_gqr_list_formula_and_weighted_terms(tmp_path: Path) -> None:
    path = tmp_path / "gqr.toml"
    path.write_text(
        'id = "gqr"\nversion = 3\n'
        'suggestion_reward = "shopper.tap"\n'
        'set_reward = { weighted_sum = { terms = ["format", { any_over = "shopper.tap" }], '
        "weights = [0.5, 1.0] } }\n"
        "[heads.shopper]\n"
    )
    recipe = Recipe.from_toml(path)
    rows = [{"shopper.tap": p, "reward": p} for p in (0.5, 0.2, 0.1)]
    assert recipe.key == "gqr@3"
    assert recipe.set_reward(1.0, rows, {}) == pytest.approx(0.5 + 1 - 0.5 * 0.8 * 0.9)


def test_a_stacked_term_is_a_logistic_model_over_log_odds(tmp_path: Path) -> None:
    """``stacked``: sigmoid(intercept + sum coef * logit(term)) to its power (its threshold is
    stored, not applied); a hard 0 or 1 is clipped, never an infinite log-odds; the judge is
    asked for probabilities in either mode."""
    path = tmp_path / "stack.toml"
    path.write_text(
        'id = "stack"\nversion = 1\n'
        'suggestion_reward = { product = [{ stacked = { terms = ["judge.factuality", '
        '"taught.factuality"], coef = [0.5, 2.0], intercept = -1.0, threshold = 0.6, '
        "power = 2 } }] }\n"
        'set_reward = { product = ["format", { mean_over = "reward" }] }\n'
        "[heads.judge]\n[heads.taught]\n"
    )
    recipe = Recipe.from_toml(path)

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    signals = {"judge.factuality": 0.3, "taught.factuality": 0.8}
    p = 1 / (1 + math.exp(-(-1.0 + 0.5 * logit(0.3) + 2.0 * logit(0.8))))
    assert recipe.suggestion_reward(signals) == pytest.approx(p**2)
    assert recipe.dimensions(signals) is None  # one term, not one per dimension
    low = {"judge.factuality": 0.0, "taught.factuality": 0.1}
    assert 0.0 < recipe.suggestion_reward(low) < 1e-3
    high = {"judge.factuality": 1.0, "taught.factuality": 1.0}
    assert math.isfinite(recipe.suggestion_reward(high))
    assert recipe.judge_mode("binary") == "soft"  # a stacker reads probabilities


def test_the_shipped_default_recipe_is_the_product_of_its_stacked_dimensions() -> None:
    recipe = load_recipes(_resources.prompts_dir() / "recipes")["qualeqs-taught"]
    for value in [n / 10 for n in range(11)]:
        signals = {
            f"{h}.{d}": value
            for h in ("judge", "taught")
            for d in ("answerability", "factuality", "information_gain")
        }
        dimensions = recipe.dimensions(signals)
        assert dimensions is not None and all(0.0 < v <= 1.0 for v in dimensions.values())
        assert recipe.suggestion_reward(signals) == pytest.approx(math.prod(dimensions.values()))


def test_a_served_recipe_description_is_the_recipe_again() -> None:
    """Offline measures rebuild the recipe a server runs from GET /v1/recipes."""
    for recipe in load_recipes(_resources.prompts_dir() / "recipes").values():
        again = Recipe.from_description(json.loads(json.dumps(recipe.describe())))
        assert (again.key, again.heads, again.suggestion, again.set, again.fit) == (
            recipe.key,
            recipe.heads,
            recipe.suggestion,
            recipe.set,
            recipe.fit,
        )
