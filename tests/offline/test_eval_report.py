"""``eqs-reward eval`` cuts each dimension where the scored recipe says it passes: a stacking
recipe's stored calibration (its fields are stacked probabilities), else the few-shot version's
calibration, else 0.5; through a real service on the stub judge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from eqs_reward._resources import judge_cases_dir
from eqs_reward.cli import main
from eqs_reward.server.recipes import load_recipes
from eqs_reward.types import DIMENSIONS
from tests._helpers import ROOT, ServerProcess

SHIPPED = load_recipes(ROOT / "prompts" / "recipes")


def test_the_shipped_stacking_recipe_passes_at_its_stored_calibration() -> None:
    cuts = SHIPPED["qualeqs-taught"].pass_thresholds
    assert cuts is not None
    for term, d in zip(SHIPPED["qualeqs-taught"].suggestion["product"], DIMENSIONS, strict=True):
        stacked = term["stacked"]
        assert cuts[d] == pytest.approx(stacked["threshold"] ** stacked["power"])
    assert SHIPPED["qualeqs"].pass_thresholds is None
    assert SHIPPED["qualeqs-blend"].pass_thresholds is None


@pytest.mark.parametrize(
    ("recipe", "mode", "source"),
    [
        ("qualeqs-taught", "soft", "recipe qualeqs-taught version"),
        ("qualeqs-taught", "binary", "recipe qualeqs-taught version"),
        ("qualeqs", "soft", "0.5"),  # no calibration stored with the seed version
    ],
)
def test_eval_reports_the_thresholds_it_cut_at(
    running_service: Callable[..., ServerProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recipe: str,
    mode: str,
    source: str,
) -> None:
    service = running_service(EQS_REWARD_RECIPE_REFIT="off")
    listed = {r["id"]: r for r in httpx.get(service.url + "/v1/recipes").json()["recipes"]}
    out = tmp_path / "eval"
    cases = judge_cases_dir() / "dev.jsonl"
    argv = ["eval", "--url", service.url, "--cases", str(cases), "--mode", mode]
    assert main([*argv, "--recipe", recipe, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["thresholds_from"].startswith(source)
    expected = listed[recipe]["pass_thresholds"] or dict.fromkeys(DIMENSIONS, 0.5)
    assert report["thresholds"] == pytest.approx(expected)
    assert f"pass thresholds: {source}" in capsys.readouterr().out
