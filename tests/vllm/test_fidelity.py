"""The shipped default reward measured on labeled cases through the real judge: the fidelity gate
and its floors, spread within GRPO groups, and ``eqs-reward eval``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests._helpers import (
    JUDGE_CASES,
    ROOT,
    ServerProcess,
    cli,
    service_process,
    wait_http,
)

pytestmark = pytest.mark.vllm


FLOORS = ROOT / "loadtest" / "fidelity" / "floors.json"


def _fidelity_report(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``eqs-reward fidelity report`` against ``url``, held to the committed floors."""
    return cli("fidelity", "report", "--url", url, "--floors", FLOORS, *argv, timeout=900)


def test_the_default_reward_holds_its_fidelity_floors_and_the_gate_refuses_a_worse_one(
    embedded: ServerProcess, tmp_path: Path
) -> None:
    """Issue 21's gate on the real judge: the shipped default recipe measured on the labeled
    cases it was not fit on stays above the committed floors; the same command refuses a
    recipe change that lowers them (the taught head's weight moved to the judge)."""
    # The shipped default, named: the fixture's service defaults to qualeqs like every test's.
    out = str(tmp_path / "fidelity")
    report = _fidelity_report(embedded.url, "--recipe", "qualeqs-taught", "--out", out)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    measured = json.loads((tmp_path / "fidelity" / "report.json").read_text())
    assert {r["recipe"] for r in measured} == {"qualeqs-taught"}
    assert all(r["scored"] == r["cases"] for r in measured)
    validation = next(r for r in measured if r["split"] == "validation")
    assert validation["median_reward_good"] > validation["p75_reward_others"]

    # A deliberately worse change: the default recipe's stacking moved to the judge alone.
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    recipe = prompts / "recipes" / "qualeqs-taught.toml"
    text = re.sub(r"coef = \[[^\]]*\]", "coef = [1, 0]", recipe.read_text())
    assert text != recipe.read_text()
    recipe.write_text(text)
    worse = service_process(
        tmp_path,
        EQS_REWARD_JUDGE_URL=f"http://127.0.0.1:{embedded.judge_port}/v1",  # type: ignore[attr-defined]
        EQS_REWARD_PROMPTS_DIR=str(prompts),
        EQS_REWARD_DEFAULT_RECIPE="qualeqs-taught",
    ).start()
    try:
        wait_http(worse.url + "/ready", 120)
        # the report reads the recipe the service runs, not the packaged one
        refused = _fidelity_report(worse.url, "--split", "validation")
    finally:
        worse.stop()
    assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert "fidelity gate: qualeqs-taught (soft, validation): product ROC AUC" in refused.stderr


@pytest.mark.parametrize("mode", ["soft", "binary"])
def test_grpo_groups_scored_by_the_default_reward_have_spread(
    embedded: ServerProcess, mode: str
) -> None:
    """A GRPO group whose rewards are all equal teaches nothing. GRPO-shaped groups of
    well-formed completions on real shopper queries (8 completions of 3 suggestions, drawn from
    a per-prompt pool, as a policy repeats itself): under the default recipe fewer than half have
    zero spread, in soft and in binary mode (the judge alone in binary mode gave every group the
    same reward)."""
    from loadtest.traffic import TrafficModel

    model = TrafficModel(group_size=8, k=3, pool=10, prompts=6, seed=21)
    groups = [model.group(n) for n in range(6)]
    spreads = []
    for group in groups:
        body = {**group, "options": {"k": 3, "score_mode": mode, "recipe": "qualeqs-taught"}}
        response = httpx.post(embedded.url + "/v1/score", json=body, timeout=600)
        assert response.status_code == 200, response.text[:500]
        rewards = [r["reward"] for r in response.json()["results"]]
        assert all(r is not None for r in rewards)
        spreads.append(max(rewards) - min(rewards))
    zero = sum(spread == 0 for spread in spreads) / len(spreads)
    assert zero < 0.5, spreads


def test_eval_on_the_dev_cases_with_the_real_judge(embedded: ServerProcess, tmp_path: Path) -> None:
    """``eqs-reward eval`` over the packaged dev.jsonl: a table, a JSON report and a PNG, whose
    numbers agree with each other."""
    cases = JUDGE_CASES / "dev.jsonl"
    run = cli(
        "eval",
        url=embedded.url,
        cases=str(cases),
        recipe="qualeqs-blend",
        out=str(tmp_path),
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "agree" in run.stdout and "worst disagreements" in run.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cases"] == len(cases.read_text().splitlines())
    assert report["meta"]["judge_model"] == "smollm2-135m-instruct"
    for dimension, r in report["dimensions"].items():
        n = r["tp"] + r["fp"] + r["fn"] + r["tn"]
        assert n == report["judged"], dimension
        assert r["agreement"] == pytest.approx((r["tp"] + r["tn"]) / n)
        judge_pass, label_pass = (r["tp"] + r["fp"]) / n, (r["tp"] + r["fn"]) / n
        expected = judge_pass * label_pass + (1 - judge_pass) * (1 - label_pass)
        if expected < 1:
            assert r["kappa"] == pytest.approx((r["agreement"] - expected) / (1 - expected))
        assert r["auc"] is None or 0.0 <= r["auc"] <= 1.0
    assert (tmp_path / "report.png").stat().st_size > 20_000
    # Every head's signal against every label the cases carry.
    signals = report["signals"]
    assert set(signals["shopper.tap"]) == {"answerability", "factuality", "information_gain"}
    novelty = signals["exclusivity.novelty"]["information_gain"]
    assert novelty is not None and 0.0 <= novelty <= 1.0
    assert "shopper.tap" in run.stdout
