"""``POST /v1/score`` (size limits and admission here, then the scoring service) and
``GET /v1/recipes`` (what ``options.recipe`` may name)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from eqs_reward.server._http import Admission, check_limits, json_response
from eqs_reward.server.routes._deps import get_admission, get_scoring
from eqs_reward.server.routes._responses import BODY, COMMON, errors
from eqs_reward.server.schemas import ScoreRequest
from eqs_reward.server.scoring import ScoringService
from eqs_reward.types import ScoreResponse

router = APIRouter(tags=["scoring"])


@router.post("/v1/score", response_model=ScoreResponse, responses=errors(*BODY, 429))
async def score(
    body: ScoreRequest,
    scoring: ScoringService = Depends(get_scoring),  # noqa: B008
    admission: Admission = Depends(get_admission),  # noqa: B008
) -> Response:
    """Score groups of suggestions: per-suggestion dimensions and rewards, format reward, set
    reward and disagreement. Judge failures come back as ``failed`` suggestions, never as an
    HTTP error."""
    check_limits(body, scoring.settings)
    result = await scoring.score(body, admit=admission)
    return json_response(result.to_dict())


@router.get("/v1/recipes", responses=errors(*COMMON))
async def recipes(scoring: ScoringService = Depends(get_scoring)) -> Response:  # noqa: B008
    """The recipes this server knows: for each its version, heads (with their settings and
    signals) and the expressions combining the signals into ``r(s)`` and ``r_q``; ``default``
    names the recipe of a request that names none."""
    return json_response(
        {
            "default": scoring.settings.default_recipe,
            "recipes": [recipe.describe() for _, recipe in sorted(scoring.recipes.items())],
        }
    )
