"""Score caching: a bounded in-process LRU, cache keys, and single-flight for calls in flight.

GRPO groups repeat suggestions a lot (G completions of one prompt from one policy), so a
judged (context, suggestion) is worth keeping. A key carries everything that changes a score:
judge model, prompt version, few-shot version, score mode and the normalised case. Scores are
kept as the judge's ``Scores`` tuple (about 3x smaller than a dict). Failures are never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eqs_reward.judge import Scores
from eqs_reward.judge.cases import Context

if TYPE_CHECKING:
    from eqs_reward.server.metrics import Metrics

log = logging.getLogger("eqs_reward.cache")

V = TypeVar("V")


def score_key(
    *,
    judge_model: str,
    versions: str,
    fewshot_version: int | str,
    score_mode: str,
    context: Context,
    suggestion: str,
) -> str:
    """A stable digest of everything that changes a score (inputs must be normalised).
    ``versions`` joins the versions of what else does: the head's prompt, the guard, the recipe."""
    payload = json.dumps(
        [
            judge_model,
            versions,
            fewshot_version,
            score_mode,
            context.model_dump(mode="json", exclude_none=True),
            suggestion,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    # surrogatepass: keying never fails, whatever text reached it (guards refuse such text first).
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


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
        self._private: set[asyncio.Task[V]] = set()

    def __len__(self) -> int:
        return len(self._inflight)

    def __contains__(self, key: object) -> bool:
        return key in self._inflight

    def start(self, key: str, call: Callable[[], Awaitable[V]]) -> tuple[asyncio.Task[V], bool]:
        """The call in flight for ``key``, started now if there is none; ``(task, started)``.
        Synchronous, so a caller can count what it started before anything else runs."""
        task = self._inflight.get(key)
        if task is not None:
            return task, False
        task = asyncio.ensure_future(call())
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return task, True

    def start_private(self, call: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        """A call nobody else may join (``cache: false`` asks the judge again; that is its point),
        still tracked so that ``drain`` cancels it at shutdown."""
        task = asyncio.ensure_future(call())
        self._private.add(task)
        task.add_done_callback(self._private_finished)
        return task

    def _private_finished(self, task: asyncio.Task[V]) -> None:
        self._private.discard(task)
        if not task.cancelled():
            task.exception()

    def _finished(self, key: str, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited is not reported twice

    async def drain(self) -> None:
        """Cancel what is still in flight (shutdown)."""
        tasks = [*self._inflight.values(), *self._private]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RedisTier:
    """The shared score cache in Redis, behind the in-process LRU.

    - ``get_many`` is one MGET for all of a request's keys; ``put`` queues a write, and a
      background flusher writes queued scores in one pipeline (SET with TTL) every few ms, so
      judge calls that finish after their request gave up are still shared.
    - A failing or slow Redis never fails a request: the first error (or timeout) opens a
      breaker, and the tier is skipped until a cool-down passes (doubling up to 30 s while it
      keeps failing); then the next lookup tries again. Errors are logged and counted.
    - In-flight deduplication across replicas (``claim``/``claimed``): the first replica to need
      a new suggestion's score claims its call (SET NX, expiring); another replica that needs
      it meanwhile waits for the score to land instead of calling the judge again. The claim
      ends when the score is written (same pipeline) or the call fails (``release``). A shared
      lock, not routing by suggestion key: Serve's router picks a replica per request, and a
      request holds many suggestions.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        ttl_s: int,
        timeout_s: float,
        on_error: Callable[[str, Exception], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.redis = client
        self.prefix = prefix + "score:"
        self.claims = prefix + "claim:"
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.on_error = on_error
        self.on_state = on_state
        self._down_until = 0.0
        self._cooldown = 0.5
        self._pending: dict[str, Scores] = {}
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.up = True

    # -- breaker ----------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, op: str, exc: Exception) -> None:
        now = time.monotonic()
        # Only the first failure of an open period backs off further: operations already in
        # flight when Redis went away fail together, and each doubling the cooldown once made a
        # 1-second outage keep the tier off for 30 s.
        if now >= self._down_until:
            self._down_until = now + self._cooldown
            self._cooldown = min(self._cooldown * 2, 30.0)
        if self.up:
            log.warning(
                "redis cache unavailable (%s: %r); scoring on the in-process cache", op, exc
            )
        self.up = False
        if self.on_error:
            self.on_error(op, exc)
        if self.on_state:
            self.on_state(False)

    def _succeeded(self) -> None:
        if not self.up:
            log.info("redis cache is back")
            if self.on_state:
                self.on_state(True)
        self.up = True
        self._cooldown = 0.5

    # -- operations -------------------------------------------------------------------------
    async def get_many(self, keys: list[str]) -> dict[str, Scores]:
        if not keys or not self.available:
            return {}
        try:
            async with asyncio.timeout(self.timeout_s):
                values = await self.redis.mget([self.prefix + k for k in keys])
        except Exception as exc:
            self._failed("get", exc)
            return {}
        self._succeeded()
        found: dict[str, Scores] = {}
        for key, raw in zip(keys, values, strict=True):
            scores = None if raw is None else self._parse(raw)
            if scores is not None:
                found[key] = scores
        return found

    @staticmethod
    def _parse(raw: bytes) -> Scores | None:
        try:
            return tuple(float(x) for x in raw.split(b","))
        except ValueError:
            return None

    async def claim(self, key: str, hold_s: float) -> bool:
        """Claim the judge call for ``key`` for at most ``hold_s``: True when this replica
        should make it, False when another replica is making it now. Without Redis every
        replica calls (a duplicate at worst, never a lost call)."""
        if not self.available:
            return True
        try:
            async with asyncio.timeout(self.timeout_s):
                claimed = await self.redis.set(self.claims + key, 1, nx=True, px=int(hold_s * 1000))
        except Exception as exc:
            self._failed("claim", exc)
            return True
        return bool(claimed)

    async def claimed(self, key: str, wait_s: float, poll_s: float = 0.02) -> Scores | None:
        """The score of a call another replica claimed, once written; None when its claim ends
        without one (that call failed: call the judge here) or after ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(self.timeout_s):
                    raw, held = await (
                        self.redis.pipeline(transaction=False)
                        .get(self.prefix + key)
                        .exists(self.claims + key)
                        .execute()
                    )
            except Exception as exc:
                self._failed("get", exc)
                return None
            if raw is not None:
                return self._parse(raw)
            if not held:
                return None
            await asyncio.sleep(poll_s)
        return None

    async def release(self, key: str) -> None:
        """End this replica's claim on ``key`` without a score (its call failed)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout_s):
                await self.redis.delete(self.claims + key)

    def put(self, key: str, scores: Scores) -> None:
        self._pending[key] = scores
        self._wakeup.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(0.005)  # gather the writes of a burst into one pipeline
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        if not self.available:
            if len(self._pending) > 10_000:  # do not grow without bound while Redis is down
                self._pending.clear()
            return
        batch, self._pending = self._pending, {}
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                pipe = self.redis.pipeline(transaction=False)
                for key, scores in batch.items():
                    text = ",".join(repr(float(x)) for x in scores)
                    pipe.set(self.prefix + key, text, ex=self.ttl_s)
                    pipe.delete(self.claims + key)  # a claim ends when its score lands
                await pipe.execute()
        except Exception as exc:
            self._failed("set", exc)
            for key, value in batch.items():  # keep them for the next try (bounded above)
                self._pending.setdefault(key, value)
            return
        self._succeeded()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                await self.redis.ping()
        except Exception as exc:
            self._failed("ping", exc)
            return False
        self._succeeded()
        self._down_until = 0.0
        return True

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(Exception):
            await self.flush()


class ScoreCache:
    """Both tiers of the score cache, read in one place (``get_many``) and written in one place
    (``put``): this process's LRU first, then Redis (shared by replicas; a hit there is kept in
    the LRU too). Hits and misses are counted per tier."""

    def __init__(self, max_entries: int, redis: RedisTier | None, metrics: Metrics) -> None:
        self.memory: LRUCache[Scores] = LRUCache(max_entries)
        self.redis = redis
        self._metrics = metrics

    def __len__(self) -> int:
        return len(self.memory)

    async def get_many(self, keys: list[str]) -> dict[str, Scores]:
        found: dict[str, Scores] = {}
        for key in keys:
            scores = self.memory.get(key)
            if scores is not None:
                found[key] = scores
        m = self._metrics
        m.cache_hits.labels("memory").inc(len(found))
        m.cache_misses.labels("memory").inc(len(keys) - len(found))
        missing = [key for key in keys if key not in found]
        if missing and self.redis is not None:
            shared = await self.redis.get_many(missing)
            m.cache_hits.labels("redis").inc(len(shared))
            m.cache_misses.labels("redis").inc(len(missing) - len(shared))
            for key, scores in shared.items():
                self.memory.set(key, scores)
                found[key] = scores
            m.cache_entries.set(len(self.memory))
        return found

    def put(self, key: str, scores: Scores) -> None:
        self.memory.set(key, scores)
        if self.redis is not None:
            self.redis.put(key, scores)
        self._metrics.cache_entries.set(len(self.memory))
