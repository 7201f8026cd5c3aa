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
from eqs_reward.offline.fidelity import check, dimension_values
from eqs_reward.server.recipes import FitFor, load_recipes
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
    """``eqs-reward fidelity fit`` against a running service (on the stub judge, whose keyword
    rules know a little): the taught head's out-of-fold AUCs are the head's own (fit and read
    through ``TaughtHead``), the stacked ones are no worse than the better input by more than
    noise, and the recipe file it writes loads, with a threshold and power per dimension."""
    import tomllib

    from eqs_reward.cli import main

    out = tmp_path / "recipes" / "qualeqs-taught.toml"
    out.parent.mkdir()
    service = running_service()
    assert main(["fidelity", "fit", "--url", service.url, "--out", str(out)]) == 0
    recipe = load_recipes(out.parent)["qualeqs-taught"]
    assert recipe.version == 1
    # fit for the service's judge and prompt, and the taught head it was computed with
    assert recipe.fit_for(FitFor("stub", "qualeqs-v2", "taught-3/wordllama-l2_supercat-256"))
    text = out.read_text()
    for dimension in DIMENSIONS:
        line = re.search(rf"#   {dimension}: ([\d.na]+) / ([\d.]+) / ([\d.]+)", text)
        assert line is not None, text
        judge, taught, stacked = (float(x) for x in line.groups())
        assert taught > 0.85, (dimension, text)  # the head alone, out of fold, on train
        assert stacked >= max(taught, judge if judge == judge else 0) - 0.03, (dimension, text)
    for term in tomllib.loads(text)["suggestion_reward"]["product"]:
        stacked = term["stacked"]
        assert 0 < stacked["threshold"] < 1 and stacked["power"] in (0.25, 0.5, 1.0, 2.0)
        assert stacked["coef"][0] >= 0  # a judge read backwards gets no weight
