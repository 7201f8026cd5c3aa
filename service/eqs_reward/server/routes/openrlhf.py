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

from eqs_reward.server._http import Admission, check_limits, json_response
from eqs_reward.server.protocols import openrlhf_answer, openrlhf_request
from eqs_reward.server.routes._deps import get_admission, get_scoring
from eqs_reward.server.routes._responses import BODY, errors
from eqs_reward.server.schemas import GetRewardQuery, GetRewardRequest, GetRewardResponse
from eqs_reward.server.scoring import ScoringService

router = APIRouter(tags=["OpenRLHF"])


@router.post("/get_reward", response_model=GetRewardResponse, responses=errors(*BODY, 429))
async def get_reward(
    body: GetRewardRequest,
    request: Request,
    pins: Annotated[GetRewardQuery, Query()],
    scoring: ScoringService = Depends(get_scoring),  # noqa: B008
    admission: Admission = Depends(get_admission),  # noqa: B008
) -> Response:
    """Set rewards for OpenRLHF; failed samples follow EQS_REWARD_OPENRLHF_FAILURE_POLICY."""
    score_request, groups = openrlhf_request(body, pins)
    check_limits(score_request, scoring.settings)
    response = await scoring.score(score_request, admit=admission)
    return json_response(openrlhf_answer(response, groups, request.app.state.settings))
