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

__all__ = [  # noqa: RUF022  (grouped by kind, the exception tree root first)
    "__version__",
    # the clients and the types of their results
    "AsyncRewardClient",
    "RewardClient",
    "ScoreResponse",
    "ItemResult",
    "SuggestionScore",
    "ScoreMeta",
    "DIMENSIONS",
    # the exception tree, root first (see eqs_reward.client)
    "RewardServiceError",
    "RewardServiceUnavailable",
    "RewardDeadlineExceeded",
    "RewardRequestRejected",
    "RewardAuthError",
    "RewardNotFound",
    "RewardConflict",
]
