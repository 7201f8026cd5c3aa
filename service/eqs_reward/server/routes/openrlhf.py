"""``POST /get_reward``: OpenRLHF's remote reward protocol (``--reward.remote_url``).

Body ``{"query": [prompt + response, ...], "prompts": [...], "labels": [...]}``; answer
``{"rewards": [...], "scores": [...], "extra_logs": {...}}``, built from the scoring service's
response directly (``eqs_reward.server.protocols``). The shopper's context comes from
``labels`` (a query, or a JSON context; pass ``--data.label_key``) or else the prompt. OpenRLHF
decodes with special tokens kept, so the response's trailing chat-template end tokens are
ignored (``end_tokens`` adds the policy's own).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from eqs_reward.server._http import Admission, check_limits, json_response
from eqs_reward.server.protocols import openrlhf_answer, openrlhf_request
from eqs_reward.server.routes._deps import get_admission, get_scoring
from eqs_reward.server.routes._responses import BODY, errors
from eqs_reward.server.schemas import GetRewardRequest, GetRewardResponse
from eqs_reward.server.scoring import ScoringService
from eqs_reward.server.settings import MAX_INT64

router = APIRouter(tags=["OpenRLHF"])


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
    score_request, groups = openrlhf_request(
        body,
        fewshot_version=fewshot_version,
        end_tokens=end_tokens,
        recipe=recipe,
        group_size=group_size,
        deadline_s=deadline_s,
    )
    check_limits(score_request, scoring.settings)
    response = await scoring.score(score_request, admit=admission)
    return json_response(openrlhf_answer(response, groups, request.app.state.settings))
