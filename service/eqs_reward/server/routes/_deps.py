"""FastAPI dependencies shared by the routes: the services from the app state, admission, and the
admin token. ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a
thread hop on every request of the hot path."""

from __future__ import annotations

from fastapi import Request

from eqs_reward.judge.embedded import EmbeddedJudge
from eqs_reward.server._http import Admission, check_admin_token
from eqs_reward.server.bank import BankService
from eqs_reward.server.errors import UnavailableError
from eqs_reward.server.scoring import ScoringService


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
    """The admin token (``check_admin_token``). ``AdminFirstMiddleware`` has already checked it
    before the body was read; this keeps the rule on the route itself as well."""
    check_admin_token(request.app.state.settings, request.headers.get("authorization"))
