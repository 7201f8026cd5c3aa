"""The trainers' own reward protocols, as scoring requests and answers.

OpenRLHF's ``/get_reward`` and slime's remote reward model each speak their trainer's shapes;
here those shapes become a ``ScoreRequest`` and the scoring service's ``ScoreResponse`` becomes
the answer the trainer reads. Their routes (``routes/openrlhf.py``, ``routes/slime.py``) only
translate HTTP and call these.
"""

from __future__ import annotations

from typing import Any

from eqs_reward._trainer_inputs import context_from, prompt_text, split_response
from eqs_reward.rewards import apply_policy
from eqs_reward.server.schemas import (
    SLIME_DEADLINE_S,
    SLIME_GROUP_WAIT_S,
    GetRewardQuery,
    GetRewardRequest,
    ScoreRequest,
    TrainerQuery,
)
from eqs_reward.server.settings import Settings
from eqs_reward.types import DIMENSIONS, ScoreResponse

__all__ = [
    "openrlhf_answer",
    "openrlhf_request",
    "slime_answer",
    "slime_request",
]


def _readable(text: str) -> str:
    """Trainer-side text (prompts, labels) with any lone surrogate replaced, for the context."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def openrlhf_request(
    body: GetRewardRequest, pins: GetRewardQuery
) -> tuple[ScoreRequest, list[str]]:
    """The scoring request of an OpenRLHF batch, and each sample's group (its prompt). The
    shopper's context comes from the sample's label (a query, or a JSON context) or else its
    prompt; the response is the query with the prompt taken off."""
    prompts = [_readable(p) for p in body.prompts] if body.prompts is not None else None
    labels = list(body.labels) if body.labels is not None else [None] * len(body.query)
    labels = [_readable(v) if isinstance(v, str) else v for v in labels]
    items = []
    for index, query in enumerate(body.query):
        prompt = prompts[index] if prompts is not None else ""
        items.append(
            {
                "context": context_from(labels[index], prompt),
                "completion": split_response(query, prompt),
            }
        )
    request = ScoreRequest.model_validate(
        {
            "items": items,
            "options": {
                "k": 3,
                "score_mode": "soft",
                "on_failure": "null",
                "fewshot_version": pins.fewshot_version,
                "end_tokens": [t for t in (pins.end_tokens or "").split(",") if t][:16],
                "group_size": pins.group_size,
                "recipe": pins.recipe,
                "deadline_s": pins.deadline_s,
            },
        }
    )
    groups = prompts if prompts is not None else [str(i) for i in range(len(body.query))]
    return request, groups


def openrlhf_answer(
    response: ScoreResponse, groups: list[str], settings: Settings
) -> dict[str, Any]:
    """OpenRLHF's answer: set rewards, the same clipped to [0, 1] as ``scores``, and per-sample
    logs. A failed sample gets its group's mean: from the service's group memory when
    ``group_size`` was given (OpenRLHF sends one sample per request), else from the samples of
    its prompt in this request; ``EQS_REWARD_OPENRLHF_FAILURE_POLICY=zero`` gives 0 instead."""
    results = response.results
    policy = settings.openrlhf_failure_policy
    remembered = [r.neutral_reward if policy == "group_mean" else r.reward for r in results]
    rewards = apply_policy(remembered, groups, policy)
    numbers = [0.0 if r is None else r for r in rewards]
    extra: dict[str, list[float]] = {}
    for dimension in DIMENSIONS:
        values = [r.dimension_mean(dimension) for r in results]
        extra[dimension] = [0.0 if v is None else v for v in values]
    extra["format_reward"] = [r.format_reward for r in results]
    extra["failed"] = [0.0 if r.status == "ok" else 1.0 for r in results]
    extra["fewshot_version"] = [float(response.meta.fewshot_version)] * len(results)
    # Every head signal (suggestion signals averaged per sample, set signals as they are), and
    # the recipe: OpenRLHF logs numbers only, so its id is a key ("recipe:qualeqs" = 1).
    for name, column in response.signal_logs().items():
        extra[name] = [0.0 if v is None else v for v in column]
    recipe = response.meta.recipe or {}
    if recipe:
        extra[f"recipe:{recipe['id']}"] = [1.0] * len(results)
        extra["recipe_version"] = [float(recipe["version"])] * len(results)
    return {
        "rewards": numbers,
        "scores": [min(1.0, max(0.0, r)) for r in numbers],
        "extra_logs": extra,
    }


def slime_request(
    prompt: str | list[dict[str, Any]],
    response: str,
    label: Any,
    pins: TrainerQuery,
) -> ScoreRequest:
    """The scoring request of one slime sample (its label, when a query or a context, is the
    shopper's; else its prompt's last user message)."""
    text = prompt_text(prompt)
    context = context_from(label if isinstance(label, str | dict) else None, text)
    return ScoreRequest.model_validate(
        {
            "items": [{"context": context, "completion": response}],
            "options": {
                "k": 3,
                "score_mode": "soft",
                "on_failure": "null",
                "fewshot_version": pins.fewshot_version,
                "recipe": pins.recipe,
                "group_size": pins.group_size,
                "group_wait_s": SLIME_GROUP_WAIT_S,
                "deadline_s": min(SLIME_DEADLINE_S, pins.deadline_s or SLIME_DEADLINE_S),
            },
        }
    )


def slime_answer(response: ScoreResponse) -> float:
    """slime takes the answer as the reward: the set reward, a failed sample's group mean from
    the service's group memory, else 0.0."""
    reward = response.results[0].neutral_reward
    return 0.0 if reward is None else reward
