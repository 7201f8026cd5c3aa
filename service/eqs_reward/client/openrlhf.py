"""OpenRLHF: the reward function file for ``--reward.remote_url <this file>``.

OpenRLHF imports this file by path and calls ``reward_func(queries, prompts, labels)`` in a
thread, one sample at a time. It forwards them to the service's ``POST /get_reward`` (the same
endpoint ``--reward.remote_url http://host:8000/get_reward`` reaches directly), so both ways
score identically; going through this file adds the client's patience: while the service is
unreachable it waits (up to ``EQS_REWARD_WAIT_S``, 600 s) instead of failing the sample.

Environment: ``EQS_REWARD_URL`` (required), ``EQS_REWARD_FEWSHOT_VERSION`` and
``EQS_REWARD_RECIPE`` (pin both for a run; every signal of the recipe's heads is logged),
``EQS_REWARD_GROUP_SIZE`` (``--rollout.n_samples_per_prompt``: a sample the judge failed on then
gets the mean reward of its prompt's other samples, so its advantage is 0 under OpenRLHF's
``group_norm``, ``rloo``, ``reinforce_baseline`` and ``dr_grpo`` estimators).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from eqs_reward.client._adapters import (
    deadline_from_env,
    pinned_recipe,
    pinned_version,
    service_url,
)
from eqs_reward.client._client import RewardClient

_client: RewardClient | None = None
_lock = threading.Lock()  # OpenRLHF calls reward_func from several threads at once


def _shared_client() -> RewardClient:
    global _client
    with _lock:
        if _client is None:
            wait = float(os.environ.get("EQS_REWARD_WAIT_S", "600"))
            _client = RewardClient(
                service_url(), wait_for_service_s=wait, deadline_s=deadline_from_env()
            )
        return _client


def reward_func(
    queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF's custom reward function: the endpoint's answer as it comes, per sample lists
    of ``rewards``, ``scores`` and ``extra_logs`` (OpenRLHF turns them into tensors itself, as it
    does for the HTTP endpoint's answer)."""
    group_size = os.environ.get("EQS_REWARD_GROUP_SIZE", "").strip()
    params: dict[str, Any] = {
        "fewshot_version": pinned_version(),
        "recipe": pinned_recipe(),
        "group_size": int(group_size) if group_size else None,
    }
    answer: dict[str, Any] = _shared_client().get_reward(queries, prompts, labels, **params)
    return answer
