"""A stacking recipe fit for another judge is refit in the background for this one
(``eqs_reward.server.refit``), through the real app with the stub as "another judge"."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eqs_reward.judge.stub import StubJudge
from eqs_reward.server import refit
from eqs_reward.server.heads.taught import FEATURES
from eqs_reward.server.recipes import FitFor, Recipe, load_recipes
from eqs_reward.server.refit import refittable
from tests._helpers import item, metric, score_body

TAUGHT = "qualeqs-taught"
SHIPPED = load_recipes(Path(__file__).parents[2] / "prompts" / "recipes")[TAUGHT]
SHIPPED_TEXT = (Path(__file__).parents[2] / "prompts" / "recipes" / f"{TAUGHT}.toml").read_text()
EMBEDDED = "smollm2-135m-instruct"
WORDLLAMA = f"{FEATURES}/wordllama-l2_supercat-256"
#: Where a service on the stub judge and wordllama keeps its fits (under its data dir).
STUB_FITS = Path("recipe-fits") / f"stub--qualeqs-v2--{FEATURES}_wordllama-l2_supercat-256"


def recipe(client: TestClient) -> dict[str, Any]:
    listing = client.get("/v1/recipes").json()
    return next(r for r in listing["recipes"] if r["id"] == TAUGHT)  # type: ignore[no-any-return]


def refit_done(client: TestClient, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(client, 'eqs_reward_recipe_refits_total{outcome="done"') >= 1:
            return recipe(client)
        time.sleep(0.2)
    raise AssertionError("no refit within the timeout")


def test_the_shipped_recipe_is_fit_for_the_embedded_judge_and_wordllama() -> None:
    assert SHIPPED.fit_for(FitFor(EMBEDDED, "qualeqs-v2", WORDLLAMA))
    assert not SHIPPED.fit_for(FitFor("stub", "qualeqs-v2", WORDLLAMA))
    assert not SHIPPED.fit_for(FitFor(EMBEDDED, "qualeqs-v1", WORDLLAMA))
    assert not SHIPPED.fit_for(FitFor(EMBEDDED, "qualeqs-v2", f"{FEATURES}/openai:m"))
    assert refittable(SHIPPED)


def test_a_fit_that_names_no_taught_head_is_taken_as_fit_for_any(tmp_path: Path) -> None:
    """Recipes written before ``[fit]`` named the taught head keep working as they did."""
    older = tmp_path / f"{TAUGHT}.toml"
    older.write_text(SHIPPED_TEXT.replace(f'taught = "{WORDLLAMA}"\n', ""))
    recipe = Recipe.from_toml(older)
    assert "taught" not in (recipe.fit or {})
    assert recipe.fit_for(FitFor(EMBEDDED, "qualeqs-v2", f"{FEATURES}/openai:m"))


def test_a_service_embedding_with_another_model_finds_the_recipe_stale(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    """The same judge and prompt, another embedder: the stacker weighs the taught head's
    log-odds as wordllama's regressions spread them, so the recipe is refit (here: reported)."""
    same = make_client(judge_model=EMBEDDED)
    assert metric(same, 'eqs_reward_recipe_fit_stale{recipe="qualeqs-taught"}') == 0
    with caplog.at_level(logging.WARNING, logger="eqs_reward.refit"):
        other = make_client(
            judge_model=EMBEDDED,
            embeddings_url="http://127.0.0.1:9/v1",
            embeddings_model="m",
            embeddings_timeout_s=0.5,
        )
    assert metric(other, 'eqs_reward_recipe_fit_stale{recipe="qualeqs-taught"}') == 1
    assert f"taught head {WORDLLAMA}; this service runs judge {EMBEDDED}" in caplog.text
    assert f"taught head {FEATURES}/openai:m" in caplog.text


