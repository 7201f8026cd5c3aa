"""Run in a spawned child process, as TRL 1.16's ``AsyncGRPOTrainer`` runs its rollout worker:
unpickle the reward function and score one rollout group through TRL's own
``_AsyncRolloutLoop._score_group`` (the code that turns reward functions' outputs into rewards
and advantages). Only what that method reads of its loop is supplied."""

from __future__ import annotations

import asyncio
import json
import pickle
import warnings
from types import SimpleNamespace
from typing import Any


def score_group(pickled: bytes, completions: list[str], queue: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from accelerate.state import PartialState
        from trl.experimental.async_grpo.async_rollout_worker import (
            RolloutGroup,
            TrainingSequence,
            _AsyncRolloutLoop,
            _scrub_child_env,
        )
        from trl.trainer.utils import get_callable_name

    _scrub_child_env()  # what TRL's _child_main does before its loop exists
    PartialState()

    reward_func = pickle.loads(pickled)
    loop = SimpleNamespace(
        reward_funcs=[reward_func],
        reward_func_names=[get_callable_name(reward_func)],
        _env_reward_types=[],
        _provides_rollout_reward=False,
    )
    n = len(completions)
    prompt = [{"role": "user", "content": "Suggest 3 follow-ups for: blender"}]
    group = RolloutGroup(
        prompts=[prompt] * n,
        reward_kwargs={},
        completions=[[{"role": "assistant", "content": c}] for c in completions],
        completions_ids=[[1, 2, 3]] * n,
        completions_sequences=[
            [TrainingSequence([0, 1, 2, 3], [0, 1, 1, 1], [0.0, -0.1, -0.1, -0.1], str(i))]
            for i in range(n)
        ],
        tool_call_counts=[0] * n,
        tool_failure_counts=[0] * n,
        model_version=0,
        group_id=0,
        env_rewards=[None] * n,
        rollout_rewards=[None] * n,
    )
    samples = asyncio.run(_AsyncRolloutLoop._score_group(loop, group))  # type: ignore[arg-type]
    queue.put(
        json.dumps(
            {
                "name": loop.reward_func_names[0],
                "rows": [[s.advantage, s.metrics["reward"]] for s in samples],
            }
        )
    )
