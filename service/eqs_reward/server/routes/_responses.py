"""The error statuses each operation documents in the OpenAPI schema, with the one envelope."""

from __future__ import annotations

from typing import Any

from eqs_reward.server.schemas import ErrorBody

_WHY = {
    400: "the body is not valid JSON, or not UTF-8",
    401: "no admin token",
    403: "a wrong admin token, or writes are disabled on this service",
    404: "no such few-shot version, example or review case",
    408: "the request body did not arrive in time",
    409: "expected_version is stale, the agreement gate refused the change, or a review case "
    "is unlabeled or already published",
    413: "a size limit was exceeded (the message names it)",
    422: "the request breaks the contract (the message names each field), or an unknown query "
    "parameter",
    429: "the judge queue is full: retry after Retry-After seconds",
    503: "the service cannot work now: the embedded judge is starting, a store it needs is "
    "down, or (bank gate) the judge failed on too many labeled cases",
}

#: Every operation can meet these: an unknown query parameter (422), a store down (503).
COMMON = (422, 503)
#: Operations with a request body.
BODY = (400, 408, 413, 422, 503)
ADMIN = (401, 403)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each code with its description and the error envelope."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in sorted(set(codes))}
