"""The scoring service: guards, cache, single-flight, bounded judge calls, rewards.

``ScoringService.score`` is the plain entry point every caller uses: the ``/v1/score`` and
``/get_reward`` routes (which apply size limits and admission first), and the bank's gate and
calibration (batches of any size). Flow for one suggestion: the deterministic guard (once) ->
in-process cache -> one Redis MGET for the rest -> a call already in flight for the same key ->
the judge (bounded concurrency, retries). A judge failure of any kind becomes a ``failed``
suggestion, never an exception out of ``score``; failures are never cached. The whole request
shares one deadline; judge calls that outlive it still fill the cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from eqs_reward.judge import (
    JudgeClient,
    JudgeError,
    JudgePrompt,
    RetryPolicy,
    Scores,
    grade_with_retries,
    select_examples,
)
from eqs_reward.judge.cases import Context
from eqs_reward.rewards import (
    disagreement,
    format_problem,
    normalise_text,
    parse_completion,
    set_reward,
    suggestion_reward,
)
from eqs_reward.server.bank._stores import BankVersion, FewshotBank, VersionNotFoundError
from eqs_reward.server.cache import LRUCache, RedisTier, SingleFlight, score_key
from eqs_reward.server.errors import InvalidRequestError
from eqs_reward.server.groups import GroupMemory
from eqs_reward.server.guard import Guard
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.schemas import ScoreItem, ScoreOptions, ScoreRequest
from eqs_reward.server.settings import Settings
from eqs_reward.types import (
    DIMENSIONS,
    ItemResult,
    OnFailure,
    ResultStatus,
    ScoreMeta,
    ScoreMode,
    ScoreResponse,
    SuggestionScore,
)

__all__ = ["Admit", "RateMeter", "ScoringService"]

log = logging.getLogger("eqs_reward.scoring")

#: Called with the number of new judge calls a request needs, before any starts; raises to
#: refuse (the HTTP layer's 429). The plain entry point passes none: internal batches queue.
Admit = Callable[[int], None]


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


@dataclass(slots=True)
class _Slot:
    """One suggestion on its way through a request: refused (``reason``) or keyed."""

    text: str
    reason: str | None
    key: str | None


@dataclass(slots=True)
class _Item:
    item: ScoreItem
    problem: str | None
    slots: list[_Slot]
    group_key: str


@dataclass(slots=True)
class _Outcome:
    scores: Scores | None
    cached: bool
    failure: str | None = None


class ScoringService:
    """Scores requests against one judge. Owns the score cache and the judge concurrency bound."""

    def __init__(
        self,
        settings: Settings,
        judge: JudgeClient,
        bank: FewshotBank,
        prompt: JudgePrompt,
        metrics: Metrics,
        redis: RedisTier | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.settings = settings
        self.guard = guard or Guard.load(
            settings.prompts_path / "guards", settings.guard_version, settings.max_text_chars
        )
        self.judge = judge
        self.bank = bank
        self.prompt = prompt
        self.metrics = metrics
        self.cache: LRUCache[Scores] = LRUCache(settings.cache_max_entries)
        self.redis = redis
        self.inflight: SingleFlight[Scores] = SingleFlight()
        self.retry_policy = RetryPolicy(
            settings.judge_max_retries,
            settings.judge_backoff_initial_s,
            settings.judge_backoff_max_s,
        )
        self.backlog = 0  # judge calls started and not finished (running or waiting for a slot)
        self.finished = RateMeter()
        self._slots = asyncio.Semaphore(settings.judge_concurrency)
        self._waiting = 0
        self._prefix: dict[str, list[dict[str, str]]] = {}
        self.groups = GroupMemory()

    async def resolve_version(self, pinned: int | None) -> BankVersion:
        """The active bank version, or a pinned one (422 when it does not exist)."""
        if pinned is None:
            active = await self.bank.active()
            self.metrics.fewshot_version.set(active.version)
            return active
        try:
            return await self.bank.get(pinned)
        except VersionNotFoundError as exc:
            raise InvalidRequestError(
                f"options.fewshot_version: {exc}; GET /v1/fewshot/versions lists them"
            ) from exc

    async def score(
        self,
        request: ScoreRequest,
        *,
        bank_version: BankVersion | None = None,
        admit: Admit | None = None,
    ) -> ScoreResponse:
        """Score a request. ``bank_version`` overrides the request's (a dry-run candidate);
        ``admit`` may refuse the new judge calls it needs (see ``Admit``)."""
        started = time.monotonic()
        deadline = started + self.settings.request_deadline_s
        options = request.options
        if bank_version is None:
            bank_version = await self.resolve_version(options.fewshot_version)
        cases: dict[str, tuple[Context, str]] = {}
        items = [self._prepare(item, options, bank_version, cases) for item in request.items]
        outcomes = await self._lookup(cases) if options.cache else {}
        missing = [key for key in cases if key not in outcomes]
        if missing:
            if admit is not None:
                admit(sum(1 for key in missing if key not in self.inflight))
            calls = {
                key: self._start_call(key, bank_version, *cases[key], options.score_mode)
                for key in missing
            }
            outcomes.update(await self._wait_calls(calls, deadline))
        self.metrics.cache_entries.set(len(self.cache))
        results = [self._result(item, outcomes, options.on_failure) for item in items]
        if options.group_size is not None:
            results = await self._fill_groups(items, results, options, started, deadline)
        return ScoreResponse(
            results=tuple(results),
            meta=ScoreMeta(
                judge_model=self.judge.model,
                prompt_version=self.prompt.version,
                fewshot_version=bank_version.version,
                score_mode=options.score_mode,
            ),
        )

    # -- 1. parse, guard and key ----------------------------------------------------------------
    def _prepare(
        self,
        item: ScoreItem,
        options: ScoreOptions,
        bank_version: BankVersion,
        cases: dict[str, tuple[Context, str]],
    ) -> _Item:
        if item.completion is not None:
            parsed = parse_completion(item.completion, options.end_tokens)
            texts, well_formed, problem = parsed.suggestions, parsed.well_formed, parsed.problem
        else:
            texts, well_formed, problem = list(item.suggestions or []), True, None
        problem = problem or format_problem(
            texts, options.k, self.settings.max_suggestion_tokens, well_formed
        )
        context = item.context.normalised()
        slots: list[_Slot] = []
        # A raw completion can hold any number of options: past the per-item limit they are
        # refused, not judged (a list of suggestions is held to the limit by the HTTP layer).
        limit = self.settings.max_suggestions_per_item
        for index, text in enumerate(texts):
            if index >= limit and item.completion is not None:
                slots.append(_Slot(text, "too_many", None))
                continue
            reason = self.guard.reason(text)
            if reason is not None:
                slots.append(_Slot(text, reason, None))
                continue
            suggestion = normalise_text(text)
            key = score_key(
                judge_model=self.judge.model,
                prompt_version=f"{self.prompt.version}+{self.guard.version}",
                fewshot_version=bank_version.cache_id,
                score_mode=options.score_mode,
                context=context,
                suggestion=suggestion,
            )
            cases.setdefault(key, (context, suggestion))
            slots.append(_Slot(text, None, key))
        group_key = score_key(
            judge_model=self.judge.model,
            prompt_version=self.prompt.version,
            fewshot_version=bank_version.cache_id,
            score_mode=f"{options.score_mode}/k={options.k}",
            context=context,
            suggestion="",
        )
        return _Item(item, problem, slots, group_key)

    # -- 2. cache tiers -------------------------------------------------------------------------
    async def _lookup(self, cases: dict[str, tuple[Context, str]]) -> dict[str, _Outcome]:
        found: dict[str, _Outcome] = {}
        for key in cases:
            scores = self.cache.get(key)
            if scores is not None:
                found[key] = _Outcome(scores, True)
        self.metrics.cache_hits.labels("memory").inc(len(found))
        self.metrics.cache_misses.labels("memory").inc(len(cases) - len(found))
        missing = [key for key in cases if key not in found]
        if missing and self.redis is not None:
            shared = await self.redis.get_many(missing)
            self.metrics.cache_hits.labels("redis").inc(len(shared))
            self.metrics.cache_misses.labels("redis").inc(len(missing) - len(shared))
            for key, scores in shared.items():
                self.cache.set(key, scores)
                found[key] = _Outcome(scores, True)
        return found

    # -- 3. the judge ---------------------------------------------------------------------------
    def _start_call(
        self,
        key: str,
        bank_version: BankVersion,
        context: Context,
        suggestion: str,
        mode: ScoreMode,
    ) -> tuple[asyncio.Task[Scores], bool]:
        """The judge call for ``key``: one already in flight (shared), or one started now and
        counted in the backlog at once (admission reads it; the call's end releases it)."""
        task, started = self.inflight.start(
            key, lambda: self._call_judge(bank_version, key, context, suggestion, mode)
        )
        if started:
            self.backlog += 1
            task.add_done_callback(self._call_ended)
        return task, not started

    def _call_ended(self, _: asyncio.Task[Scores]) -> None:
        self.backlog -= 1

    async def _wait_calls(
        self, calls: dict[str, tuple[asyncio.Task[Scores], bool]], deadline: float
    ) -> dict[str, _Outcome]:
        waiters = {
            key: asyncio.ensure_future(self._outcome(task, shared))
            for key, (task, shared) in calls.items()
        }
        done, pending = await asyncio.wait(
            waiters.values(), timeout=max(0.0, deadline - time.monotonic())
        )
        for waiter in pending:
            waiter.cancel()  # the shielded judge call goes on and fills the cache
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return {
            key: waiter.result()
            if waiter in done and not waiter.cancelled()
            else _Outcome(None, False, failure="deadline")
            for key, waiter in waiters.items()
        }

    async def _outcome(self, task: asyncio.Task[Scores], shared: bool) -> _Outcome:
        try:
            scores = await asyncio.shield(task)
        except JudgeError as exc:
            return _Outcome(None, False, failure=exc.reason)
        except Exception:  # a bug must cost a suggestion, never the request
            log.exception("unexpected error while judging a suggestion")
            return _Outcome(None, False, failure="error")
        if shared:
            self.metrics.cache_hits.labels("inflight").inc()
        return _Outcome(scores, shared)

    def _prefix_messages(self, bank_version: BankVersion) -> list[dict[str, str]]:
        prefix = self._prefix.get(bank_version.cache_id)
        if prefix is None:
            probe = Context.model_construct(query="-", history=[], profile=None, intent=None)
            examples = select_examples(bank_version.examples, self.settings.fewshot_token_budget)
            prefix = self.prompt.messages(examples, probe, "-")[:-1]
            if len(self._prefix) > 16:
                self._prefix.clear()
            self._prefix[bank_version.cache_id] = prefix
        return prefix

    async def _call_judge(
        self,
        bank_version: BankVersion,
        key: str,
        context: Context,
        suggestion: str,
        mode: ScoreMode,
    ) -> Scores:
        messages = [
            *self._prefix_messages(bank_version),
            {"role": "user", "content": self.prompt.case_message(context, suggestion)},
        ]
        m = self.metrics
        self._waiting += 1
        m.judge_queue.set(self._waiting)
        try:
            await self._slots.acquire()
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
                self.judge, messages, mode, self.retry_policy, on_retry
            )
        except JudgeError as exc:
            m.judge_attempt_errors.labels(exc.reason).inc()
            # A call that gave up on unreadable answers is told apart from an unreachable judge.
            m.judge_calls.labels("unparseable" if exc.reason == "unparseable" else "failed").inc()
            log.warning("judge call failed after retries (%s): %s", exc.reason, exc)
            raise
        finally:
            m.judge_latency.observe(time.perf_counter() - started)
            m.judge_in_flight.dec()
            self._slots.release()
        m.judge_calls.labels("ok" if verdict.attempts == 1 else "retried").inc()
        self.finished.add()
        self.cache.set(key, verdict.scores)
        if self.redis is not None:
            self.redis.put(key, verdict.scores)
        return verdict.scores

    # -- 4. groups of samples sent one at a time ------------------------------------------------
    async def _fill_groups(
        self,
        items: list[_Item],
        results: list[ItemResult],
        options: ScoreOptions,
        started: float,
        deadline: float,
    ) -> list[ItemResult]:
        """Record every item's reward under its group key; a failed item waits for its siblings
        and reports their mean (see ``eqs_reward.server.groups``)."""
        assert options.group_size is not None
        tokens = [
            self.groups.record(item.group_key, result.reward)
            for item, result in zip(items, results, strict=True)
        ]
        wait = max(0.0, min(options.group_wait_s, deadline - time.monotonic()))
        failed = [n for n, result in enumerate(results) if result.reward is None]
        fills = await asyncio.gather(
            *[
                self.groups.fill(items[n].group_key, tokens[n], options.group_size, started, wait)
                for n in failed
            ]
        )
        out = list(results)
        for n, fill in zip(failed, fills, strict=True):
            out[n] = dataclasses.replace(out[n], group=fill.to_dict())
        return out

    # -- 5. results -----------------------------------------------------------------------------
    def _result(
        self, prepared: _Item, outcomes: dict[str, _Outcome], on_failure: OnFailure
    ) -> ItemResult:
        m = self.metrics
        suggestions: list[SuggestionScore] = []
        rewards: list[float] = []
        failed = 0
        zero = 0.0 if on_failure == "zero" else None
        for slot in prepared.slots:
            if slot.key is None:
                reason = slot.reason or "rejected"
                suggestions.append(
                    SuggestionScore(slot.text, "rejected", reward=0.0, reason=reason)
                )
                rewards.append(0.0)
                m.suggestions.labels("rejected").inc()
                m.failures.labels(reason).inc()
                m.guard_refusals.labels(reason).inc()
                continue
            outcome = outcomes[slot.key]
            if outcome.scores is None:
                failed += 1
                suggestions.append(
                    SuggestionScore(
                        slot.text, "failed", False, zero, zero, zero, zero, outcome.failure
                    )
                )
                if zero is not None:
                    rewards.append(zero)
                m.suggestions.labels("failed").inc()
                m.failures.labels(outcome.failure or "unknown").inc()
                continue
            a, f, i = outcome.scores
            reward = suggestion_reward(a, f, i)
            suggestions.append(SuggestionScore(slot.text, "ok", outcome.cached, a, f, i, reward))
            rewards.append(reward)
            m.suggestions.labels("ok").inc()
            m.reward.observe(reward)
            for dimension, value in zip(DIMENSIONS, outcome.scores, strict=True):
                m.dimension.labels(dimension).observe(value)

        status: ResultStatus = (
            "ok" if failed == 0 else ("failed" if failed == len(prepared.slots) else "partial")
        )
        r_f = 0.0 if prepared.problem else 1.0
        m.format_reward.observe(r_f)
        r_q: float | None = None
        u_q: float | None = None
        if not (failed and on_failure == "null"):
            r_q = set_reward(r_f, rewards)
            u_q = disagreement(rewards)
            m.set_reward.observe(r_q)
            m.disagreement.observe(u_q)
        return ItemResult(
            id=prepared.item.id,
            status=status,
            format_reward=r_f,
            format_problem=prepared.problem,
            reward=r_q,
            disagreement=u_q,
            suggestions=tuple(suggestions),
        )
