"""eqs-reward: a reward service for RL of e-commerce query suggestion (QualEQS judge over vLLM).

The top-level names are the trainer's client, which the core install (``pip install eqs-reward``)
provides; the service is ``eqs_reward.server`` (``pip install 'eqs-reward[server]'``).
"""

from eqs_reward._version import __version__
from eqs_reward.client import (
    AsyncRewardClient,
    RewardAuthError,
    RewardClient,
    RewardConflict,
    RewardDeadlineExceeded,
    RewardNotFound,
    RewardRequestRejected,
    RewardServiceError,
    RewardServiceUnavailable,
)
from eqs_reward.types import DIMENSIONS, ItemResult, ScoreMeta, ScoreResponse, SuggestionScore

__all__ = [
    "DIMENSIONS",
    "AsyncRewardClient",
    "ItemResult",
    "RewardAuthError",
    "RewardClient",
    "RewardConflict",
    "RewardDeadlineExceeded",
    "RewardNotFound",
    "RewardRequestRejected",
    "RewardServiceError",
    "RewardServiceUnavailable",
    "ScoreMeta",
    "ScoreResponse",
    "SuggestionScore",
    "__version__",
]
