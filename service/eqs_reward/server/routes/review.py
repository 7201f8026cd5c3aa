"""``/v1/review``: the queue of online cases worth an operator's look (admin token: contexts may
hold shoppers' data). Page through it, label cases, publish labeled ones into a new bank version
through the bank's gate. The rules live in ``eqs_reward.server.review``; these routes only
translate HTTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator, Field
from pydantic.json_schema import SkipJsonSchema

from eqs_reward.server._http import json_response
from eqs_reward.server.bank import BankService
from eqs_reward.server.errors import NotFoundError
from eqs_reward.server.review import ReviewQuery, ReviewQueue
from eqs_reward.server.routes._deps import get_bank, require_admin
from eqs_reward.server.routes._responses import ADMIN, BODY, COMMON, errors
from eqs_reward.server.schemas import LabelCase, PublishCases
from eqs_reward.server.settings import MAX_INT64

router = APIRouter(prefix="/v1/review", tags=["review queue"])

CaseId = Annotated[str, Path(min_length=1, max_length=64, description="a case's id")]


def _utc(when: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC (the queue's times are)."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def _queue(request: Request) -> ReviewQueue:
    queue: ReviewQueue | None = request.app.state.review
    if queue is None:
        raise NotFoundError("the review queue is off on this service (EQS_REWARD_REVIEW_ENABLED)")
    return queue


# The bounds sit on the type inside the optional one (as in ``routes/fewshot.py``).
Text64 = Annotated[str, Field(min_length=1, max_length=64)] | SkipJsonSchema[None]
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_only(value: object) -> object:
    """The schema says an ISO 8601 date-time; pydantic alone would take a number of seconds."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("a date-time in ISO 8601, not a number")
    return value


When = Annotated[datetime, BeforeValidator(_iso_only)] | SkipJsonSchema[None]
REASONS = (
    "judge_failed, refused (or refused:<guard reason>), disagreement, near_threshold, "
    "judge_vs_taught, uniform"
)


@router.get("", dependencies=[Depends(require_admin)], responses=errors(*COMMON, *ADMIN, 404))
async def list_cases(
    request: Request,
    reason: Annotated[Text64, Query(description=REASONS)] = None,
    recipe: Annotated[Text64, Query(description="the recipe it was scored with")] = None,
    version: Annotated[
        Annotated[int, Field(ge=1, le=MAX_INT64)] | SkipJsonSchema[None],
        Query(description="the bank version it was scored with"),
    ] = None,
    since: Annotated[When, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[When, Query(description="created before (ISO 8601)")] = None,
    labeled: Annotated[
        bool | SkipJsonSchema[None], Query(description="only labeled (true) or unlabeled (false)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="cases per page")] = 50,
    after: Annotated[Text64, Query(description="the previous page's next_after")] = None,
) -> Response:
    """A page of the queue, newest first: ``items`` and ``next_after`` (the next page's
    cursor; null at the end)."""
    since, until = (_utc(t) for t in (since, until))
    query = ReviewQuery(reason, recipe, version, since, until, labeled)
    items, cursor = await _queue(request).page(query, limit, after)
    return json_response(
        {"items": [i.model_dump(mode="json") for i in items], "next_after": cursor}
    )


@router.post(
    "/{case_id}/label",
    dependencies=[Depends(require_admin)],
    responses=errors(*BODY, *ADMIN, 404),
)
async def label_case(request: Request, case_id: CaseId, body: LabelCase) -> Response:
    """Store an operator's three labels and rationale for a case (written before the answer);
    labeling again replaces them."""
    item = await _queue(request).label(case_id, body.labels, body.rationale)
    if item is None:
        raise NotFoundError(f"no review case {case_id}; GET /v1/review lists them")
    return json_response(item.model_dump(mode="json"))


@router.post(
    "/publish",
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses={
        200: {
            "description": "dry run: the gate's comparison; or every case was already in the bank"
        },
        201: {"description": "the new version, and the cases published in it"},
        **errors(*BODY, *ADMIN, 404, 409),
    },
)
async def publish_cases(
    request: Request,
    body: PublishCases,
    bank: BankService = Depends(get_bank),  # noqa: B008
) -> Response:
    """Labeled cases as examples of a new bank version, through the bank's gate (201; with
    ``dry_run``, 200 and the gate's comparison of the active and the candidate version). The
    cases are then marked with the version they went into."""
    limit = request.app.state.settings.fewshot_max_examples_per_add
    items, outcome = await _queue(request).publish(bank, body, limit, via="API")
    if outcome.write is None:
        return json_response({"dry_run": True, **(outcome.comparison or {})})
    write = outcome.write
    payload = {
        "version": write.version,
        "added": write.added,
        "duplicates": write.duplicates,
        "published": [i.id for i in items],
    }
    return json_response(payload, status_code=201 if write.created else 200)
