"""veRL: the custom reward function for the reward loop (tested against veRL 0.9.1's own
``NaiveRewardManager.run_single``, loaded by its ``load_reward_manager``, and its GRPO advantage).

    reward:
      custom_reward_function:
        path: <site-packages>/eqs_reward/client/verl.py
        name: compute_score          # or compute_score_async

veRL calls it once per sample, ``compute_score(data_source=..., solution_str=..., ground_truth=...,
extra_info=...)`` (the response decoded without special tokens), awaiting it when it is a
coroutine function and running it in an executor otherwise. Environment of the reward workers:

- ``EQS_REWARD_URL`` (required), ``EQS_REWARD_FEWSHOT_VERSION`` and ``EQS_REWARD_RECIPE`` (pin
  both for a run);
- ``EQS_REWARD_GROUP_SIZE``: ``actor_rollout_ref.rollout.n``. A sample arrives alone, so the
  service remembers each context's recent rewards and gives a failed sample the mean of its
  group's judged siblings: its GRPO advantage is then 0. Required unless
  ``EQS_REWARD_FAILURE_POLICY=zero`` (a failed sample scores 0.0, a penalty under GRPO);
- ``EQS_REWARD_SCORE_MODE`` (``soft``), ``EQS_REWARD_WAIT_S`` (600: how long to wait out an
  unreachable service before the error that ends ``run_single``).

The context comes from ``extra_info["context"]`` (a contract context), ``extra_info["query"]``, or
``ground_truth`` (the shopper's query). Every call returns the same keys, so veRL's merging of
``reward_extra_info`` across samples never meets a missing one: ``score``, the three dimensions,
``format_reward``, ``failed``, ``fewshot_version``, ``recipe_version``, ``recipe:<id>`` (1.0) and
every signal of the recipe's heads (``judge.answerability``, ``exclusivity.diversity``, ...; 0.0
where a head failed, as for the dimensions).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from eqs_reward._trainer_inputs import context_from
from eqs_reward.client._adapters import (
    deadline_from_env,
    pinned_recipe,
    pinned_version,
    policy_from_env,
    service_url,
)
from eqs_reward.client._client import AsyncRewardClient, RewardClient
from eqs_reward.types import DIMENSIONS, ItemResult, ScoreResponse

__all__ = ["aclose", "compute_score", "compute_score_async"]

_sync: RewardClient | None = None
_sync_lock = threading.Lock()  # veRL runs compute_score in executor threads, several at once
_async: dict[asyncio.AbstractEventLoop, AsyncRewardClient] = {}


def _settings() -> tuple[dict[str, Any], dict[str, Any]]:
    """Client options and per-request options, from the environment."""
    policy = policy_from_env("group_mean")
    raw = os.environ.get("EQS_REWARD_GROUP_SIZE", "").strip()
    if policy == "group_mean" and not raw:
        raise RuntimeError(
            "set EQS_REWARD_GROUP_SIZE to actor_rollout_ref.rollout.n in the reward workers' "
            "environment: veRL scores one sample at a time, and a sample the judge failed on is "
            "neutral only with its group's mean (or set EQS_REWARD_FAILURE_POLICY=zero)"
        )
    client = {
        "k": 3,
        "score_mode": os.environ.get("EQS_REWARD_SCORE_MODE", "soft"),
        "fewshot_version": pinned_version(),
        "recipe": pinned_recipe(),
        "wait_for_service_s": float(os.environ.get("EQS_REWARD_WAIT_S", "600")),
        "deadline_s": deadline_from_env(),
    }
    request = {"group_size": int(raw)} if raw and policy == "group_mean" else {}
    return client, request


def _context(ground_truth: Any, extra_info: dict[str, Any] | None) -> dict[str, Any]:
    info = extra_info or {}
    return context_from(info.get("context") or info.get("query") or ground_truth)


def _as_dict(response: ScoreResponse) -> dict[str, Any]:
    item: ItemResult = response.results[0]
    score = item.neutral_reward
    out: dict[str, Any] = {"score": 0.0 if score is None else score}
    for dimension in DIMENSIONS:
        value = item.dimension_mean(dimension)
        out[dimension] = 0.0 if value is None else value
    out["format_reward"] = item.format_reward
    out["failed"] = 0.0 if item.status == "ok" else 1.0
    out["fewshot_version"] = float(response.meta.fewshot_version)
    for name, (value,) in response.signal_logs().items():
        out[name] = 0.0 if value is None else value
    recipe = response.meta.recipe or {}
    if recipe:
        out[f"recipe:{recipe['id']}"] = 1.0
        out["recipe_version"] = float(recipe["version"])
    return out


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Per sample, blocking (veRL runs it in an executor thread; the client is thread-safe)."""
    global _sync
    client_options, options = _settings()
    if _sync is None:
        _sync = RewardClient(service_url(), **client_options)
    response = _sync.score_completions(
        [_context(ground_truth, extra_info)], [solution_str], **options
    )
    return _as_dict(response)


async def compute_score_async(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Per sample, awaited by veRL's reward loop; one pooled client per event loop."""
    client_options, options = _settings()
    loop = asyncio.get_running_loop()
    if loop not in _async:
        _async[loop] = AsyncRewardClient(service_url(), **client_options)
    response = await _async[loop].score_completions(
        [_context(ground_truth, extra_info)], [solution_str], **options
    )
    return _as_dict(response)


async def aclose() -> None:
    """Close the running loop's client (veRL never does: the worker's exit does)."""
    client = _async.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
