"""Adapters for RL frameworks, each a few lines over ``service.client``:

- ``service.integrations.trl``: an async reward function for TRL's ``GRPOTrainer``.
- ``service.integrations.verl``: ``compute_score`` (per sample, sync and async) and
  ``compute_score_batch`` for veRL's reward managers.
- ``service.integrations.openrlhf``: ``reward_func`` for ``--remote_rm_url path.py``; the service
  itself also answers OpenRLHF's ``POST /get_reward``.

Each reads the service URL from ``EQS_REWARD_URL`` (default ``http://127.0.0.1:8000``) unless
given one, and pins the few-shot version from ``EQS_REWARD_FEWSHOT_VERSION`` when set.
"""

from __future__ import annotations

import json
import os
from typing import Any


def service_url(url: str | None = None) -> str:
    return url or os.environ.get("EQS_REWARD_URL", "http://127.0.0.1:8000")


def pinned_version(version: int | None = None) -> int | None:
    if version is not None:
        return version
    raw = os.environ.get("EQS_REWARD_FEWSHOT_VERSION", "").strip()
    return int(raw) if raw else None


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or message lists in conversational mode."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        last = completion[-1]
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return str(completion)


def context_from(value: Any, fallback: str = "") -> dict[str, Any]:
    """A contract context from a dataset value: a dict, a JSON object string, or a query."""
    if isinstance(value, dict) and value.get("query"):
        return dict(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("query"):
                return parsed
        return {"query": text[:1000]}
    return {"query": (fallback.strip() or "-")[-1000:]}


def prompt_text(prompt: Any) -> str:
    """The last user message of a conversational prompt, or the prompt string."""
    if isinstance(prompt, list):
        users = [
            m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"
        ]
        return str(users[-1]) if users else ""
    return str(prompt)


def group_ids(prompts: list[Any]) -> list[int]:
    """Samples of one prompt form one group (GRPO repeats each prompt G times)."""
    seen: dict[str, int] = {}
    return [seen.setdefault(json.dumps(p, sort_keys=True, default=str), len(seen)) for p in prompts]
