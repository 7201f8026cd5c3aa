"""The client's exceptions. Every one carries the HTTP ``status`` (None when no answer came) and the
service's ``message``; catch ``RewardServiceError`` for all of them.

    RewardServiceError
    ├── RewardServiceUnavailable    unreachable, 5xx or 429 for longer than the client waits
    ├── RewardDeadlineExceeded      the call's own deadline passed
    └── RewardRequestRejected       4xx: the request itself is wrong; retrying cannot help
        ├── RewardAuthError         401 / 403 (admin token missing or wrong)
        ├── RewardNotFound          404 (unknown few-shot version, example or recipe)
        └── RewardConflict          409 (stale expected_version, or the bank gate refused)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RewardAuthError",
    "RewardConflict",
    "RewardDeadlineExceeded",
    "RewardNotFound",
    "RewardRequestRejected",
    "RewardServiceError",
    "RewardServiceUnavailable",
]


class RewardServiceError(Exception):
    """Base of the client's errors: ``status`` (or None) and ``message``."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message if status is None else f"{status}: {message}")
        self.message = message
        self.status = status


class RewardServiceUnavailable(RewardServiceError):
    """The service could not be reached, or answered 5xx/429, for longer than the client waits
    (``wait_for_service_s``)."""


class RewardDeadlineExceeded(RewardServiceError):
    """The call's deadline (``deadline_s``) passed before the service answered."""


class RewardRequestRejected(RewardServiceError):
    """The service refused the request (4xx other than 429). ``type`` and ``body`` come from its
    error envelope (``body`` holds extra fields, e.g. the gate's comparison)."""

    def __init__(
        self, status: int, type_: str, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{type_}: {message}", status=status)
        self.message = message
        self.type = type_
        self.body = body or {}


class RewardAuthError(RewardRequestRejected):
    """401 or 403: the admin token is missing, wrong, or writes are disabled on the service."""


class RewardNotFound(RewardRequestRejected):
    """404: an unknown few-shot version, example id or recipe."""


class RewardConflict(RewardRequestRejected):
    """409: ``expected_version`` is stale, or the bank's agreement gate refused the change."""


def rejected(status: int, type_: str, message: str, body: dict[str, Any]) -> RewardRequestRejected:
    """The most specific exception for a 4xx answer."""
    kind: type[RewardRequestRejected] = {
        401: RewardAuthError,
        403: RewardAuthError,
        404: RewardNotFound,
        409: RewardConflict,
    }.get(status, RewardRequestRejected)
    return kind(status, type_, message, body)