def test_a_recipe_fit_for_another_judge_is_refit_and_kept(
    make_client: Callable[..., TestClient], stub: StubJudge, tmp_path: Path
) -> None:
    client = make_client(recipe_refit="background")
    fitted = refit_done(client)
    assert fitted["version"] == SHIPPED.version + 1
    assert fitted["fit"]["judge_model"] == "stub"
    assert fitted["fit"]["prompt_version"] == "qualeqs-v2"
    assert fitted["fit"]["refit_of"] == SHIPPED.version
    # 691 fitting cases less the bank's examples, every one judged
    assert fitted["fit"]["cases"] > 600 and stub.calls >= fitted["fit"]["cases"]
    assert metric(client, 'eqs_reward_recipe_fit_stale{recipe="qualeqs-taught"}') == 0
    stored = tmp_path / STUB_FITS / f"{TAUGHT}.toml"
    assert stored.is_file()
    # requests after the swap use (and name) the refit
    body = score_body(item("gaming laptop", "Which laptops under $900 have an RTX 4060?"))
    body["options"]["recipe"] = TAUGHT
    answer = client.post("/v1/score", json=body).json()
    assert answer["meta"]["recipe"]["version"] == fitted["version"]
    # a restart on the same data dir serves the stored fit at once, without judging anything
    calls = stub.calls
    again = make_client(recipe_refit="background")
    assert recipe(again)["version"] == fitted["version"]
    assert metric(again, 'eqs_reward_recipe_fit_stale{recipe="qualeqs-taught"}') == 0
    time.sleep(0.5)
    assert stub.calls == calls
    assert metric(again, "eqs_reward_recipe_refits_total") == 0


def test_the_refit_waits_for_a_judge_still_starting(
    make_client: Callable[..., TestClient], stub: StubJudge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedded judge takes about a minute to start: the refit asks nothing of it until
    it answers its readiness probe, then refits (not 691 failed calls and a backoff)."""
    monkeypatch.setattr(refit, "JUDGE_WAIT_S", 0.05)
    stub.behaviour.starting = True
    client = make_client(recipe_refit="background")
    time.sleep(1.0)
    assert stub.calls == 0
    assert metric(client, "eqs_reward_recipe_refits_total") == 0
    stub.behaviour.starting = False
    assert refit_done(client)["fit"]["judge_model"] == "stub"
    assert metric(client, 'eqs_reward_recipe_refits_total{outcome="failed"') == 0


def test_with_refit_off_a_stale_recipe_is_only_reported(
    make_client: Callable[..., TestClient],
    stub: StubJudge,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="eqs_reward.refit"):
        client = make_client(recipe_refit="off")
    assert recipe(client)["version"] == SHIPPED.version
    assert metric(client, 'eqs_reward_recipe_fit_stale{recipe="qualeqs-taught"}') == 1
    assert metric(client, 'eqs_reward_recipe_fit_stale{recipe="qualeqs"}') == 0
    assert "judge smollm2-135m-instruct with prompt qualeqs-v2" in caplog.text
    assert "eqs-reward fidelity fit" in caplog.text
    assert stub.calls == 0 and not (tmp_path / "recipe-fits").exists()


def test_a_refit_the_judge_fails_is_retried_and_serving_goes_on(
    make_client: Callable[..., TestClient], stub: StubJudge
) -> None:
    stub.behaviour.fail_next = 10**9
    client = make_client(recipe_refit="background", judge_max_retries=0)
    deadline = time.monotonic() + 60
    while metric(client, 'eqs_reward_recipe_refits_total{outcome="failed"') < 1:
        assert time.monotonic() < deadline, "the failed refit was not counted"
        time.sleep(0.2)
    assert recipe(client)["version"] == SHIPPED.version
    assert metric(client, 'eqs_reward_recipe_fit_stale{recipe="qualeqs-taught"}') == 1
    answer = client.post("/v1/score", json=score_body(item("desk", "Desks with drawers?")))
    assert answer.status_code == 200  # a judge failure is a flagged result, never an error


def test_a_stored_fit_of_an_older_shipped_version_is_not_used(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """After an upgrade ships a new version of the recipe, a fit of the old one is stale."""
    stored = tmp_path / STUB_FITS / f"{TAUGHT}.toml"
    stored.parent.mkdir(parents=True)
    old = SHIPPED_TEXT.replace('judge_model = "smollm2-135m-instruct"', 'judge_model = "stub"')
    old = old.replace("date = ", f"refit_of = {SHIPPED.version - 1}\ndate = ")
    old = old.replace(f"version = {SHIPPED.version}", f"version = {SHIPPED.version + 7}")
    stored.write_text(old)
    client = make_client(recipe_refit="off")
    assert recipe(client)["version"] == SHIPPED.version
    # the same file, a fit of the shipped version, is used
    stored.write_text(
        old.replace(f"refit_of = {SHIPPED.version - 1}", f"refit_of = {SHIPPED.version}")
    )
    again = make_client(recipe_refit="off")
    assert recipe(again)["version"] == SHIPPED.version + 7
    assert metric(again, 'eqs_reward_recipe_fit_stale{recipe="qualeqs-taught"}') == 0
