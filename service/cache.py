"""Score caching: a bounded in-process LRU, cache keys, and single-flight for calls in flight.

GRPO groups repeat suggestions a lot (G completions of one prompt from one policy), so a
judged (context, suggestion) is worth keeping. A key carries everything that changes a score:
judge model, prompt version, few-shot version, score mode and the normalised case. Failures are
never stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from service.rewards import normalise_text
from service.schemas import Context, Turn

V = TypeVar("V")

# (answerability, factuality, information_gain): a tuple is ~3x smaller than a dict per entry.
Scores = tuple[float, float, float]


def normalise_context(context: Context) -> Context:
    """The context as judged and keyed: whitespace folded in every free-text field."""
    return Context(
        query=normalise_text(context.query),
        history=[Turn(role=t.role, content=normalise_text(t.content)) for t in context.history],
        profile=normalise_text(context.profile) if context.profile else None,
        intent=context.intent,
    )


def score_key(
    *,
    judge_model: str,
    prompt_version: str,
    fewshot_version: int,
    score_mode: str,
    context: Context,
    suggestion: str,
) -> str:
    """A stable digest of everything that changes a score (inputs must be normalised)."""
    payload = json.dumps(
        [
            judge_model,
            prompt_version,
            fewshot_version,
            score_mode,
            context.model_dump(mode="json", exclude_none=True),
            suggestion,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.blake2b(payload.encode(), digest_size=20).hexdigest()


class LRUCache(Generic[V]):
    """A bounded least-recently-used map. ``max_entries=0`` disables it."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def set(self, key: str, value: V) -> None:
        if self.max_entries <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class SingleFlight(Generic[V]):
    """Identical calls in flight at once share one call (and its result or its error).

    The call runs as its own task: a caller that gives up (its request deadline passed) does not
    cancel work that other callers, or the cache, still want.
    """

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, key: str, call: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """Return ``(value, shared)``; ``shared`` is True when another caller's call served it."""
        task = self._inflight.get(key)
        shared = task is not None
        if task is None:
            task = asyncio.ensure_future(call())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task), shared

    def _finished(self, key: str, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited is not reported twice

    async def drain(self) -> None:
        """Cancel what is still in flight (shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
