"""The TRL adapter inside TRL 1.16's own GRPOTrainer (trl/trainer/grpo_trainer.py):
``_generate_and_score_completions`` computes the rewards (``_calculate_rewards``, which awaits our
function on the trainer's loop) and the advantages with TRL's code. The policy's sampling is
replaced through TRL's public ``rollout_func`` so the completions, hence the rewards, are known;
everything after sampling is TRL's. The service is a real process whose stub judge fails every
suggestion containing FAILME; soft scores put 0.9 on the stub's verdict."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():  # third-party import-time deprecation noise, not ours
    warnings.simplefilter("ignore")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.trainer.utils import nanstd

from eqs_reward.client.trl import eqs_reward_func
from tests._helpers import ServerProcess
from tests.client._completions import BAD, GOOD, R_GOOD, R_SHORT, SHORT, text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

PROMPT = [{"role": "user", "content": "Suggest 3 follow-ups for: blender"}]


class Script:
    """TRL's ``rollout_func``: the next completions, in order, instead of sampling."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.queue: list[tuple[str, bool]] = []  # (completion, end with the EOS token)

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        prompt_ids, completion_ids, logprobs = [], [], []
        for prompt in prompts:
            completion, eos = self.queue.pop(0)
            ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
            ids = [*ids, self.tokenizer.eos_token_id] if eos else ids
            prompt_ids.append(
                self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
            )
            completion_ids.append(ids)
            logprobs.append([0.0] * len(ids))
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}


def make_trainer(
    smollm2: Path, tmp_path: Path, reward_funcs: list[Any], steps: int = 1
) -> tuple[GRPOTrainer, Script]:
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    script = Script(tokenizer)
    dataset = Dataset.from_list([{"prompt": PROMPT, "query": "blender"}] * 16)
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=64,
        max_steps=steps,
        learning_rate=1e-6,
        beta=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=1,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=dataset,
        rollout_func=script,
    )
    return trainer, script


def score_group(
    trainer: GRPOTrainer, script: Script, completions: list[str], eos: bool = False
) -> dict[str, Any]:
    """One GRPO group of 4 through TRL's _generate_and_score_completions."""
    script.queue = [(c, eos) for c in completions]
    trainer.model.train()
    inputs = [{"prompt": PROMPT, "query": "blender"}] * 4
    return trainer._generate_and_score_completions(inputs)


def close(func: Any, trainer: GRPOTrainer) -> None:
    import asyncio

    asyncio.run_coroutine_threadsafe(func.aclose(), trainer.async_loop).result(10)


