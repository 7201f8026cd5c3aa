"""FastAPI dependencies shared by the routes: the services from the app state, admission, and the
admin token. ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a
thread hop on every request of the hot path."""

from __future__ import annotations

import hmac

from fastapi import Request

from eqs_reward.judge.embedded import EmbeddedJudge
from eqs_reward.server._http import Admission
from eqs_reward.server.bank import BankService
from eqs_reward.server.errors import ForbiddenError, UnauthorizedError, UnavailableError
from eqs_reward.server.scoring import ScoringService
from eqs_reward.server.settings import Settings


async def get_scoring(request: Request) -> ScoringService:
    """The scoring service, or 503 while the embedded judge has never been ready."""
    embedded: EmbeddedJudge | None = request.app.state.embedded
    if embedded is not None and not embedded.ever_ready:
        raise UnavailableError(
            "the embedded judge is still starting (about a minute on a CPU); "
            "poll GET /ready and retry",
            headers={"Retry-After": "10"},
        )
    scoring: ScoringService = request.app.state.scoring
    return scoring


async def get_admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


async def get_bank(request: Request) -> BankService:
    bank: BankService = request.app.state.bank_service
    return bank


async def require_admin(request: Request) -> None:
    """Bearer admin token, compared in constant time. None -> 401, wrong -> 403."""
    settings: Settings = request.app.state.settings
    if not settings.admin_token:
        raise ForbiddenError(
            "few-shot writes are disabled: set EQS_REWARD_ADMIN_TOKEN on the service to enable "
            "them, then send 'Authorization: Bearer <token>'"
        )
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "few-shot writes need 'Authorization: Bearer <admin token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.strip().encode(), settings.admin_token.encode()):
        raise ForbiddenError("the admin token is not valid")
