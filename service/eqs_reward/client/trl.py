"""TRL: an async reward function for ``GRPOTrainer`` (checked against TRL 1.16).

    from eqs_reward.client.trl import eqs_reward_func
    trainer = GRPOTrainer(..., reward_funcs=[eqs_reward_func(fewshot_version=3)])

TRL calls it as ``await f(prompts=..., completions=..., completion_ids=..., **columns,
trainer_state=..., log_extra=..., log_metric=...)`` on its own event loop, once per batch, with
each prompt repeated ``num_generations`` times. It sends the batch as one ``/v1/score`` request
and returns one set reward per completion (``None`` only with ``policy="skip"``, which TRL reads
as "no reward from this function"). The shopper's context comes from the dataset column
``query_column`` (a query string or a context dict) or else from the prompt's last user message.
The three dimensions go to TRL's completions table through ``log_extra`` and their means to its
metrics through ``log_metric``, when the installed TRL passes them.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from eqs_reward._trainer_inputs import completion_text, context_from, prompt_text
from eqs_reward.client._adapters import pinned_version, service_url
from eqs_reward.client._client import AsyncRewardClient
from eqs_reward.rewards import apply_policy
from eqs_reward.types import DIMENSIONS, FailurePolicy, ScoreMode

RewardFunc = Callable[..., Awaitable[list[float | None]]]


def eqs_reward_func(
    url: str | None = None,
    *,
    policy: FailurePolicy = "group_mean",
    score_mode: ScoreMode = "soft",
    fewshot_version: int | None = None,
    k: int | None = 3,
    query_column: str = "query",
    **client_options: Any,
) -> RewardFunc:
    """Build the reward function. One client per event loop (TRL keeps one loop per trainer)."""
    clients: dict[asyncio.AbstractEventLoop, AsyncRewardClient] = {}
    version = pinned_version(fewshot_version)

    def client() -> AsyncRewardClient:
        loop = asyncio.get_running_loop()
        if loop not in clients:
            clients[loop] = AsyncRewardClient(
                service_url(url),
                k=k,
                score_mode=score_mode,
                fewshot_version=version,
                **client_options,
            )
        return clients[loop]

    async def eqs_reward(
        prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:
        columns = kwargs.get(query_column)
        contexts = [
            context_from(columns[i] if columns else None, prompt_text(prompt))
            for i, prompt in enumerate(prompts)
        ]
        texts = [completion_text(c) for c in completions]
        result = await client().score_completions(contexts, texts)
        rewards = apply_policy(
            [item.reward for item in result.results],
            [json.dumps(p, sort_keys=True, default=str) for p in prompts],
            policy,
        )
        log_extra, log_metric = kwargs.get("log_extra"), kwargs.get("log_metric")
        for dimension in DIMENSIONS:
            values = [item.dimension_mean(dimension) for item in result.results]
            if log_extra is not None:
                log_extra(dimension, [math.nan if v is None else v for v in values])
            judged = [v for v in values if v is not None]
            if log_metric is not None and judged:
                log_metric(f"eqs/{dimension}", sum(judged) / len(judged))
        if log_metric is not None:
            n = len(result.results) or 1
            log_metric("eqs/format_reward", sum(i.format_reward for i in result.results) / n)
            log_metric("eqs/failed_share", sum(i.status != "ok" for i in result.results) / n)
        return rewards

    async def aclose() -> None:
        """Close this loop's client (TRL never does: the process exit does)."""
        loop = asyncio.get_running_loop()
        if loop in clients:
            await clients.pop(loop).aclose()

    eqs_reward.__name__ = "eqs_reward"
    eqs_reward.aclose = aclose  # type: ignore[attr-defined]
    return eqs_reward