def test_a_failed_sample_is_left_out_of_the_group_when_ours_is_the_only_reward(
    stub_service: ServerProcess, smollm2: Path, tmp_path: Path
) -> None:
    func = eqs_reward_func(stub_service.url)
    trainer, script = make_trainer(smollm2, tmp_path, [func])
    out = score_group(trainer, script, [text(GOOD), text(SHORT), text(BAD), text(GOOD)])
    advantages = out["advantages"].tolist()
    assert advantages[2] == 0.0  # TRL zeroes an unscorable sample's advantage
    judged = torch.tensor([R_GOOD, R_SHORT, R_GOOD])
    expected = (judged - judged.mean()) / (nanstd(judged) + 1e-4)  # TRL's formula, 3 samples
    assert [advantages[i] for i in (0, 1, 3)] == pytest.approx(expected.tolist(), rel=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["eqs/failed_share"] == [0.25] and metrics["eqs/format_reward"] == [1.0]
    extra = trainer._logs["extra"]  # TRL's completions table
    assert list(extra["failed"]) == [0.0, 0.0, 1.0, 0.0]
    assert set(extra) >= {"answerability", "factuality", "information_gain", "format_reward"}

    # The cost of filling it with the group mean instead: the group's std shrinks, so the other
    # samples' advantages grow by sqrt((G-1)/(G-2)), 1.22 for G = 4 (written in the README).
    filled = eqs_reward_func(stub_service.url, policy="group_mean")
    trainer.reward_funcs = [filled]
    out = score_group(trainer, script, [text(GOOD), text(SHORT), text(BAD), text(GOOD)])
    assert abs(out["advantages"][2].item()) < 1e-6
    ratio = out["advantages"][0].item() / advantages[0]
    assert ratio == pytest.approx(math.sqrt(3 / 2), rel=1e-3)
    close(func, trainer)
    close(filled, trainer)


def test_with_a_second_reward_the_judge_term_of_a_failed_sample_is_neutral(
    stub_service: ServerProcess, smollm2: Path, tmp_path: Path
) -> None:
    lengths = [0.1, 0.2, 0.3, 0.4]

    def brevity(completions: list[Any], **_: Any) -> list[float]:
        return lengths[: len(completions)]

    func = eqs_reward_func(stub_service.url)  # auto: TRL cannot drop the sample here
    trainer, script = make_trainer(smollm2, tmp_path, [func, brevity])
    out = score_group(trainer, script, [text(GOOD), text(SHORT), text(BAD), text(GOOD)])
    judge = torch.tensor([R_GOOD, R_SHORT, (2 * R_GOOD + R_SHORT) / 3, R_GOOD])
    total = judge + torch.tensor(lengths)
    std = nanstd(total)
    advantages = out["advantages"]
    # The failed sample's advantage is its brevity term alone: the judge adds exactly nothing.
    brevity_term = (lengths[2] - sum(lengths) / 4) / (std.item() + 1e-4)
    assert advantages[2].item() == pytest.approx(brevity_term, rel=1e-5)
    assert advantages.tolist() == pytest.approx(((total - total.mean()) / (std + 1e-4)).tolist())
    close(func, trainer)


def test_a_trailing_end_token_and_a_pinned_version(
    stub_service: ServerProcess, smollm2: Path, tmp_path: Path
) -> None:
    func = eqs_reward_func(stub_service.url, fewshot_version=1)
    trainer, script = make_trainer(smollm2, tmp_path, [func])
    group = [text(GOOD), text(SHORT), text(SHORT), text(GOOD)]
    plain = score_group(trainer, script, group)["advantages"].tolist()
    ended = score_group(trainer, script, group, eos=True)["advantages"].tolist()
    assert plain == ended and plain[0] > 0 > plain[1]
    # A newer bank version exists; the run keeps the version it pinned.
    example = {
        "context": {"query": "blender"},
        "suggestion": "Any blenders?",
        "labels": {"answerability": 1, "factuality": 1, "information_gain": 0},
    }
    added = httpx.post(
        stub_service.url + "/v1/fewshot",
        json={"examples": [example]},
        headers={"Authorization": "Bearer trainer-token"},
    )
    assert added.status_code in (200, 201) and added.json()["version"] >= 2
    score_group(trainer, script, group)
    assert set(trainer._metrics["train"]["eqs/fewshot_version"]) == {1.0}
    close(func, trainer)


@pytest.fixture
def restartable(
    running_service: Callable[..., ServerProcess],
) -> tuple[ServerProcess, ServerProcess]:
    service = running_service()
    return service.judge, service  # type: ignore[attr-defined]


def test_a_20_s_outage_during_a_real_training_run(
    restartable: tuple[ServerProcess, ServerProcess],
    smollm2: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The service is killed at the start of step 2 and back 20 s later: the run waits, then
    completes, and every reward it trained on is the service's real score (no guess, no fill)."""
    _, service = restartable
    func = eqs_reward_func(service.url, backoff_s=0.5, max_backoff_s=2.0)
    trainer, script = make_trainer(smollm2, tmp_path, [func], steps=4)
    groups = [
        [GOOD, SHORT, GOOD, SHORT],
        [GOOD, GOOD, SHORT, SHORT],
        [SHORT] * 4,
        [GOOD] * 4,
    ]
    script.queue = [(text(c), False) for group in groups for c in group]
    restarted: list[float] = []

    class Outage(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.global_step != 1:
                return
            service.kill(signal.SIGKILL)
            stopped = time.monotonic()

            def back() -> None:
                time.sleep(20)
                service.start()
                restarted.append(time.monotonic() - stopped)

            threading.Thread(target=back, daemon=True).start()

    trainer.add_callback(Outage())
    with caplog.at_level(logging.WARNING, logger="eqs_reward.client"):
        trainer.train()
    assert trainer.state.global_step == 4 and restarted and restarted[0] >= 20
    waits = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert waits, "the client logged its waits"
    logged = [row for row in trainer.state.log_history if "reward" in row]
    expected = [sum(R_GOOD if g is GOOD else R_SHORT for g in group) / 4 for group in groups]
    assert [row["reward"] for row in logged] == pytest.approx(expected, rel=1e-5)
    assert all(row["eqs/failed_share"] == 0.0 for row in logged)
    close(func, trainer)


def test_the_reward_function_pickles_and_scores_in_trls_async_worker(
    stub_service: ServerProcess,
) -> None:
    """TRL 1.16's AsyncGRPOTrainer pickles its reward functions into a spawned child: ours
    pickles (its settings, not its clients) and scores there through TRL's own
    ``_AsyncRolloutLoop._score_group``, a failed sample neutral (advantage 0)."""
    import multiprocessing
    import pickle

    from tests.client._async_grpo import score_group

    func = eqs_reward_func(stub_service.url, fewshot_version=1)

    async def used_here() -> bytes:
        await func(prompts=["blender"], completions=[text(GOOD)])  # a client made here...
        pickled = pickle.dumps(func)  # ...is not pickled
        await func.aclose()
        return pickled

    pickled = asyncio.run(used_here())
    assert pickle.loads(pickled).fewshot_version == 1
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    completions = [text(GOOD), text(SHORT), text(BAD), text(GOOD)]
    child = context.Process(target=score_group, args=(pickled, completions, queue))
    child.start()
    try:
        result = json.loads(queue.get(timeout=120))
    finally:
        child.join(30)
    assert child.exitcode == 0
    assert result["name"] == "eqs_reward"
    (a_good, r_good), (a_short, r_short), (a_failed, _), _ = result["rows"]
    assert r_good == pytest.approx(R_GOOD) and r_short == pytest.approx(R_SHORT)
    assert a_failed == pytest.approx(0.0, abs=1e-6)  # neutral: its group's mean
    assert a_good > 0 > a_short


def test_outside_a_trainer_groups_come_from_the_prompts(stub_service: ServerProcess) -> None:
    """Called without TRL's kwargs (plain string prompts, no trainer to ask): samples of one
    prompt form a group, and a failed one gets its group's mean."""
    import asyncio

    func = eqs_reward_func(stub_service.url)

    async def call() -> list[float | None]:
        rewards = await func(
            prompts=["blender", "blender", "mixer"],
            completions=[text(GOOD), text(BAD), text(SHORT)],
        )
        await func.aclose()
        return rewards

    good, failed, short = asyncio.run(call())
    assert good == failed == pytest.approx(R_GOOD) and short == pytest.approx(R_SHORT)


def test_a_pinned_recipe_logs_every_signal_in_trls_tables(
    stub_service: ServerProcess, smollm2: Path, tmp_path: Path
) -> None:
    func = eqs_reward_func(stub_service.url, recipe="qualeqs-blend", fewshot_version=1)
    trainer, script = make_trainer(smollm2, tmp_path, [func])
    group = [text(GOOD), text(SHORT), text(BAD), text(GOOD)]
    out = score_group(trainer, script, group)
    signals = ["judge.answerability", "judge.factuality", "judge.information_gain",
               "exclusivity.novelty", "exclusivity.distinctness", "shopper.tap",
               "exclusivity.diversity", "shopper.any_tap"]  # fmt: skip
    extra = trainer._logs["extra"]  # TRL's completions table: a column per signal
    metrics = trainer._metrics["train"]
    for name in signals:
        assert len(extra[name]) == 4, name
        # The failed sample: the LLM heads failed on it (NaN), the embeddings did not.
        assert math.isnan(extra[name][2]) == (not name.startswith("exclusivity.")), name
        assert f"eqs/{name}" in metrics, name
    assert metrics["eqs/recipe_version"] == [1.0]
    # TRL's rewards are the service's under that recipe.
    direct = httpx.post(
        stub_service.url + "/v1/score",
        json={
            "items": [{"context": {"query": "blender"}, "completion": text(GOOD)}],
            "options": {"recipe": "qualeqs-blend", "score_mode": "soft", "fewshot_version": 1},
        },
    ).json()["results"][0]
    rewards = trainer._logs["rewards"]["eqs_reward"]
    assert rewards[0] == pytest.approx(direct["reward"], rel=1e-5)
    assert out["advantages"][2].item() == 0.0
    close(func, trainer)
