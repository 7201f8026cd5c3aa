"""Typed service errors and the one error envelope: ``{"error": {"message", "type", "code"}}``.

Raised by the scoring and bank services and the routes; ``eqs_reward.server._app`` turns each into
its status and envelope."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error the caller should see, with its HTTP status and a stable ``type``."""

    status = 500
    type = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class InvalidRequestError(ServiceError):
    """The request is well formed JSON but breaks the contract (422)."""

    status = 422
    type = "invalid_request"


class PayloadTooLargeError(ServiceError):
    """The request exceeds a size limit (413): split it."""

    status = 413
    type = "payload_too_large"


class BadRequestError(ServiceError):
    """The body is not JSON, or not UTF-8 (400)."""

    status = 400
    type = "bad_request"


class UnauthorizedError(ServiceError):
    status = 401
    type = "unauthorized"


class ForbiddenError(ServiceError):
    status = 403
    type = "forbidden"


class NotFoundError(ServiceError):
    status = 404
    type = "not_found"


class ConflictError(ServiceError):
    status = 409
    type = "conflict"


class GateRefusedError(ServiceError):
    """A few-shot add the agreement gate refused (409): the candidate judges labeled cases
    worse than the active version by more than the tolerance."""

    status = 409
    type = "gate_refused"


class OverloadedError(ServiceError):
    """Too much work queued (429): retry after ``Retry-After`` seconds."""

    status = 429
    type = "overloaded"


class UnavailableError(ServiceError):
    """The service cannot work right now (503), e.g. its embedded judge is still starting."""

    status = 503
    type = "unavailable"


def envelope(status: int, type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": status}, **extra}


class GateIncompleteError(ServiceError):
    """A bank gate or dry run could not judge enough of its labeled cases to compare (503): the
    judge is failing, so the change is refused rather than waved through."""

    status = 503
    type = "gate_incomplete"
