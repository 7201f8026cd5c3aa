"""The veRL adapter inside veRL 0.9.1's own reward loop (verl/experimental/reward_loop/): a
``RewardLoopManager`` with Ray workers loads ``eqs_reward/client/verl.py`` from the config key the
README documents (``reward.custom_reward_function``) through veRL's ``load_reward_manager``, each
worker's reward manager (``naive`` and ``rate_limited``) calls it once per sample in
``run_single``, the manager merges every sample's ``reward_extra_info`` and assembles
``rm_scores``, and veRL's ``compute_grpo_outcome_advantage`` (verl/trainer/ppo/core_algos.py)
turns them into advantages. veRL is installed without its GPU dependencies; these modules need
none. The service is a real process whose stub judge fails every suggestion holding FAILME."""

from __future__ import annotations

import asyncio
import importlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

with warnings.catch_warnings():  # third-party import-time deprecation noise, not ours
    warnings.simplefilter("ignore")
    pytest.importorskip("verl")
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop import RewardLoopManager
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from tests._helpers import (
    ServerProcess,
    service_process,
    stub_judge_process,
    wait_http,
)
from tests.client._completions import BAD, GOOD, R_GOOD, R_SHORT, SHORT, text
from tests.client._verl import KEYS, batch, config, ray_session

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def reward_env(stub_service: ServerProcess) -> Iterator[dict[str, str]]:
    with ray_session(stub_service.url) as env:
        yield env


@pytest.mark.parametrize("manager", ["naive", "rate_limited"])
def test_the_reward_loop_scores_merges_and_neutralises_a_failed_sample(
    reward_env: dict[str, str], smollm2: Path, manager: str
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    completions = [
        (
            text(BAD),
            False,
        ),  # failed, and first: its keys are the ones veRL merges by
        (text(GOOD), False),
        (text(SHORT), False),
        (text(GOOD), True),  # the same good set, ending with <|im_end|>
        (text(GOOD), False),
        (text(SHORT), True),
        (text(SHORT), False),
        (text(GOOD), True),
    ]
    uids = ["a"] * 4 + ["b"] * 4
    # One shopper query per group (and per run): the service tells groups apart by context.
    queries = [f"blender {manager}"] * 4 + [f"mixer {manager}"] * 4
    data = batch(tokenizer, completions, uids, queries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop = RewardLoopManager(config(smollm2, manager))
        scored = loop.compute_rm_score(data)  # two workers: the groups split across them
    assert set(scored.meta_info["reward_extra_keys"]) == KEYS  # the merge found every key
    extra = scored.non_tensor_batch
    assert extra["failed"].tolist() == [1.0] + [0.0] * 7
    assert set(extra["fewshot_version"].tolist()) == {1.0}  # pinned by EQS_REWARD_FEWSHOT_VERSION
    scores = scored.batch["rm_scores"].sum(dim=-1)
    expected = [None, R_GOOD, R_SHORT, R_GOOD, R_GOOD, R_SHORT, R_SHORT, R_GOOD]
    assert scores[1:].tolist() == pytest.approx(expected[1:], rel=1e-5)  # EOS or not: the same
    assert scores[0].item() == pytest.approx((2 * R_GOOD + R_SHORT) / 3, rel=1e-5)  # its group's
    response_mask = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :]
    advantages, _ = compute_grpo_outcome_advantage(
        token_level_rewards=scored.batch["rm_scores"],
        response_mask=response_mask,
        index=np.array(uids, dtype=object),
    )
    per_sample = advantages.sum(dim=-1)
    assert abs(per_sample[0].item()) < 1e-6  # the failed sample moves nothing
    assert per_sample[1].item() > 0 > per_sample[2].item()


def test_the_function_refuses_to_guess(
    stub_service: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module("eqs_reward.client.verl")
    for name in ("EQS_REWARD_URL", "EQS_REWARD_GROUP_SIZE", "EQS_REWARD_FAILURE_POLICY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(module, "_sync", None)
    monkeypatch.setenv("EQS_REWARD_GROUP_SIZE", "4")
    with pytest.raises(RuntimeError, match="EQS_REWARD_URL"):  # never a default host
        module.compute_score("eqs", text(GOOD), "blender")
    monkeypatch.setenv("EQS_REWARD_URL", stub_service.url)
    monkeypatch.delenv("EQS_REWARD_GROUP_SIZE")
    with pytest.raises(RuntimeError, match="EQS_REWARD_GROUP_SIZE"):
        module.compute_score("eqs", text(GOOD), "blender")
    monkeypatch.setenv("EQS_REWARD_FAILURE_POLICY", "zero")  # explicit: then 0.0 is allowed
    assert module.compute_score("eqs", text(BAD), "blender")["score"] == 0.0
    monkeypatch.setenv("EQS_REWARD_FAILURE_POLICY", "zeros")
    with pytest.raises(ValueError, match="EQS_REWARD_FAILURE_POLICY"):
        module.compute_score("eqs", text(GOOD), "blender")
    if module._sync is not None:
        module._sync.close()


def test_a_short_outage_is_waited_out_per_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = stub_judge_process(tmp_path).start()
    service = service_process(
        tmp_path, EQS_REWARD_JUDGE_URL=judge.url + "/v1", EQS_REWARD_JUDGE_MODEL="stub"
    )
    module = importlib.import_module("eqs_reward.client.verl")
    monkeypatch.setenv("EQS_REWARD_URL", service.url)
    monkeypatch.setenv("EQS_REWARD_GROUP_SIZE", "4")
    monkeypatch.delenv("EQS_REWARD_FEWSHOT_VERSION", raising=False)

    async def score_while_the_service_starts() -> dict[str, Any]:
        call = asyncio.ensure_future(
            module.compute_score_async("eqs", text(GOOD), None, {"query": "blender"})
        )
        await asyncio.sleep(2)  # the call is already waiting on a refused connection
        service.start()
        result: dict[str, Any] = await call
        await module.aclose()
        return result

    try:
        wait_http(judge.url + "/health", 30)
        result = asyncio.run(score_while_the_service_starts())
    finally:
        service.stop()
        judge.stop()
    assert result["score"] == pytest.approx(R_GOOD) and result["failed"] == 0.0
    assert set(result) == KEYS
