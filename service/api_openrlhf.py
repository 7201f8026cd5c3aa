"""``POST /get_reward``: OpenRLHF's remote reward model protocol (``--remote_rm_url``).

Body ``{"query": [prompt + response, ...], "prompts": [...], "labels": [...]}``; answer
``{"rewards": [...], "scores": [...], "extra_logs": {...}}``. The shopper's context comes from
``labels`` (a query, or a JSON context; pass ``--label_key`` to OpenRLHF) or else the prompt.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.client import parse_response
from service.deps import get_scorer
from service.integrations.openrlhf import openrlhf_answer, openrlhf_items
from service.schemas import ScoreRequest
from service.scoring import Scorer

router = APIRouter(tags=["OpenRLHF"])


class GetRewardRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    query: list[str] = Field(min_length=1, description="prompt + response texts")
    prompts: list[str] | None = None
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _same_lengths(self) -> GetRewardRequest:
        for name in ("prompts", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.query):
                raise ValueError(f"'{name}' has {len(value)} entries for {len(self.query)} queries")
        return self


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


@router.post("/get_reward", response_model=GetRewardResponse)
async def get_reward(
    body: GetRewardRequest,
    request: Request,
    scorer: Scorer = Depends(get_scorer),  # noqa: B008
) -> dict[str, Any]:
    """Set rewards for OpenRLHF; failed samples follow EQS_REWARD_OPENRLHF_FAILURE_POLICY."""
    contexts, responses, groups = openrlhf_items(body.query, body.prompts, body.labels)
    score_request = ScoreRequest.model_validate(
        {
            "items": [
                {"context": c, "completion": r} for c, r in zip(contexts, responses, strict=True)
            ],
            "options": {"k": 3, "score_mode": "soft", "on_failure": "null"},
        }
    )
    response = await scorer.score(score_request)
    result = parse_response(response.model_dump(mode="json"))
    policy = request.app.state.settings.openrlhf_failure_policy
    return openrlhf_answer(result, groups, policy)
