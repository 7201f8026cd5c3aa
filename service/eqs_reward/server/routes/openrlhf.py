"""``POST /get_reward``: OpenRLHF's remote reward protocol (``--reward.remote_url``).

Body ``{"query": [prompt + response, ...], "prompts": [...], "labels": [...]}``; answer
``{"rewards": [...], "scores": [...], "extra_logs": {...}}``, built from the scoring service's
response directly. The shopper's context comes from ``labels`` (a query, or a JSON context; pass
``--data.label_key``) or else the prompt. OpenRLHF decodes with special tokens kept, so the
response's trailing chat-template end tokens are ignored (``end_tokens`` adds the policy's own).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from eqs_reward._trainer_inputs import context_from, split_response
from eqs_reward.rewards import apply_policy
from eqs_reward.server._http import Admission, check_limits, json_response
from eqs_reward.server.routes._deps import get_admission, get_scoring
from eqs_reward.server.routes._responses import BODY, errors
from eqs_reward.server.schemas import GetRewardRequest, GetRewardResponse, ScoreRequest
from eqs_reward.server.scoring import ScoringService
from eqs_reward.server.settings import MAX_INT64, Settings
from eqs_reward.types import DIMENSIONS, ScoreResponse

router = APIRouter(tags=["OpenRLHF"])


def _readable(text: str) -> str:
    """Trainer-side text (prompts, labels) with any lone surrogate replaced, for the context."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _labels(body: GetRewardRequest) -> list[Any]:
    labels = list(body.labels) if body.labels is not None else [None] * len(body.query)
    return [_readable(v) if isinstance(v, str) else v for v in labels]


def answer(response: ScoreResponse, groups: list[str], settings: Settings) -> dict[str, Any]:
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


@router.post("/get_reward", response_model=GetRewardResponse, responses=errors(*BODY, 429))
async def get_reward(
    body: GetRewardRequest,
    request: Request,
    fewshot_version: Annotated[
        Annotated[int, Field(ge=1, le=MAX_INT64)] | SkipJsonSchema[None],
        Query(description="pin the few-shot version"),
    ] = None,
    end_tokens: Annotated[
        Annotated[str, Field(max_length=400)] | SkipJsonSchema[None],
        Query(
            description="the policy's own end or stop tokens, comma-separated, if its chat "
            "template's are not among the common ones",
        ),
    ] = None,
    recipe: Annotated[
        Annotated[str, Field(min_length=1, max_length=64)] | SkipJsonSchema[None],
        Query(
            description="pin the recipe combining the reward heads (GET /v1/recipes); default: "
            "the server's",
        ),
    ] = None,
    group_size: Annotated[
        Annotated[int, Field(ge=2, le=1024)] | SkipJsonSchema[None],
        Query(
            description="OpenRLHF's --rollout.n_samples_per_prompt: a failed sample then gets "
            "the mean reward of its prompt's other samples, which the service remembers",
        ),
    ] = None,
    deadline_s: Annotated[
        Annotated[float, Field(gt=0, le=3600)] | SkipJsonSchema[None],
        Query(description="the caller's deadline: samples not scored by then are failed"),
    ] = None,
    scoring: ScoringService = Depends(get_scoring),  # noqa: B008
    admission: Admission = Depends(get_admission),  # noqa: B008
) -> Response:
    """Set rewards for OpenRLHF; failed samples follow EQS_REWARD_OPENRLHF_FAILURE_POLICY."""
    prompts = [_readable(p) for p in body.prompts] if body.prompts is not None else None
    labels = _labels(body)
    items = []
    for index, query in enumerate(body.query):
        prompt = prompts[index] if prompts is not None else ""
        items.append(
            {
                "context": context_from(labels[index], prompt),
                "completion": split_response(query, prompt),
            }
        )
    score_request = ScoreRequest.model_validate(
        {
            "items": items,
            "options": {
                "k": 3,
                "score_mode": "soft",
                "on_failure": "null",
                "fewshot_version": fewshot_version,
                "end_tokens": [t for t in (end_tokens or "").split(",") if t][:16],
                "group_size": group_size,
                "recipe": recipe,
                "deadline_s": deadline_s,
            },
        }
    )
    check_limits(score_request, scoring.settings)
    response = await scoring.score(score_request, admit=admission)
    groups = prompts if prompts is not None else [str(i) for i in range(len(body.query))]
    return json_response(answer(response, groups, request.app.state.settings))
