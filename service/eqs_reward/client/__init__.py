"""The trainer's side of eqs-reward: ``pip install eqs-reward`` (httpx and tenacity only).

    from eqs_reward import RewardClient

    with RewardClient("http://127.0.0.1:8000", fewshot_version=3, score_mode="soft") as client:
        rewards = client.rewards(contexts=queries, completions=texts, group_size=4)

Adapters for RL frameworks live beside it: ``eqs_reward.client.trl`` (TRL's GRPOTrainer),
``eqs_reward.client.verl`` (veRL's reward loop) and ``eqs_reward.client.openrlhf`` (OpenRLHF's
``--reward.remote_url`` file). None of this imports the server.
"""

from eqs_reward.client import _exceptions
from eqs_reward.client._client import AsyncRewardClient, RewardClient, completion_items
from eqs_reward.client._exceptions import *  # noqa: F403  (the exception tree: its __all__)
from eqs_reward.rewards import apply_policy, consecutive_groups

__all__ = ["AsyncRewardClient", "RewardClient", "completion_items"]
__all__ += ["apply_policy", "consecutive_groups"]
__all__ += _exceptions.__all__
