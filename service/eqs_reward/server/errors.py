"""Typed service errors and the one error envelope: ``{"error": {"message", "type", "code"}}``.

Raised by the scoring and bank services and the routes; ``eqs_reward.server._app`` turns each into
its status and envelope."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error the caller should see, with its HTTP status and a stable ``type``."""

    status = 500
    type = "internal_error"

    def __init_subclass__(cls, *, status: int, type: str, **kwargs: Any) -> None:
        """Each subclass names its status and ``type`` in its class line."""
        super().__init_subclass__(**kwargs)
        cls.status, cls.type = status, type

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class InvalidRequestError(ServiceError, status=422, type="invalid_request"):
    """The request is well formed JSON but breaks the contract (422)."""


class PayloadTooLargeError(ServiceError, status=413, type="payload_too_large"):
    """The request exceeds a size limit (413): split it."""


class BadRequestError(ServiceError, status=400, type="bad_request"):
    """The body is not JSON, or not UTF-8 (400)."""


class UnauthorizedError(ServiceError, status=401, type="unauthorized"):
    """An admin route was called without a bearer token (401)."""


class ForbiddenError(ServiceError, status=403, type="forbidden"):
    """The admin token is wrong, or the service has none, so writes are off (403)."""


class NotFoundError(ServiceError, status=404, type="not_found"):
    """A few-shot version, example, recipe or catalog version that does not exist (404); the
    message says where the existing ones are listed."""


class ConflictError(ServiceError, status=409, type="conflict"):
    """A write against a stale ``expected_version`` (409): the body carries the active one,
    so the caller can re-read and retry."""


class GateRefusedError(ServiceError, status=409, type="gate_refused"):
    """A few-shot add the agreement gate refused (409): the candidate judges labeled cases
    worse than the active version by more than the tolerance."""


class OverloadedError(ServiceError, status=429, type="overloaded"):
    """Too much work queued (429): retry after ``Retry-After`` seconds."""


class UnavailableError(ServiceError, status=503, type="unavailable"):
    """The service cannot work right now (503), e.g. its embedded judge is still starting."""


class GateIncompleteError(ServiceError, status=503, type="gate_incomplete"):
    """A bank gate or dry run could not judge enough of its labeled cases to compare (503): the
    judge is failing, so the change is refused rather than waved through."""


def envelope(status: int, type_: str, message: str, **extra: Any) -> dict[str, Any]:
    """The contract's error body: ``{"error": {"message", "type", "code"}}`` and any extra
    top-level fields (a gate's comparison, the active version)."""
    return {"error": {"message": message, "type": type_, "code": status}, **extra}
