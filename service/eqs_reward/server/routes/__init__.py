"""The HTTP routes. Each only translates HTTP to a call on the scoring or bank service and back."""

from eqs_reward.server.routes._deps import require_admin
from eqs_reward.server.routes.fewshot import router as fewshot_router
from eqs_reward.server.routes.health import router as health_router
from eqs_reward.server.routes.openrlhf import router as openrlhf_router
from eqs_reward.server.routes.review import router as review_router
from eqs_reward.server.routes.score import router as score_router
from eqs_reward.server.routes.slime import router as slime_router

__all__ = [
    "fewshot_router",
    "health_router",
    "openrlhf_router",
    "require_admin",
    "review_router",
    "score_router",
    "slime_router",
]
