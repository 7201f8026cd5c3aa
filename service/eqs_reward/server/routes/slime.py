"""``POST /slime``: slime's remote reward model (``--rm-type remote_rm --rm-url ...``).

slime (THUDM) posts one sample per request, ``{"prompt", "response", "label"}``, to the URL as
given, with a 120 s total timeout and 10 retries (``slime/rollout/rm_hub/__init__.py``,
``remote_rm``, commit 624b824), and takes the JSON answer itself as the reward: so the answer is
a bare number. Pins and the group size come from the URL's query string, as on ``/get_reward``
(``--rm-url 'http://reward:8000/slime?group_size=8&fewshot_version=3'``). A sample the judge could
not grade gets its group's mean reward from the service's group memory (neutral under GRPO's
group normalisation), else 0.0. The route answers within ``SLIME_DEADLINE_S``, well inside slime's
timeout, so slime never retries a request the service is still working on.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from eqs_reward.server._http import Admission, check_limits, json_response
from eqs_reward.server.protocols import slime_answer, slime_request
from eqs_reward.server.routes._deps import get_admission, get_scoring
from eqs_reward.server.routes._responses import BODY, errors
from eqs_reward.server.schemas import SlimeQuery
from eqs_reward.server.scoring import ScoringService

router = APIRouter(tags=["slime"])

#: The schema's bound on a prompt or response: 12 bytes a character at worst (an escaped
#: surrogate pair), one past it still fits the body limit.
MAX_CHARS = 50_000


class SlimeSample(BaseModel):
    """What slime's ``remote_rm`` posts: ``sample.prompt`` (text or chat messages),
    ``sample.response`` and ``sample.label`` (a query or context for the shopper, if any)."""

    model_config = ConfigDict(extra="ignore")

    # Bounds a request breaking them can state within the 1 MiB body limit (else it is a 413
    # before it is a 422); the service's own limits on a completion and a query still apply.
    prompt: str | list[dict[str, Any]] = Field(max_length=MAX_CHARS)
    response: str = Field(max_length=MAX_CHARS)
    label: Any = None


@router.post(
    "/slime",
    responses={
        200: {
            "description": "the reward, a bare number (slime takes the JSON answer as it is)",
            "content": {"application/json": {"schema": {"type": "number"}}},
        },
        **errors(*BODY, 429),
    },
    response_model=None,
)
async def slime_reward(
    body: SlimeSample,
    pins: Annotated[SlimeQuery, Query()],
    scoring: ScoringService = Depends(get_scoring),  # noqa: B008
    admission: Admission = Depends(get_admission),  # noqa: B008
) -> Response:
    """The reward of one slime sample: the set reward of its completion's suggestions."""
    request = slime_request(body.prompt, body.response, body.label, pins)
    check_limits(request, scoring.settings)
    response = await scoring.score(request, admit=admission)
    return json_response(slime_answer(response))
