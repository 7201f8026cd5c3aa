"""The judge pool: every LLM-head call of the service goes through here.

It owns what bounds and measures those calls: the concurrency limit (a semaphore; calls beyond
it wait, counted in ``eqs_reward_judge_queue_depth``), the backlog of calls started and not
finished and the rate of finished ones (admission reads both to refuse early), the retry
policy, single-flight (a call in flight for a key is joined, not repeated), the judge metrics,
and the prompt prefix per head and bank version (the same for every call, so vLLM's prefix
cache serves it). A finished call's scores are written to the score cache here, and only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from eqs_reward.judge import (
    JudgeClient,
    JudgeError,
    RetryPolicy,
    Scores,
    grade_with_retries,
    select_examples,
)
from eqs_reward.judge.cases import Context
from eqs_reward.server.bank import BankVersion
from eqs_reward.server.cache import ScoreCache, SingleFlight
from eqs_reward.server.heads import LLMHead
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.settings import Settings
from eqs_reward.types import ScoreMode

__all__ = ["Case", "JudgePool", "Outcome", "RateMeter"]

log = logging.getLogger("eqs_reward.scoring")


class RateMeter:
    """Events per second over the last ``window_s`` seconds, in fixed memory (one counter per
    second of the window), however long the service runs."""

    def __init__(self, window_s: int = 10) -> None:
        self.window_s = window_s
        self._counts = [0] * window_s
        self._stamps = [-1] * window_s

    def add(self, now: float | None = None) -> None:
        second = int(time.monotonic() if now is None else now)
        slot = second % self.window_s
        if self._stamps[slot] != second:
            self._stamps[slot], self._counts[slot] = second, 0
        self._counts[slot] += 1

    def rate(self, now: float | None = None) -> float:
        second = int(time.monotonic() if now is None else now)
        recent = sum(
            c for c, s in zip(self._counts, self._stamps, strict=True) if second - s < self.window_s
        )
        return recent / self.window_s


@dataclass(frozen=True, slots=True)
class Case:
    """What one judge call grades: a head, a normalised context and a normalised suggestion."""

    head: LLMHead
    context: Context
    suggestion: str


@dataclass(slots=True)
class Outcome:
    """A key's scores (from the cache, a shared call or a new one), or why there are none."""

    scores: Scores | None
    cached: bool
    failure: str | None = None


Call = tuple[asyncio.Task[Scores], bool]  # the call's task, and whether it is another's


