"""The exclusivity head's parts: packaged weights with no network, and a ramp that is what the
measurement on real queries chooses (``eqs-reward heads-report``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eqs_reward.offline.heads_report import measure_exclusivity, render_markdown
from eqs_reward.server.heads import ExclusivityHead, WordLlamaEmbedder
from tests._helpers import JUDGE_CASES, ROOT

NO_NETWORK = """
import asyncio, json, socket

def refuse(*args, **kwargs):
    raise OSError("network refused by the test")

socket.socket.connect = refuse
socket.create_connection = refuse
from eqs_reward.judge.cases import Context
from eqs_reward.server.heads import ExclusivityHead, WordLlamaEmbedder

head = ExclusivityHead(WordLlamaEmbedder())
per, sets = asyncio.run(head.score([(Context(query="I want to buy a router"), [
    "What kind of router do you want to buy?",
    "Which Wi-Fi 6 routers under $100 cover a 3-bedroom house?",
])]))[0]
print(json.dumps({"per": per, "sets": sets, "version": head.version}))
"""


def test_the_embedder_loads_from_the_package_with_no_network(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),  # no cache of an earlier download to fall back on
        "HF_HUB_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-c", NO_NETWORK],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    echo, refined = out["per"]
    assert echo["novelty"] < 0.2 < 0.8 < refined["novelty"]
    assert out["version"] == "exclusivity-v1/wordllama-l2_supercat-256/0.75-0.85"
    assert not (tmp_path / ".cache").exists()  # nothing fetched or written to a hub cache


async def test_the_ramp_is_the_one_the_measurement_chooses() -> None:
    """The defaults are not tuned by hand: they are what the README's measurement picks, and the
    head separates paraphrase from varied sets and echoes from refinements with them."""
    cases = JUDGE_CASES / "dev.jsonl"
    report = await measure_exclusivity(
        WordLlamaEmbedder(), cases_path=cases if cases.is_file() else None
    )
    assert report["ramp"] == {"low": ExclusivityHead.LOW, "high": ExclusivityHead.HIGH}
    assert report["diversity"]["roc_auc"] > 0.95 and report["novelty"]["roc_auc"] > 0.95
    assert report["diversity"]["paraphrase_mean"] < 0.2 < 0.8 < report["diversity"]["varied_mean"]
    if cases.is_file():  # the committed report (made with the shared cases) is current
        committed = ROOT / "loadtest" / "heads" / "exclusivity.md"
        assert committed.read_text() == render_markdown(report)


@pytest.mark.parametrize(("low", "high"), [(0.9, 0.5), (0.5, 0.5)], ids=["inverted", "empty"])
def test_a_ramp_must_rise(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="low must be below high"):
        ExclusivityHead(WordLlamaEmbedder(), low=low, high=high)
