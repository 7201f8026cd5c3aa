"""OpenRLHF: ``--remote_rm_url`` either to the service's ``/get_reward`` endpoint, or to this
file, whose ``reward_func(queries, prompts, labels, **kwargs)`` OpenRLHF imports and calls
(checked against OpenRLHF's remote reward and custom reward function docs).

    --remote_rm_url http://127.0.0.1:8000/get_reward         # the endpoint, or
    --remote_rm_url <site-packages>/service/integrations/openrlhf.py   # this file
    --label_key query      # the column with the shopper's query (or a JSON context)

``queries`` are prompt + response texts; the response is what follows the prompt. The reward is
the set reward; ``scores`` (for dynamic filtering) is the same, in [0, 1]; ``extra_logs`` carry
the three dimensions per sample. Failed samples follow ``EQS_REWARD_FAILURE_POLICY``
(``group_mean`` by default: samples of one prompt form a group).
"""

from __future__ import annotations

import os
from typing import Any, cast

from service.client import DIMENSIONS, FailurePolicy, RewardClient, ScoreResult, apply_policy
from service.integrations import context_from, pinned_version, service_url

_client: RewardClient | None = None


def split_response(query: str, prompt: str | None) -> str:
    """OpenRLHF sends prompt + response; the response is what follows the prompt."""
    if prompt and query.startswith(prompt):
        return query[len(prompt) :]
    return query


def openrlhf_items(
    queries: list[str], prompts: list[str] | None, labels: list[Any] | None
) -> tuple[list[dict[str, Any]], list[str], list[Any]]:
    """Contexts, responses and group keys for OpenRLHF's inputs."""
    n = len(queries)
    prompts_ = list(prompts) if prompts is not None else [""] * n
    labels_ = list(labels) if labels is not None else [None] * n
    contexts = [
        context_from(label, prompt) for label, prompt in zip(labels_, prompts_, strict=True)
    ]
    responses = [split_response(q, p) for q, p in zip(queries, prompts_, strict=True)]
    return contexts, responses, prompts_


def openrlhf_answer(
    result: ScoreResult, groups: list[Any], policy: FailurePolicy
) -> dict[str, Any]:
    """``{"rewards", "scores", "extra_logs"}`` as plain lists (the endpoint's body)."""
    rewards = apply_policy([i.reward for i in result.items], groups, policy)
    numbers = [0.0 if r is None else r for r in rewards]
    extra: dict[str, list[float]] = {}
    for dimension in DIMENSIONS:
        values = [i.dimension_mean(dimension) for i in result.items]
        extra[dimension] = [0.0 if v is None else v for v in values]
    extra["format_reward"] = [i.format_reward for i in result.items]
    extra["failed"] = [0.0 if i.status == "ok" else 1.0 for i in result.items]
    return {
        "rewards": numbers,
        "scores": [min(1.0, max(0.0, r)) for r in numbers],
        "extra_logs": extra,
    }


def failure_policy() -> FailurePolicy:
    value = os.environ.get("EQS_REWARD_FAILURE_POLICY", "group_mean")
    return cast(FailurePolicy, value if value in ("group_mean", "zero") else "zero")


def reward_func(
    queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF's custom reward function: tensors for rewards and scores."""
    import torch

    global _client
    if _client is None:
        _client = RewardClient(
            service_url(), k=3, score_mode="soft", fewshot_version=pinned_version()
        )
    contexts, responses, groups = openrlhf_items(queries, prompts, labels)
    answer = openrlhf_answer(
        _client.score_completions(contexts, responses), groups, failure_policy()
    )
    return {
        "rewards": torch.tensor(answer["rewards"], dtype=torch.float32),
        "scores": torch.tensor(answer["scores"], dtype=torch.float32),
        "extra_logs": {
            k: torch.tensor(v, dtype=torch.float32) for k, v in answer["extra_logs"].items()
        },
    }
