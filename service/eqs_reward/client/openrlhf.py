"""OpenRLHF: the reward function file for ``--reward.remote_url <this file>``.

OpenRLHF imports this file by path and calls ``reward_func(queries, prompts, labels)`` in a
thread, one sample at a time. It forwards them to the service's ``POST /get_reward`` (the same
endpoint ``--reward.remote_url http://host:8000/get_reward`` reaches directly), so both ways
score identically; going through this file adds the client's patience: while the service is
unreachable it waits (up to ``EQS_REWARD_WAIT_S``, 600 s) instead of failing the sample.

Environment: ``EQS_REWARD_URL`` (required), ``EQS_REWARD_FEWSHOT_VERSION`` (pin it for a run).
"""

from __future__ import annotations

import os
from typing import Any

from eqs_reward.client._adapters import pinned_version, service_url
from eqs_reward.client._client import RewardClient

_client: RewardClient | None = None


def _shared_client() -> RewardClient:
    global _client
    if _client is None:
        wait = float(os.environ.get("EQS_REWARD_WAIT_S", "600"))
        _client = RewardClient(service_url(), wait_for_service_s=wait)
    return _client


def reward_func(
    queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF's custom reward function: rewards, scores and extra_logs as tensors."""
    import torch

    params: dict[str, Any] = {}
    version = pinned_version()
    if version is not None:
        params["fewshot_version"] = version
    answer = _shared_client().get_reward(queries, prompts, labels, **params)
    return {
        "rewards": torch.tensor(answer["rewards"], dtype=torch.float32),
        "scores": torch.tensor(answer["scores"], dtype=torch.float32),
        "extra_logs": {
            key: torch.tensor(values, dtype=torch.float32)
            for key, values in answer["extra_logs"].items()
        },
    }
