"""veRL: custom reward functions (checked against veRL's reward managers as of late 2026:
``NaiveRewardManager``/reward loop call ``compute_score(data_source=..., solution_str=...,
ground_truth=..., extra_info=...)``, awaiting it when it is a coroutine function;
``BatchRewardManager`` calls ``compute_score(data_sources=..., solution_strs=...,
ground_truths=..., extra_infos=...)``).

    custom_reward_function:
      path: <site-packages>/eqs_reward/client/verl.py
      name: compute_score          # or compute_score_async (reward loop), compute_score_batch
    # with reward_model.reward_manager=batch for compute_score_batch

The context comes from ``extra_info["context"]`` (a contract context), ``extra_info["query"]``,
or ``ground_truth`` (put the shopper's query there). Every function returns dicts with
``score`` and the three dimensions, so veRL logs them.

Failure policy (``EQS_REWARD_FAILURE_POLICY``, default ``group_mean``): the batch form groups
samples by context and gives a failed one its group's mean. A per-sample call sees no group:
there ``group_mean`` and ``skip`` fall back to 0.0 (veRL needs a number), flagged ``failed: 1``;
use the batch manager to keep failed samples neutral.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from eqs_reward._trainer_inputs import context_from
from eqs_reward.client._adapters import pinned_version, policy_from_env, service_url
from eqs_reward.client._client import AsyncRewardClient, RewardClient
from eqs_reward.rewards import apply_policy
from eqs_reward.types import DIMENSIONS, ItemResult

_sync: RewardClient | None = None
_async: dict[asyncio.AbstractEventLoop, AsyncRewardClient] = {}


def _options() -> dict[str, Any]:
    return {
        "k": 3,
        "score_mode": os.environ.get("EQS_REWARD_SCORE_MODE", "soft"),
        "fewshot_version": pinned_version(),
    }


def _context(ground_truth: Any, extra_info: dict[str, Any] | None) -> dict[str, Any]:
    info = extra_info or {}
    return context_from(info.get("context") or info.get("query") or ground_truth)


def _as_dict(item: ItemResult, score: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"score": 0.0 if score is None else score}
    for dimension in DIMENSIONS:
        value = item.dimension_mean(dimension)
        out[dimension] = 0.0 if value is None else value
    out["format_reward"] = item.format_reward
    out["failed"] = 0.0 if item.status == "ok" else 1.0
    return out


def _single(item: ItemResult) -> dict[str, Any]:
    return _as_dict(item, apply_policy([item.reward], [0], "zero")[0])


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Per sample, blocking (veRL's naive manager runs it in an executor)."""
    global _sync
    if _sync is None:
        _sync = RewardClient(service_url(), **_options())
    result = _sync.score_completions([_context(ground_truth, extra_info)], [solution_str])
    return _single(result.results[0])


async def compute_score_async(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Per sample, awaited by veRL's reward loop; one pooled client per event loop."""
    loop = asyncio.get_running_loop()
    if loop not in _async:
        _async[loop] = AsyncRewardClient(service_url(), **_options())
    result = await _async[loop].score_completions(
        [_context(ground_truth, extra_info)], [solution_str]
    )
    return _single(result.results[0])


async def aclose() -> None:
    """Close the running loop's client (veRL never does: the worker's exit does)."""
    client = _async.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def compute_score_batch(
    data_sources: list[str],
    solution_strs: list[str],
    ground_truths: list[Any],
    extra_infos: list[dict[str, Any] | None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """The whole batch in one request; failed samples handled per the failure policy."""
    global _sync
    if _sync is None:
        _sync = RewardClient(service_url(), **_options())
    infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    contexts = [_context(g, i) for g, i in zip(ground_truths, infos, strict=True)]
    result = _sync.score_completions(contexts, list(solution_strs))
    groups = [repr(sorted(c.items())) for c in contexts]
    policy = policy_from_env("group_mean")
    rewards = apply_policy(
        [i.reward for i in result.results], groups, policy if policy == "group_mean" else "zero"
    )
    return [_as_dict(item, reward) for item, reward in zip(result.results, rewards, strict=True)]
