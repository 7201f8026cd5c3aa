"""The offline tools on the real judge: the end-to-end benchmark, GRPO training and mining, and
Algorithm 1."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import httpx
import pytest

from tests._helpers import ServerProcess, cli, metric, models_dir

pytestmark = pytest.mark.vllm


def test_the_end_to_end_benchmark_runs_in_quick_mode(
    embedded: ServerProcess, tmp_path: Path
) -> None:
    """The one benchmark that needs vLLM, against this session's judge (issue 20: every
    benchmark's quick mode runs in CI)."""
    from loadtest import bench

    results = tmp_path / "RESULTS.md"
    judge = f"http://127.0.0.1:{embedded.judge_port}/v1"  # type: ignore[attr-defined]
    argv = ["--quick", "--only", "e2e", "--judge-url", judge, "--results", str(results)]
    assert bench.main(argv) == 0
    text = results.read_text()
    assert "<!-- section:e2e -->" in text and "speed-up:" in text


def test_grpo_training_and_mining_use_the_service(embedded: ServerProcess, tmp_path: Path) -> None:
    """``eqs-reward train`` runs 2 tiny GRPO steps (TRL, SmolLM2 policy, CPU) with every reward
    from the service, counted there; ``eqs-reward mine`` ranks contexts by disagreement."""
    scored = 'eqs_reward_http_requests_total{method="POST",route="/v1/score",status="200"}'
    before = metric(embedded.url, scored)
    active = httpx.get(embedded.url + "/v1/fewshot/versions").json()["active"]
    env = {**os.environ, "EQS_REWARD_MODEL_CACHE_DIR": str(models_dir())}
    run = cli(
        "train",
        url=embedded.url,
        steps=2,
        batch_size=2,
        group_size=2,
        max_completion_length=48,
        prompts=4,
        recipe="qualeqs-blend",
        out=str(tmp_path / "train"),
        env=env,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    with (tmp_path / "train" / "rewards.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["reward"]) <= 1.0 for r in rows)
    assert (tmp_path / "train" / "rewards.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    assert summary["fewshot_version"] == active  # pinned for the run
    assert summary["recipe"] == "qualeqs-blend"  # pinned too, and every signal in the CSV
    for name in ("shopper.tap", "exclusivity.novelty", "exclusivity.diversity", "shopper.any_tap"):
        assert name in rows[0], name
    assert metric(embedded.url, scored) - before >= 2  # one scoring request per step at least

    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in [
                {
                    "query": "router",
                    "suggestions": [
                        "Any TP-Link routers under $100 with Wi-Fi 6?",
                        "What router do you want?",
                        "Routers?",
                    ],
                },
                {
                    "query": "desk",
                    "suggestions": [
                        "Standing desks under $300 with presets?",
                        "Desks for two 32 inch monitors?",
                        "A desk that floats in the air?",
                    ],
                },
                {
                    "query": "flowers",
                    "suggestions": [
                        "Roses under $30 delivered tomorrow?",
                        "Flowers for a 70th birthday?",
                        "White lilies?",
                    ],
                },
            ]
        )
    )
    mined = cli(
        "mine",
        url=embedded.url,
        candidates=str(candidates),
        top=2,
        out=str(tmp_path / "mine"),
        env=env,
        timeout=600,
    )
    assert mined.returncode == 0, mined.stderr[-3000:]
    scores = [json.loads(x) for x in (tmp_path / "mine" / "scores.jsonl").read_text().splitlines()]
    hard = [json.loads(x) for x in (tmp_path / "mine" / "hard.jsonl").read_text().splitlines()]
    assert len(scores) == 3 and len(hard) == 2
    everyone = sorted(s["u_q"] for s in scores)
    assert [h["u_q"] for h in hard] == everyone[::-1][:2]  # the most disputed first
    for row in scores:
        mean = sum(row["rewards"]) / 3
        assert row["u_q"] == pytest.approx(sum((r - mean) ** 2 for r in row["rewards"]) / 3)
    assert (tmp_path / "mine" / "u_q_hist.png").stat().st_size > 5_000


#: Algorithm 1 at its smallest: two rounds of one GRPO step on two prompts, a warm start on four
#: queries, each stage measured on two held-out queries.
TINY_ITERATION = {"rounds": 2, "steps": 1, "batch_size": 2, "group_size": 2,
                  "max_completion_length": 32, "prompts": 2, "limit": 2, "k": 3, "top": 1,
                  "held_out": 2, "eval_samples": 1, "warm_queries": 4, "warm_samples": 2,
                  "warm_epochs": 1, "threshold_sft": 0, "warm_min_pairs": 1}  # fmt: skip


def test_algorithm_1_on_the_real_judge(embedded: ServerProcess, tmp_path: Path) -> None:
    """Algorithm 1 end to end on the real judge, tiny: warm-start pairs sampled and selected
    through the service, SFT, then two rounds that each train (from the previous policy, on the
    queries plus the previous hard subset) and mine, with the paper's metrics after each stage."""
    env = {**os.environ, "EQS_REWARD_MODEL_CACHE_DIR": str(models_dir())}
    run = cli(
        "iterate", url=embedded.url, out=str(tmp_path), env=env, timeout=1500, **TINY_ITERATION
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    history = json.loads((tmp_path / "rounds.json").read_text())
    assert [h["round"] for h in history] == [1, 2]
    for number in (1, 2):
        folder = tmp_path / f"round-{number}"
        assert (folder / "train" / "rewards.csv").is_file()
        assert (folder / "train" / "model" / "config.json").is_file()
        assert (folder / "mine" / "hard.jsonl").is_file()
        assert (folder / "mine" / "u_q_hist.png").is_file()
    # The warm start's policy starts round 1; round 2 trains on round 1's hard subset, from
    # round 1's policy.
    warm = json.loads((tmp_path / "warmstart" / "summary.json").read_text())
    assert warm["source"] == "service" and warm["pairs"] >= 1
    assert history[0]["train"]["model"] == str(tmp_path / "warmstart" / "model")
    assert history[1]["train"]["prompts_file"] == str(tmp_path / "round-1" / "mine" / "hard.jsonl")
    assert history[1]["train"]["model"] == str(tmp_path / "round-1" / "train" / "model")
    # Every candidate the pairs came from was scored by the real judge.
    scored = [
        json.loads(x)
        for x in (tmp_path / "warmstart" / "candidates.jsonl").read_text().splitlines()
    ]
    assert len(scored) == 4 and all(r["candidates"] for r in scored)
    # The paper's metrics after every stage, on the held-out queries, in JSON, a table and a PNG.
    report = json.loads((tmp_path / "stages.json").read_text())
    names = [s["stage"] for s in report["stages"]]
    assert names == ["base", "warm start", "GRPO round 1", "GRPO round 2"]
    assert report["meta"]["judge_model"] == "smollm2-135m-instruct"
    for stage in report["stages"]:
        assert 0.0 <= stage["format_reward"] <= 1.0
        assert 0.0 <= stage["mean_set_reward"] <= 1.0
    assert "| GRPO round 2 |" in (tmp_path / "stages.md").read_text()
    assert (tmp_path / "stages.png").stat().st_size > 10_000
