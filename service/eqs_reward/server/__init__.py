"""The reward service (``pip install 'eqs-reward[server]'``): ``build_app(settings)`` makes the
FastAPI app; ``eqs-reward serve`` runs it. Routes translate HTTP to the scoring service
(``eqs_reward.server.scoring``) and the bank service (``eqs_reward.server.bank``)."""

from eqs_reward.server._app import build_app, init_app_state
from eqs_reward.server.settings import Settings

__all__ = ["Settings", "build_app", "init_app_state"]
