"""A deadline on every call (issue 23): with a judge that stalls for minutes, every adapter
returns within ``EQS_REWARD_DEADLINE_S`` plus a little slack, its samples neutral for its
trainer, never a hang; the caller's deadline reaches the service, and work no one else waits
for stops there (``eqs_reward_judge_calls_abandoned_total``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from eqs_reward.client import openrlhf, trl, verl
from tests._helpers import ServerProcess, stub_backed_service
from tests.client.slime import remote_rm as slime

DEADLINE_S = 3.0
SLACK_S = 3.0
COMPLETION = json.dumps({"options": ["Which desks under $300?", "Any with presets?", "Oak?"]})


@pytest.fixture(scope="module")
def stalled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A service whose judge takes ten minutes to answer anything."""
    env = {"EQS_REWARD_JUDGE_MAX_RETRIES": "0", "EQS_REWARD_JUDGE_TIMEOUT_S": "900"}
    with stub_backed_service(tmp_path_factory.mktemp("stalled"), **env) as service:
        judge = service.judge  # type: ignore[attr-defined]
        httpx.post(judge.url + "/_stub/config", json={"delay_s": 600})
        yield service
        judge.kill(9)  # its sleeping answers would hold a graceful stop for its whole timeout


@pytest.fixture
def deadline_env(stalled: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    monkeypatch.setenv("EQS_REWARD_URL", stalled.url)
    monkeypatch.setenv("EQS_REWARD_DEADLINE_S", str(DEADLINE_S))
    monkeypatch.setenv("EQS_REWARD_GROUP_SIZE", "2")
    monkeypatch.setattr(verl, "_sync", None)  # clients made under this environment
    monkeypatch.setattr(openrlhf, "_client", None)
    return stalled


def _timed(call: object) -> tuple[object, float]:
    started = time.monotonic()
    result = call()  # type: ignore[operator]
    return result, time.monotonic() - started


def test_trl(deadline_env: ServerProcess) -> None:
    func = trl.eqs_reward_func()

    async def call() -> list[float | None]:
        try:
            return await func(prompts=["desk", "desk"], completions=[COMPLETION, COMPLETION])
        finally:
            await func.aclose()

    rewards, elapsed = _timed(lambda: asyncio.run(call()))
    assert elapsed < DEADLINE_S + SLACK_S
    assert rewards == [None, None] or rewards == [0.0, 0.0]  # neutral: nothing was judged


def test_verl(deadline_env: ServerProcess) -> None:
    result, elapsed = _timed(lambda: verl.compute_score("eqs", COMPLETION, "standing desk"))
    assert elapsed < DEADLINE_S + SLACK_S
    assert result["failed"] == 1.0 and result["score"] == 0.0  # no sibling judged: 0, neutral
    assert verl._sync is not None
    verl._sync.close()


def test_openrlhf(deadline_env: ServerProcess) -> None:
    prompt = "<|im_start|>user\nstanding desk<|im_end|>\n<|im_start|>assistant\n"
    answer, elapsed = _timed(
        lambda: openrlhf.reward_func([prompt + COMPLETION], [prompt], ["standing desk"])
    )
    assert elapsed < DEADLINE_S + SLACK_S
    assert answer["rewards"] == [0.0] and answer["extra_logs"]["failed"] == [1.0]
    openrlhf._shared_client().close()


def test_slime(stalled: ServerProcess) -> None:
    async def call() -> object:
        try:
            args = SimpleNamespace(rm_url=f"{stalled.url}/slime?deadline_s={DEADLINE_S}")
            sample = SimpleNamespace(prompt="standing desk", response=COMPLETION, label=None)
            return await slime.remote_rm(args, sample)
        finally:
            if slime._shared_session is not None:
                await slime._shared_session.close()

    reward, elapsed = _timed(lambda: asyncio.run(call()))
    assert elapsed < DEADLINE_S + SLACK_S and reward == 0.0


def test_work_no_one_waits_for_stops(stalled: ServerProcess) -> None:
    def abandoned() -> float:
        text = httpx.get(stalled.url + "/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("eqs_reward_judge_calls_aband"))
        return float(line.rsplit(" ", 1)[1])

    before = abandoned()
    body = {
        "items": [{"context": {"query": "desk"}, "suggestions": ["Oak desks under $500?"]}],
        "options": {"k": 1, "cache": False, "deadline_s": 1.0},
    }
    response, elapsed = _timed(lambda: httpx.post(stalled.url + "/v1/score", json=body, timeout=30))
    assert response.status_code == 200 and elapsed < 1.0 + SLACK_S  # type: ignore[attr-defined]
    suggestion = response.json()["results"][0]["suggestions"][0]  # type: ignore[attr-defined]
    assert suggestion["status"] == "failed" and suggestion["reason"] == "deadline"
    assert abandoned() == before + 1


def test_the_deadline_reaches_the_service_with_time_to_spare(tmp_path: Path) -> None:
    from eqs_reward.client import RewardClient

    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append({"body": json.loads(request.content), "params": dict(request.url.params)})
        return httpx.Response(200, json={"rewards": [], "scores": [], "extra_logs": {}})

    with RewardClient("http://t", deadline_s=10, transport=httpx.MockTransport(handler)) as client:
        client.get_reward(["q"])
    assert seen[0]["params"] == {"deadline_s": "9.0"}
