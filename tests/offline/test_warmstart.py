"""Algorithm 1 on the CPU against a real service with the stub judge: the warm start makes the
135M policy close its JSON, and GRPO after it sees groups whose rewards differ (the gradient the
base policy never got: every completion malformed, reward 0, zero spread).

The SFT pairs are the committed ones from the measured run (``loadtest/algorithm1/stub``), so
this test spends its minutes on fine-tuning and GRPO, not on sampling candidates (which the
real-judge ``iterate`` test covers end to end)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from eqs_reward.offline.data import split_queries
from eqs_reward.offline.train import resolve_fewshot_version
from eqs_reward.offline.warmstart import _close, evaluate_stage, teacher_messages
from tests._helpers import ROOT, ServerProcess, models_dir

PAIRS = ROOT / "loadtest" / "algorithm1" / "stub" / "pairs.jsonl"


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EQS_REWARD_MODEL_CACHE_DIR": str(models_dir())}
    return subprocess.run(
        [sys.executable, "-m", "eqs_reward.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


def test_warm_start_then_grpo_with_reward_spread(
    stub_service: ServerProcess, smollm2: Path, tmp_path: Path
) -> None:
    url = stub_service.url
    warm = _cli("warmstart", "--url", url, "--pairs", str(PAIRS), "--out", str(tmp_path / "warm"))
    assert warm.returncode == 0, warm.stderr[-3000:]
    summary = json.loads((tmp_path / "warm" / "summary.json").read_text())
    assert summary["pairs"] == len(PAIRS.read_text().splitlines())
    assert summary["loss_last"] < summary["loss_first"] / 2
    model = tmp_path / "warm" / "model"

    # Held-out real queries, never among the pairs' queries.
    _, held = split_queries(64, 12, 7)
    trained_on = {json.loads(x)["prompt"][0]["content"] for x in PAIRS.read_text().splitlines()}
    assert not any(f'"{q}"' in prompt for q in held for prompt in trained_on)
    version = resolve_fewshot_version(url, None)
    before = evaluate_stage(url, smollm2, held, fewshot_version=version, samples=2)
    after = evaluate_stage(url, model, held, fewshot_version=version, samples=2)
    assert before["format_reward"] <= 0.2  # the base policy: almost never a well-formed set
    assert after["format_reward"] >= 0.6, after["examples"]
    assert after["mean_set_reward"] > before["mean_set_reward"] + 0.3

    grpo = _cli(
        "train",
        "--url",
        url,
        "--model",
        str(model),
        "--steps",
        "2",
        "--out",
        str(tmp_path / "grpo"),
    )
    assert grpo.returncode == 0, grpo.stderr[-3000:]
    with (tmp_path / "grpo" / "rewards.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert max(float(r["reward_std"]) for r in rows) > 0.05
    assert min(float(r["frac_reward_zero_std"]) for r in rows) < 1.0
    assert sum(float(r["format_reward"]) for r in rows) / 2 >= 0.5


def test_near_repeats_are_never_targets_together() -> None:
    """A set like "... for a 25-year-old?" / "... for a 35-year-old?" teaches repetition."""
    assert _close(
        "Which nesting tray set is the best for a 25-year-old?",
        "Which nesting tray set is the best for a 35-year-old?",
    )
    assert not _close(
        "Which blenders under $100 crush ice for smoothies?",
        "Is a Ninja or a Vitamix better for frozen fruit?",
    )


def test_teacher_prompt_shows_examples_but_asks_about_the_query() -> None:
    messages = teacher_messages("king bed frame")
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2 + ["user"]
    assert '"king bed frame"' in messages[-1]["content"]
    for answer in messages[1:4:2]:
        assert len(json.loads(answer["content"])["options"]) == 3
