"""Each adapter invoked exactly as its framework invokes it, against a running service (a real
process) whose stub judge fails, on purpose, every suggestion containing FAILME."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eqs_reward.client.trl import eqs_reward_func
from tests.conftest import ServerProcess, service_process, stub_judge_process, wait_http

GOOD = [
    "Which blenders under $80 can crush ice?",
    "Are there glass jar blenders with 1000 W?",
    "Do you have Vitamix blenders with a 7-year warranty?",
]
SHORT = ["Blenders under $50?", "Any glass blenders here?", "Quiet blenders for mornings?"]
BAD = ["FAILME blenders?", "FAILME glass ones?", "FAILME quiet ones?"]


def completion(options: list[str]) -> str:
    return json.dumps({"options": options})


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("integrations")
    judge = stub_judge_process(tmp).start()
    service = service_process(
        tmp,
        EQS_REWARD_JUDGE_URL=judge.url + "/v1",
        EQS_REWARD_JUDGE_MODEL="stub",
        EQS_REWARD_JUDGE_MAX_RETRIES="1",
        EQS_REWARD_JUDGE_BACKOFF_INITIAL_S="0.01",
    ).start()
    try:
        wait_http(judge.url + "/health", 30)
        wait_http(service.url + "/ready", 60)
        httpx.post(judge.url + "/_stub/config", json={"fail_pattern": "FAILME"})
        yield service
    finally:
        service.stop()
        judge.stop()


def trl_call(func: Any, prompts: list[Any], completions: list[Any], **columns: Any) -> Any:
    """As TRL 1.16's GRPOTrainer._calculate_rewards: keyword arguments, dataset columns as
    lists, trainer_state/log_extra/log_metric, awaited on the trainer's own loop thread."""
    extra: dict[str, list[Any]] = {}
    metrics: dict[str, list[float]] = {}
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        future = asyncio.run_coroutine_threadsafe(
            func(
                prompts=prompts,
                completions=completions,
                completion_ids=[[0] for _ in completions],
                trainer_state=None,
                log_extra=lambda col, vals: extra.setdefault(col, []).extend(vals),
                log_metric=lambda name, v: metrics.setdefault(name, []).append(v),
                **columns,
            ),
            loop,
        )
        result = future.result(60)
        asyncio.run_coroutine_threadsafe(func.aclose(), loop).result(10)
        return result, extra, metrics
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.mark.parametrize(
    ("policy", "expected_failed"),
    [
        ("group_mean", "mean"),
        ("zero", 0.0),
        ("skip", None),
    ],
)
def test_trl_reward_function(running: ServerProcess, policy: str, expected_failed: Any) -> None:
    func = eqs_reward_func(running.url, policy=policy, score_mode="binary")  # type: ignore[arg-type]
    prompt = [{"role": "user", "content": "Suggest 3 follow-ups for: blender"}]
    prompts = [prompt] * 4
    completions = [
        [{"role": "assistant", "content": completion(x)}] for x in (GOOD, SHORT, BAD, GOOD)
    ]
    rewards, extra, metrics = trl_call(func, prompts, completions, query=["blender"] * 4)
    assert len(rewards) == 4
    assert rewards[0] == rewards[3] == 1.0 and rewards[1] == 0.0  # short ones lack info gain
    if expected_failed == "mean":
        assert rewards[2] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    else:
        assert rewards[2] == expected_failed
    assert set(extra) == {"answerability", "factuality", "information_gain"}
    assert len(extra["information_gain"]) == 4
    assert metrics["eqs/failed_share"] == [0.25]


def test_trl_function_name_and_plain_prompts(running: ServerProcess) -> None:
    func = eqs_reward_func(running.url)
    assert func.__name__ == "eqs_reward"
    rewards, _, _ = trl_call(func, ["blender"] * 2, [completion(GOOD), "not json"])
    assert rewards[1] == 0.0 and 0 < rewards[0] <= 1.0


