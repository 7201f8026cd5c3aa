"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request

from service.embedded import EmbeddedJudge
from service.errors import UnavailableError
from service.scoring import Scorer


async def get_scorer(request: Request) -> Scorer:
    """The app's scorer, or 503 while the embedded judge has never been ready.

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread
    hop on every request of the hot path.
    """
    scorer: Scorer = request.app.state.scorer
    embedded: EmbeddedJudge | None = request.app.state.embedded
    if embedded is not None and not embedded.ever_ready:
        raise UnavailableError(
            "the embedded judge is still starting (about a minute on a CPU); "
            "poll GET /ready and retry",
            headers={"Retry-After": "10"},
        )
    return scorer
