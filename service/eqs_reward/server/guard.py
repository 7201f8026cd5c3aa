"""Deterministic guards: what is refused before the judge sees it (status ``rejected``, reward 0).

A suggestion is refused when it is empty, longer than the text limit, not valid Unicode text (a
lone surrogate), or carries a chat-template control token. The reason is computed once per
suggestion and travels with it to the response and the metrics.
"""

from __future__ import annotations

from eqs_reward.judge import CONTROL_TOKEN
from eqs_reward.judge.cases import has_lone_surrogate, is_blank

__all__ = ["GUARD_VERSION", "guard_reason"]

#: Part of every cache key: a change to what the guard lets through changes what is judged.
GUARD_VERSION = "guard-v1"


def guard_reason(text: str, max_chars: int) -> str | None:
    """Why ``text`` is refused before the judge, or None when it may be judged."""
    if is_blank(text):
        return "empty"
    if len(text) > max_chars:
        return "too_long"
    if has_lone_surrogate(text):
        return "invalid_text"
    if CONTROL_TOKEN.search(text):
        return "control_token"
    return None