@pytest.fixture
def verl(running: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("EQS_REWARD_URL", running.url)
    monkeypatch.setenv("EQS_REWARD_SCORE_MODE", "binary")
    module = importlib.import_module("eqs_reward.client.verl")
    module._sync = None
    module._async.clear()
    yield module
    if module._sync is not None:
        module._sync.close()
        module._sync = None


def test_verl_per_sample_sync_and_async(verl: Any) -> None:
    # As NaiveRewardManager: keyword arguments, extra_info a dict.
    ok = verl.compute_score(
        data_source="eqs",
        solution_str=completion(GOOD),
        ground_truth="blender",
        extra_info={"index": 0},
    )
    assert ok["score"] == 1.0 and ok["failed"] == 0.0
    assert set(ok) >= {"score", "answerability", "factuality", "information_gain"}
    failed = verl.compute_score(
        data_source="eqs", solution_str=completion(BAD), ground_truth="blender", extra_info=None
    )
    assert failed["score"] == 0.0 and failed["failed"] == 1.0  # no group here: 0.0, flagged

    async def reward_loop() -> list[dict[str, Any]]:  # as the async reward loop
        scores = list(
            await asyncio.gather(
                *[
                    verl.compute_score_async(
                        data_source="eqs",
                        solution_str=completion(x),
                        ground_truth=None,
                        extra_info={"query": "blender"},
                    )
                    for x in (GOOD, SHORT)
                ]
            )
        )
        await verl.aclose()  # the worker's exit would; a test must
        return scores

    good, short = asyncio.run(reward_loop())
    assert good["score"] == 1.0 and short["score"] == 0.0 and short["information_gain"] == 0.0


@pytest.mark.parametrize(
    ("policy", "expected"), [("group_mean", 0.5), ("zero", 0.0), ("skip", 0.0)]
)
def test_verl_batch(
    verl: Any, monkeypatch: pytest.MonkeyPatch, policy: str, expected: float
) -> None:
    monkeypatch.setenv("EQS_REWARD_FAILURE_POLICY", policy)
    # As BatchRewardManager: plural keyword arguments, one call per batch.
    scores = verl.compute_score_batch(
        data_sources=["eqs"] * 4,
        solution_strs=[completion(x) for x in (GOOD, SHORT, BAD, GOOD)],
        ground_truths=["blender", "blender", "blender", "mixer"],
        extra_infos=[{}, {}, {}, {}],
    )
    assert [s["score"] for s in scores[:2]] == [1.0, 0.0] and scores[3]["score"] == 1.0
    assert scores[2]["score"] == pytest.approx(expected) and scores[2]["failed"] == 1.0


@pytest.mark.parametrize(
    ("policy", "expected"), [("group_mean", (0.9**3 + 0.9 * 0.9 * 0.1) / 2), ("zero", 0.0)]
)
def test_openrlhf_endpoint(tmp_path: Path, policy: str, expected: float) -> None:
    judge = stub_judge_process(tmp_path).start()
    service = service_process(
        tmp_path,
        EQS_REWARD_JUDGE_URL=judge.url + "/v1",
        EQS_REWARD_JUDGE_MODEL="stub",
        EQS_REWARD_JUDGE_MAX_RETRIES="0",
        EQS_REWARD_OPENRLHF_FAILURE_POLICY=policy,
    ).start()
    try:
        wait_http(judge.url + "/health", 30)
        wait_http(service.url + "/ready", 60)
        httpx.post(judge.url + "/_stub/config", json={"fail_pattern": "FAILME"})
        prompt = "<|im_start|>user\nSuggest follow-ups: blender<|im_end|>\n<|im_start|>assistant\n"
        # As OpenRLHF's remote reward client posts it.
        answer = httpx.post(
            service.url + "/get_reward",
            json={
                "query": [prompt + completion(x) for x in (GOOD, SHORT, BAD)],
                "prompts": [prompt] * 3,
                "labels": ["blender"] * 3,
            },
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        data = answer.json()
        # Soft scores (the stub puts p=0.9 on its verdict): 0.9^3, and 0.9*0.9*0.1 for the
        # short ones that fail information gain.
        assert data["rewards"][:2] == pytest.approx([0.9**3, 0.9 * 0.9 * 0.1])
        assert data["rewards"][2] == pytest.approx(expected)
        assert data["scores"] == [min(1.0, max(0.0, r)) for r in data["rewards"]]
        assert data["extra_logs"]["failed"] == [0.0, 0.0, 1.0]
        bad = httpx.post(service.url + "/get_reward", json={"query": ["a"], "prompts": ["a", "b"]})
        assert bad.status_code == 422 and "prompts" in bad.json()["error"]["message"]
    finally:
        service.stop()
        judge.stop()


def test_openrlhf_reward_func_file(running: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("EQS_REWARD_URL", running.url)
    path = Path(importlib.import_module("eqs_reward.client.openrlhf").__file__ or "")
    # As OpenRLHF loads --remote_rm_url FILE.py: import the file, call reward_func.
    spec = importlib.util.spec_from_file_location("reward_func_module", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prompt = "Suggest follow-ups for: blender\n"
    out = module.reward_func(
        [prompt + completion(GOOD), prompt + completion(BAD)],
        [prompt, prompt],
        ["blender", "blender"],
    )
    assert isinstance(out["rewards"], torch.Tensor) and out["rewards"].shape == (2,)
    assert out["rewards"][1].item() == pytest.approx(out["rewards"][0].item())  # group mean
    assert out["extra_logs"]["failed"].tolist() == [0.0, 1.0]
    module._client.close()
