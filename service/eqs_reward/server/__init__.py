"""The reward service (``pip install 'eqs-reward[server]'``): ``build_app(settings)`` makes the
FastAPI app; ``eqs-reward serve`` runs it. Routes translate HTTP to the scoring service
(``eqs_reward.server.scoring``) and the bank service (``eqs_reward.server.bank``)."""

from eqs_reward.server._app import build_app, embedded_judge, init_app_state
from eqs_reward.server._uvicorn import serve
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.settings import Settings

__all__ = ["Metrics", "Settings", "build_app", "embedded_judge", "init_app_state", "serve"]
