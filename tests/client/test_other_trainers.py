"""AReaL and verifiers, each through its own code: the docs' snippets (``docs/trainers-other.md``)
run by AReaL's ``AsyncRewardWrapper`` (vendored from the areal 1.0.4 wheel in
``tests/client/areal/``; the package does not install beside this project) and by verifiers
0.4.0's ``Task.score`` in a fresh virtual environment with this project's wheel. The reward is
the one ``/v1/score`` gives the same text; a failed sample is the snippet's 0.0."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest

from tests._helpers import FAILME, ServerProcess, docs_block, run, venv
from tests.client.areal.reward_api import AsyncRewardWrapper

QUERY = "blender for smoothies"
OPTIONS = ["Which blenders under $80 can crush ice?", "Are there glass jar blenders with 1000 W?",
           "Do you have Vitamix blenders under $400?"]  # fmt: skip
GOOD = json.dumps({"options": OPTIONS})
FAILED = json.dumps({"options": [f"Blenders {FAILME}?", "Any glass blenders?", "Quiet ones?"]})


def snippet(heading: str, url: str) -> str:
    """The docs' snippet, pointed at the test's service and its bank's first version."""
    code = docs_block("trainers-other.md", heading, "python")
    return code.replace("http://reward-host:8000", url).replace(
        "fewshot_version=3", "fewshot_version=1"
    )


def direct_reward(url: str, completion: str) -> float:
    body = {
        "items": [{"context": {"query": QUERY}, "completion": completion}],
        "options": {"k": 3, "score_mode": "soft", "fewshot_version": 1},
    }
    return float(
        httpx.post(url + "/v1/score", json=body, timeout=60).json()["results"][0]["reward"]
    )


def test_areal_runs_the_docs_reward_function_in_its_process_pool(
    stub_service: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module of its own: AReaL pickles the function by reference into its worker processes.
    (tmp_path / "areal_eqs_reward.py").write_text(snippet("## AReaL", stub_service.url))
    monkeypatch.syspath_prepend(str(tmp_path))
    import areal_eqs_reward

    wrapper = AsyncRewardWrapper(areal_eqs_reward.eqs_reward_fn, timeout_seconds=30, max_workers=1)

    async def rollout() -> list[float]:
        return list(
            await asyncio.gather(
                wrapper("Suggest follow-ups", GOOD, [1, 2], [3, 4], answer=QUERY),
                wrapper("Suggest follow-ups", FAILED, [1, 2], [3, 4], answer=QUERY),
            )
        )

    try:
        good, failed = asyncio.run(rollout())
    finally:
        AsyncRewardWrapper._atexit_shutdown_all()
        sys.modules.pop("areal_eqs_reward", None)
    assert good == pytest.approx(direct_reward(stub_service.url, GOOD))
    assert good > 0.0
    assert failed == 0.0


@pytest.mark.wheel
def test_verifiers_scores_a_trace_with_the_docs_task(
    stub_service: ServerProcess, wheel: Path, tmp_path: Path
) -> None:
    python = venv(tmp_path / "verifiers", "verifiers==0.4.0", wheel)
    code = tmp_path / "snippet.py"
    code.write_text(snippet("## verifiers", stub_service.url))
    driver = Path(__file__).with_name("_verifiers_driver.py")
    done = run(python, driver, code, QUERY, GOOD, FAILED, "not options at all", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    good, failed, malformed = json.loads(done.stdout.strip().splitlines()[-1])
    assert good["eqs_reward"] == pytest.approx(direct_reward(stub_service.url, GOOD))
    assert good["eqs_reward"] > 0.0
    assert failed["eqs_reward"] == 0.0
    assert malformed["eqs_reward"] == 0.0  # the format reward: no options, no reward
