"""The fidelity gate's own logic, and the committed report: what the README quotes is what the
report says, and the report meets the committed floors (the real-judge run is in
``tests/vllm/test_fidelity.py``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from eqs_reward._resources import prompts_dir
from eqs_reward.offline.fidelity import _next_version, check, dimension_values
from eqs_reward.server.recipes import load_recipes
from eqs_reward.types import DIMENSIONS
from tests._helpers import ROOT, ServerProcess

FIDELITY = ROOT / "loadtest" / "fidelity"
FLOORS = json.loads((FIDELITY / "floors.json").read_text())


def _report(**auc: float) -> dict[str, object]:
    values = {"answerability": 0.99, "factuality": 0.99, "information_gain": 0.99, "product": 0.99}
    return {
        "recipe": "qualeqs-taught",
        "mode": "soft",
        "split": "validation",
        "auc": {**values, **auc},
    }


def test_the_gate_names_every_figure_below_its_floor() -> None:
    assert check(_report(), FLOORS) == []
    failures = check(_report(product=0.5, factuality=math.nan), FLOORS)
    assert len(failures) == 2
    assert any("product ROC AUC 0.500 is below its floor" in f for f in failures)
    assert any("factuality ROC AUC nan" in f for f in failures)  # unmeasured is not a pass
    other = {**_report(product=0.1), "recipe": "qualeqs"}
    assert check(other, FLOORS) == []  # floors are per recipe, mode and split


def test_a_dimension_of_a_recipe_is_its_reward_with_the_others_at_one() -> None:
    recipes = load_recipes(prompts_dir() / "recipes")
    signals = {
        "judge.answerability": 0.2, "judge.factuality": 0.4, "judge.information_gain": 0.6,
        "taught.answerability": 0.5, "taught.factuality": 0.5, "taught.information_gain": 0.5,
    }  # fmt: skip
    paper = dimension_values(recipes["qualeqs"], signals)
    assert paper == pytest.approx(
        {"answerability": 0.2, "factuality": 0.4, "information_gain": 0.6}
    )
    taught = dimension_values(recipes["qualeqs-taught"], signals)
    product = recipes["qualeqs-taught"].suggestion_reward(signals)
    assert math.prod(taught.values()) == pytest.approx(product)


def test_a_refit_with_new_weights_is_a_new_recipe_version(tmp_path: Path) -> None:
    path = tmp_path / "qualeqs-taught.toml"
    assert _next_version(path, {}) == 1
    path.write_text((prompts_dir() / "recipes" / "qualeqs-taught.toml").read_text())
    text = path.read_text()
    current = int(re.search(r"^version = (\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    weights = re.findall(r"weights = \[([\d.]+),", text)
    same = {d: {"judge_weight": float(w)} for d, w in zip(DIMENSIONS, weights, strict=True)}
    assert _next_version(path, same) == current
    moved = {d: {"judge_weight": 0.5} for d in DIMENSIONS}
    assert _next_version(path, moved) == current + 1


def test_the_committed_report_meets_the_committed_floors() -> None:
    reports = json.loads((FIDELITY / "report.json").read_text())
    default = [r for r in reports if r["recipe"] == "qualeqs-taught"]
    assert {(r["mode"], r["split"]) for r in default} >= {("soft", "validation"), ("soft", "dev")}
    for report in reports:
        assert check(report, FLOORS) == [], report["recipe"]
    for key in FLOORS:
        if not key.startswith("_"):
            assert any(f"{r['recipe']}/{r['mode']}/{r['split']}" == key for r in reports), key


def test_the_readme_quotes_the_committed_report_and_nothing_else() -> None:
    readme = (ROOT / "README.md").read_text()
    quoted = readme.split("<!-- fidelity-report -->")[1].split("<!-- /fidelity-report -->")[0]
    table = [
        line for line in (FIDELITY / "report.md").read_text().splitlines() if line.startswith("|")
    ]
    assert [line for line in quoted.splitlines() if line.strip()] == table


def test_fit_writes_a_recipe_the_service_loads(
    tmp_path: Path, running_service: Callable[..., ServerProcess]
) -> None:
    """``eqs-reward fidelity fit`` against a running service (on the stub judge, which knows
    nothing): the weights come from the grid, the taught head's out-of-fold AUCs are the
    head's own (fit and read through ``TaughtHead``), and the recipe file it writes loads."""
    from eqs_reward.cli import main

    out = tmp_path / "recipes" / "qualeqs-taught.toml"
    out.parent.mkdir()
    service = running_service()
    assert main(["fidelity", "fit", "--url", service.url, "--out", str(out)]) == 0
    recipe = load_recipes(out.parent)["qualeqs-taught"]
    assert recipe.version == 1
    text = out.read_text()
    for dimension in DIMENSIONS:
        taught = float(re.search(rf"#   {dimension}: [\d.na]+ / ([\d.]+)", text).group(1))  # type: ignore[union-attr]
        assert taught > 0.85, (dimension, text)  # the head alone, out of fold, on train
    weights = [float(w) for w in re.findall(r"weights = \[([\d.]+),", text)]
    assert len(weights) == 3 and all(w * 20 == round(w * 20) for w in weights)
