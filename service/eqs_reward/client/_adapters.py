"""What the trainer adapters share: the service URL, pins and policy from the environment. (How
a trainer's dataset values, prompts and completions become contexts and texts is in
``eqs_reward._trainer_inputs``, which the server's ``/get_reward`` uses too.)"""

from __future__ import annotations

import os

from eqs_reward.types import FailurePolicy, parse_failure_policy


def service_url(url: str | None = None) -> str:
    """The service URL: the argument, else ``EQS_REWARD_URL``; a clear error when neither is
    set (a reward function must never score against a guessed host)."""
    value = (url or os.environ.get("EQS_REWARD_URL", "")).strip()
    if not value:
        raise RuntimeError(
            "no eqs-reward service URL: set EQS_REWARD_URL (e.g. http://reward-host:8000) in the "
            "trainer's environment, or pass url="
        )
    return value


def pinned_version(version: int | None = None) -> int | None:
    """The few-shot version to pin: the argument, else ``EQS_REWARD_FEWSHOT_VERSION``."""
    if version is not None:
        return version
    raw = os.environ.get("EQS_REWARD_FEWSHOT_VERSION", "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"EQS_REWARD_FEWSHOT_VERSION={raw!r} is not a version number") from exc


def pinned_recipe(recipe: str | None = None) -> str | None:
    """The recipe to pin: the argument, else ``EQS_REWARD_RECIPE`` (unset: the server's
    default; a training run pins it so the reward does not change under it)."""
    if recipe is not None:
        return recipe
    return os.environ.get("EQS_REWARD_RECIPE", "").strip() or None


def policy_from_env(default: FailurePolicy) -> FailurePolicy:
    """``EQS_REWARD_FAILURE_POLICY`` if set (a bad value is an error), else ``default``."""
    raw = os.environ.get("EQS_REWARD_FAILURE_POLICY", "").strip()
    return parse_failure_policy(raw, source="EQS_REWARD_FAILURE_POLICY") if raw else default


def deadline_from_env() -> float | None:
    """``EQS_REWARD_DEADLINE_S``: every reward call returns within it (the samples not scored
    by then neutral for the trainer), never a hang of the training run; unset: no deadline."""
    raw = os.environ.get("EQS_REWARD_DEADLINE_S", "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"EQS_REWARD_DEADLINE_S={raw!r} is not a number of seconds") from exc
    if not value > 0:
        raise ValueError(f"EQS_REWARD_DEADLINE_S={raw!r} must be above 0")
    return value