class JudgePool:
    """Bounded, retried, deduplicated judge calls (see the module's docstring)."""

    def __init__(
        self, settings: Settings, judge: JudgeClient, cache: ScoreCache, metrics: Metrics
    ) -> None:
        self.judge = judge
        self.cache = cache
        self.metrics = metrics
        self.fewshot_token_budget = settings.fewshot_token_budget
        #: How long a claimed call may hold other replicas waiting: every attempt's timeout.
        self.claim_s = settings.judge_timeout_s * (settings.judge_max_retries + 1)
        self.retry_policy = RetryPolicy(
            settings.judge_max_retries,
            settings.judge_backoff_initial_s,
            settings.judge_backoff_max_s,
        )
        self.inflight: SingleFlight[Scores] = SingleFlight()
        self.backlog = 0  # judge calls started and not finished (running or waiting for a slot)
        self.finished = RateMeter()
        self._slots = asyncio.Semaphore(settings.judge_concurrency)
        self._waiting = 0
        self._prefix: dict[str, list[dict[str, str]]] = {}
        # Per prefix, set once its first call has ended: vLLM caches a prefix only after
        # computing it, so calls sent together on a cold prefix would each compute it whole
        # (32 at once on a CPU judge took minutes); the first goes alone, the rest follow.
        self._primed: dict[str, asyncio.Event] = {}
        self._prime_wait_s = settings.judge_timeout_s

    def start(
        self, key: str, case: Case, bank_version: BankVersion, mode: ScoreMode, cache: bool
    ) -> Call:
        """The judge call for ``key``: one already in flight (shared), or one started now and
        counted in the backlog at once (admission reads it; the call's end releases it).

        With ``cache`` off the call is the caller's own: it joins nobody's call and its result
        is written to neither tier (a caller measuring the judge's spread must not evict, or be
        served, anyone else's entries)."""
        if cache:
            task, started = self.inflight.start(
                key, lambda: self._call(bank_version, key, case, mode, store=True)
            )
        else:
            task = self.inflight.start_private(
                lambda: self._call(bank_version, key, case, mode, store=False)
            )
            started = True
        if started:
            self.backlog += 1
            task.add_done_callback(self._call_ended)
        return task, not started

    def _call_ended(self, _: asyncio.Task[Scores]) -> None:
        self.backlog -= 1

    async def wait(
        self, calls: dict[str, Call], deadline: float, private: bool = False
    ) -> dict[str, Outcome]:
        """The calls' outcomes by the deadline. Past it, a shared call goes on (it fills the
        cache, or another request waits for it); a private one (``cache: false``) has no one
        left to serve, so it stops, counted in ``eqs_reward_judge_calls_abandoned_total``."""
        waiters = {
            key: asyncio.ensure_future(self._outcome(task, shared))
            for key, (task, shared) in calls.items()
        }
        done, pending = await asyncio.wait(
            waiters.values(), timeout=max(0.0, deadline - time.monotonic())
        )
        if private:
            for key, waiter in waiters.items():
                task = calls[key][0]
                if waiter in pending and not task.done():
                    task.cancel()
                    self.metrics.judge_calls_abandoned.inc()
        for waiter in pending:
            waiter.cancel()  # the shielded judge call goes on and fills the cache
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return {
            key: waiter.result()
            if waiter in done and not waiter.cancelled()
            else Outcome(None, False, failure="deadline")
            for key, waiter in waiters.items()
        }

    async def _outcome(self, task: asyncio.Task[Scores], shared: bool) -> Outcome:
        try:
            scores = await asyncio.shield(task)
        except JudgeError as exc:
            return Outcome(None, False, failure=exc.reason)
        except Exception:  # a bug must cost a suggestion, never the request
            log.exception("unexpected error while judging a suggestion")
            return Outcome(None, False, failure="error")
        if shared:
            self.metrics.cache_hits.labels("inflight").inc()
        return Outcome(scores, shared)

    def _prefix_messages(
        self, head: LLMHead, bank_version: BankVersion
    ) -> tuple[str, list[dict[str, str]]]:
        """The head's system prompt and (for the judge) the bank's examples: the same prefix for
        every call of a head and version, so vLLM's prefix cache serves it; and its id."""
        cache_id = f"{head.version}/{bank_version.cache_id if head.uses_bank else '-'}"
        prefix = self._prefix.get(cache_id)
        if prefix is None:
            probe = Context.model_construct(query="-", history=[], profile=None, intent=None)
            examples = (
                select_examples(bank_version.examples, self.fewshot_token_budget)
                if head.uses_bank
                else []
            )
            prefix = head.prompt.messages(examples, probe, "-")[:-1]
            if len(self._prefix) > 16:
                self._prefix.clear()
                self._primed.clear()
            self._prefix[cache_id] = prefix
        return cache_id, prefix

    async def _prime(self, prefix_id: str) -> asyncio.Event | None:
        """Wait while another call computes this prefix for the first time (at most one
        call's timeout: a stuck primer holds nobody for long); the first call gets the event
        to set when it ends."""
        primed = self._primed.get(prefix_id)
        if primed is None:
            primed = self._primed[prefix_id] = asyncio.Event()
            return primed
        if not primed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(primed.wait(), self._prime_wait_s)
        return None

    async def _call(
        self, bank_version: BankVersion, key: str, case: Case, mode: ScoreMode, *, store: bool
    ) -> Scores:
        shared = self.cache.redis if store else None
        if shared is not None and not await shared.claim(key, self.claim_s):
            remote = await shared.claimed(key, self.claim_s)  # another replica is judging it
            if remote is not None:
                self.metrics.cache_hits.labels("inflight").inc()
                self.cache.memory.set(key, remote)
                return remote
        try:
            return await self._judge(bank_version, key, case, mode, store=store)
        except BaseException:
            if shared is not None:
                await shared.release(key)  # whoever waits on this call judges it instead
            raise

    async def _judge(
        self, bank_version: BankVersion, key: str, case: Case, mode: ScoreMode, *, store: bool
    ) -> Scores:
        head = case.head
        prefix_id, prefix = self._prefix_messages(head, bank_version)
        messages = [
            *prefix,
            {"role": "user", "content": head.prompt.case_message(case.context, case.suggestion)},
        ]
        m = self.metrics
        self._waiting += 1
        m.judge_queue.set(self._waiting)
        try:
            primer = await self._prime(prefix_id)
            try:
                await self._slots.acquire()
            except BaseException:
                if primer is not None:
                    primer.set()
                raise
        finally:
            self._waiting -= 1
            m.judge_queue.set(self._waiting)
        m.judge_in_flight.inc()
        started = time.perf_counter()

        def on_retry(exc: JudgeError) -> None:
            m.judge_attempt_errors.labels(exc.reason).inc()
            m.judge_retries.inc()
            log.info("judge attempt failed (%s), retrying: %s", exc.reason, exc)

        try:
            verdict = await grade_with_retries(
                self.judge, messages, mode, self.retry_policy, on_retry, head.prompt.output
            )
        except JudgeError as exc:
            m.judge_attempt_errors.labels(exc.reason).inc()
            # A call that gave up on unreadable answers is told apart from an unreachable judge.
            m.judge_calls.labels("unparseable" if exc.reason == "unparseable" else "failed").inc()
            m.head_failures.labels(head.name, exc.reason).inc()
            log.warning("%s call failed after retries (%s): %s", head.name, exc.reason, exc)
            raise
        finally:
            elapsed = time.perf_counter() - started
            m.judge_latency.observe(elapsed)
            m.head_duration.labels(head.name).observe(elapsed)
            m.judge_in_flight.dec()
            self._slots.release()
            if primer is not None:
                primer.set()
        m.judge_calls.labels("ok" if verdict.attempts == 1 else "retried").inc()
        self.finished.add()
        if store:
            self.cache.put(key, verdict.scores)
        return verdict.scores
