"""What belongs to HTTP and nowhere else: size limits (413), admission to the judge queue (429),
strict query parameters (422), and writing JSON bodies. The scoring and bank services below
know none of it, so the gate, calibration and offline batches are never refused by limits meant
for one request."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from eqs_reward.server.errors import (
    ForbiddenError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.schemas import ScoreRequest
from eqs_reward.server.scoring import ScoringService
from eqs_reward.server.settings import Settings

__all__ = [
    "Admission",
    "check_admin_token",
    "check_limits",
    "json_response",
    "json_stream_response",
    "reject_unknown_query_params",
]


def _dumps(payload: Any) -> bytes:
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def json_response(payload: Any, status_code: int = 200) -> Response:
    """Serialise once. Text a policy wrote may hold lone surrogates, which UTF-8 cannot encode:
    then the body is written with ASCII escapes (``\\ud800``), still valid JSON."""
    return Response(_dumps(payload), status_code=status_code, media_type="application/json")


def json_stream_response(head: dict[str, Any], key: str, items: Iterable[Any]) -> Response:
    """``head`` with ``key`` holding ``items``, written one item at a time: a large body (a bank
    version of thousands of examples) is never held whole in memory, as text or as objects."""

    def chunks() -> Iterator[bytes]:
        yield _dumps(head)[:-1] + (b',"' if head else b'{"') + key.encode() + b'":['
        for n, item in enumerate(items):
            yield (b"," if n else b"") + _dumps(item)
        yield b"]}"

    return StreamingResponse(chunks(), media_type="application/json")


def check_admin_token(settings: Settings, authorization: str | None) -> None:
    """The admin token from an ``Authorization`` header, compared in constant time: none set on
    the service -> 403 (writes disabled), missing -> 401, wrong -> 403."""
    if not settings.admin_token:
        raise ForbiddenError(
            "few-shot writes are disabled: set EQS_REWARD_ADMIN_TOKEN on the service to enable "
            "them, then send 'Authorization: Bearer <token>'"
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "few-shot writes need 'Authorization: Bearer <admin token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.strip().encode(), settings.admin_token.encode()):
        raise ForbiddenError("the admin token is not valid")


def check_limits(request: ScoreRequest, settings: Settings) -> None:
    """Refuse requests over the size limits with 413, naming the limit and where it was hit.

    A raw completion is held to the same suggestion count as a list (it is parsed first)."""
    if len(request.items) > settings.max_items:
        raise PayloadTooLargeError(
            f"{len(request.items)} items exceed the limit of {settings.max_items} per request; "
            "split the batch"
        )
    limit = settings.max_text_chars
    per_item = settings.max_suggestions_per_item
    for index, item in enumerate(request.items):
        where = f"items[{index}]"
        if item.suggestions is not None and len(item.suggestions) > per_item:
            raise PayloadTooLargeError(
                f"{where}.suggestions has {len(item.suggestions)} entries, over the limit of "
                f"{per_item}"
            )
        if item.completion is not None:
            completion_limit = limit * per_item
            if len(item.completion) > completion_limit:
                raise PayloadTooLargeError(
                    f"{where}.completion has {len(item.completion)} characters, over the limit "
                    f"of {completion_limit}"
                )
        context = item.context
        texts = [("context.query", context.query), ("context.profile", context.profile or "")]
        texts += [
            (f"context.history[{i}].content", t.content) for i, t in enumerate(context.history)
        ]
        for field, text in texts:
            if len(text) > limit:
                raise PayloadTooLargeError(
                    f"{where}.{field} has {len(text)} characters, over the limit of {limit}"
                )
        if len(context.history) > settings.max_history_turns:
            raise PayloadTooLargeError(
                f"{where}.context.history has {len(context.history)} turns, over the limit of "
                f"{settings.max_history_turns}"
            )


class Admission:
    """Refuse work the judge cannot start soon: 429 with an honest ``Retry-After``.

    A request is refused only while others' judge calls are already waiting or running and its
    own would overflow ``judge_concurrency + judge_queue_max``. An idle service admits any
    request within the size limits, however many judge calls it needs (it then runs under the
    request deadline), so a request inside the documented limits is never refused forever.
    """

    def __init__(self, settings: Settings, scoring: ScoringService, metrics: Metrics) -> None:
        self.capacity = settings.judge_concurrency + settings.judge_queue_max
        self.scoring = scoring
        self.metrics = metrics

    def __call__(self, new_calls: int) -> None:
        backlog = self.scoring.pool.backlog
        if not new_calls or backlog == 0 or backlog + new_calls <= self.capacity:
            return
        rate = self.scoring.pool.finished.rate()
        wait = min(60, max(1, math.ceil(backlog / rate))) if rate else 5
        self.metrics.overloaded.inc()
        raise OverloadedError(
            f"the judge queue is full ({backlog} calls waiting or running, room for "
            f"{self.capacity}; this request needs {new_calls}); retry after {wait} s",
            headers={"Retry-After": str(wait)},
        )


def _declared_query_params(dependant: Dependant) -> Iterable[str]:
    for param in dependant.query_params:
        model = param.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):  # a query parameter model
            yield from (field.alias or name for name, field in model.model_fields.items())
        else:
            yield param.alias
    for sub in dependant.dependencies:
        yield from _declared_query_params(sub)


async def reject_unknown_query_params(request: Request) -> None:
    """422 for a query parameter the route does not take: a misspelt ``dry_run`` must never
    turn into a write (``../shared/api-contract.md``, HTTP details)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    known = set(_declared_query_params(dependant)) if dependant is not None else set()
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise InvalidRequestError(
            f"unknown query parameter(s): {', '.join(unknown)}; this operation takes: {allowed}"
        )
