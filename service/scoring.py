"""Scoring a ``/v1/score`` request: guards, cache, single-flight, bounded judge calls, rewards.

Flow for one suggestion: deterministic guards (empty, over-long, control tokens) -> in-process
cache -> a call already in flight for the same key -> the judge (bounded concurrency, retries).
A judge failure becomes a ``failed`` suggestion, never an exception out of ``Scorer.score``;
failures are never cached. The whole request shares one deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass

from service.bank import select_examples
from service.cache import (
    LRUCache,
    RedisTier,
    Scores,
    SingleFlight,
    normalise_context,
    score_key,
)
from service.errors import InvalidRequestError, OverloadedError, PayloadTooLargeError
from service.fewshot import BankVersion, FewshotBank, VersionNotFoundError
from service.judge import JudgeClient, JudgeError, RetryPolicy, grade_with_retries
from service.metrics import Metrics
from service.prompts import CONTROL_TOKEN, JudgePrompt
from service.rewards import (
    DIMENSIONS,
    disagreement,
    format_problem,
    normalise_text,
    parse_completion,
    set_reward,
    suggestion_reward,
)
from service.schemas import (
    Context,
    ItemResult,
    ResultStatus,
    ScoreItem,
    ScoreMeta,
    ScoreRequest,
    ScoreResponse,
    SuggestionScore,
)
from service.settings import Settings

log = logging.getLogger("eqs_reward.scoring")


def check_limits(request: ScoreRequest, settings: Settings) -> None:
    """Refuse requests over the size limits with 413, naming the limit and where it was hit."""
    if len(request.items) > settings.max_items:
        raise PayloadTooLargeError(
            f"{len(request.items)} items exceed the limit of {settings.max_items} per request; "
            "split the batch"
        )
    limit = settings.max_text_chars
    for index, item in enumerate(request.items):
        where = f"items[{index}]"
        if (
            item.suggestions is not None
            and len(item.suggestions) > settings.max_suggestions_per_item
        ):
            raise PayloadTooLargeError(
                f"{where}.suggestions has {len(item.suggestions)} entries, over the limit of "
                f"{settings.max_suggestions_per_item}"
            )
        completion_limit = limit * settings.max_suggestions_per_item
        if item.completion is not None and len(item.completion) > completion_limit:
            raise PayloadTooLargeError(
                f"{where}.completion has {len(item.completion)} characters, over the limit of "
                f"{completion_limit}"
            )
        context = item.context
        texts = [("context.query", context.query), ("context.profile", context.profile or "")]
        texts += [
            (f"context.history[{i}].content", t.content) for i, t in enumerate(context.history)
        ]
        for field, text in texts:
            if len(text) > limit:
                raise PayloadTooLargeError(
                    f"{where}.{field} has {len(text)} characters, over the limit of {limit}"
                )
        if len(context.history) > settings.max_history_turns:
            raise PayloadTooLargeError(
                f"{where}.context.history has {len(context.history)} turns, over the limit of "
                f"{settings.max_history_turns}"
            )


def guard_suggestion(text: str, max_chars: int) -> str | None:
    """Why a suggestion is refused before the judge (deterministic), or None."""
    if not text.strip():
        return "empty"
    if len(text) > max_chars:
        return "too_long"
    if CONTROL_TOKEN.search(text):
        return "control_token"
    return None


@dataclass(slots=True)
class _Outcome:
    scores: Scores | None
    cached: bool
    failure: str | None = None


class Scorer:
    """Scores requests against one judge. Owns the cache and the judge concurrency bound."""

    def __init__(
        self,
        settings: Settings,
        judge: JudgeClient,
        bank: FewshotBank,
        prompt: JudgePrompt,
        metrics: Metrics,
        redis: RedisTier | None = None,
    ) -> None:
        self.settings = settings
        self.judge = judge
        self.bank = bank
        self.prompt = prompt
        self.metrics = metrics
        self.cache: LRUCache[Scores] = LRUCache(settings.cache_max_entries)
        self.redis = redis
        self._pending = 0  # judge calls admitted and not finished (running or queued)
        self._finished: deque[float] = deque()
        self.inflight: SingleFlight[Scores] = SingleFlight()
        self.retry_policy = RetryPolicy(
            settings.judge_max_retries,
            settings.judge_backoff_initial_s,
            settings.judge_backoff_max_s,
        )
        self._slots = asyncio.Semaphore(settings.judge_concurrency)
        self._waiting = 0
        self._prefix: dict[str, list[dict[str, str]]] = {}

    async def resolve_version(self, pinned: int | None) -> BankVersion:
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
        self, request: ScoreRequest, bank_version: BankVersion | None = None
    ) -> ScoreResponse:
        """Score a request; ``bank_version`` overrides the request's (a dry-run candidate)."""
        deadline = time.monotonic() + self.settings.request_deadline_s
        check_limits(request, self.settings)
        options = request.options
        if bank_version is None:
            bank_version = await self.resolve_version(options.fewshot_version)

        # 1. Parse items and apply the deterministic guards.
        parsed: list[tuple[ScoreItem, list[str], str | None, Context]] = []
        cases: dict[str, tuple[Context, str]] = {}
        keys: list[list[str | None]] = []
        for item in request.items:
            if item.completion is not None:
                completion = parse_completion(item.completion)
                texts, well_formed = completion.suggestions, completion.well_formed
                problem = completion.problem
            else:
                texts, well_formed, problem = list(item.suggestions or []), True, None
            problem = problem or format_problem(
                texts, options.k, self.settings.max_suggestion_tokens, well_formed
            )
            context = normalise_context(item.context)
            item_keys: list[str | None] = []
            for text in texts:
                if guard_suggestion(text, self.settings.max_text_chars):
                    item_keys.append(None)
                    continue
                suggestion = normalise_text(text)
                key = score_key(
                    judge_model=self.judge.model,
                    prompt_version=self.prompt.version,
                    fewshot_version=bank_version.cache_id,
                    score_mode=options.score_mode,
                    context=context,
                    suggestion=suggestion,
                )
                cases.setdefault(key, (context, suggestion))
                item_keys.append(key)
            parsed.append((item, texts, problem, context))
            keys.append(item_keys)

        # 2. Cache tiers: in process, then one MGET to Redis for what is left.
        outcomes = self._lookup(cases) if options.cache else {}
        missing = [key for key in cases if key not in outcomes]
        if missing and self.redis is not None and options.cache:
            found = await self.redis.get_many(missing)
            self.metrics.cache_hits.labels("redis").inc(len(found))
            self.metrics.cache_misses.labels("redis").inc(len(missing) - len(found))
            for key, scores in found.items():
                self.cache.set(key, scores)
                outcomes[key] = _Outcome(scores, True)
            missing = [key for key in missing if key not in found]

        # 3. The judge, for what no cache had: admitted only if the queue has room.
        if missing:
            self._admit(sum(1 for key in missing if key not in self.inflight))
            jobs = {
                key: asyncio.ensure_future(
                    self._judge_one(key, bank_version, *cases[key], options.score_mode)
                )
                for key in missing
            }
            remaining = max(0.0, deadline - time.monotonic())
            done, pending = await asyncio.wait(jobs.values(), timeout=remaining)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            for key, task in jobs.items():
                if task in done and not task.cancelled():
                    outcomes[key] = task.result()
                else:
                    outcomes[key] = _Outcome(None, False, failure="deadline")
        self.metrics.cache_entries.set(len(self.cache))

        # 4. Assemble results.
        results = [
            self._item_result(item, texts, problem, item_keys, outcomes, options.on_failure)
            for (item, texts, problem, _), item_keys in zip(parsed, keys, strict=True)
        ]
        return ScoreResponse(
            results=results,
            meta=ScoreMeta(
                judge_model=self.judge.model,
                prompt_version=self.prompt.version,
                fewshot_version=bank_version.version,
                score_mode=options.score_mode,
            ),
        )

    def _lookup(self, cases: dict[str, tuple[Context, str]]) -> dict[str, _Outcome]:
        found: dict[str, _Outcome] = {}
        for key in cases:
            scores = self.cache.get(key)
            if scores is not None:
                found[key] = _Outcome(scores, True)
        self.metrics.cache_hits.labels("memory").inc(len(found))
        self.metrics.cache_misses.labels("memory").inc(len(cases) - len(found))
        return found

    def _admit(self, new_calls: int) -> None:
        """Refuse work the judge cannot start soon: 429 with an honest Retry-After."""
        capacity = self.settings.judge_concurrency + self.settings.judge_queue_max
        if new_calls and self._pending + new_calls > capacity:
            rate = self._throughput()
            wait = min(60, max(1, math.ceil(self._pending / rate))) if rate else 5
            self.metrics.overloaded.inc()
            raise OverloadedError(
                f"the judge queue is full ({self._pending} calls waiting or running, room for "
                f"{capacity}); retry after {wait} s",
                headers={"Retry-After": str(wait)},
            )
        self._pending += new_calls

    def _throughput(self) -> float:
        """Judge calls finished per second over the last 10 s."""
        horizon = time.monotonic() - 10.0
        while self._finished and self._finished[0] < horizon:
            self._finished.popleft()
        return len(self._finished) / 10.0

    async def _judge_one(
        self, key: str, bank_version: BankVersion, context: Context, suggestion: str, mode: str
    ) -> _Outcome:
        try:
            scores, shared = await self.inflight.run(
                key, lambda: self._call_judge(key, bank_version, context, suggestion, mode)
            )
        except JudgeError as exc:
            return _Outcome(None, False, failure=exc.reason)
        finally:
            self._pending = max(0, self._pending - 1)
        if shared:
            self.metrics.cache_hits.labels("inflight").inc()
        return _Outcome(scores, shared)

    def _prefix_messages(self, bank_version: BankVersion) -> list[dict[str, str]]:
        prefix = self._prefix.get(bank_version.cache_id)
        if prefix is None:
            probe = Context(query="-")
            examples = select_examples(bank_version.examples, self.settings.fewshot_token_budget)
            prefix = self.prompt.messages(examples, probe, "-")[:-1]
            if len(self._prefix) > 16:
                self._prefix.clear()
            self._prefix[bank_version.cache_id] = prefix
        return prefix

    async def _call_judge(
        self, key: str, bank_version: BankVersion, context: Context, suggestion: str, mode: str
    ) -> Scores:
        messages = [
            *self._prefix_messages(bank_version),
            {"role": "user", "content": self.prompt.case_message(context, suggestion)},
        ]
        self._waiting += 1
        self.metrics.judge_queue.set(self._waiting)
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self.metrics.judge_queue.set(self._waiting)
        self.metrics.judge_in_flight.inc()
        started = time.perf_counter()

        def on_retry(exc: JudgeError) -> None:
            self.metrics.judge_attempt_errors.labels(exc.reason).inc()
            self.metrics.judge_retries.inc()
            log.info("judge attempt failed (%s), retrying: %s", exc.reason, exc)

        try:
            verdict = await grade_with_retries(
                self.judge,
                messages,
                "soft" if mode == "soft" else "binary",
                self.retry_policy,
                on_retry,
            )
        except JudgeError as exc:
            self.metrics.judge_attempt_errors.labels(exc.reason).inc()
            # A call that gave up on unreadable answers is told apart from an unreachable judge.
            outcome = "unparseable" if exc.reason == "unparseable" else "failed"
            self.metrics.judge_calls.labels(outcome).inc()
            log.warning("judge call failed after retries (%s): %s", exc.reason, exc)
            raise
        finally:
            self.metrics.judge_latency.observe(time.perf_counter() - started)
            self.metrics.judge_in_flight.dec()
            self._slots.release()
        self.metrics.judge_calls.labels("ok" if verdict.attempts == 1 else "retried").inc()
        self._finished.append(time.monotonic())
        scores: Scores = (verdict.answerability, verdict.factuality, verdict.information_gain)
        self.cache.set(key, scores)
        if self.redis is not None:
            self.redis.put(key, scores)
        return scores

    def _item_result(
        self,
        item: ScoreItem,
        texts: list[str],
        problem: str | None,
        item_keys: list[str | None],
        outcomes: dict[str, _Outcome],
        on_failure: str,
    ) -> ItemResult:
        m = self.metrics
        r_f = 0.0 if problem else 1.0
        suggestions: list[SuggestionScore] = []
        rewards: list[float] = []
        failed = 0
        for text, key in zip(texts, item_keys, strict=True):
            if key is None:
                reason = guard_suggestion(text, self.settings.max_text_chars) or "rejected"
                suggestions.append(
                    SuggestionScore(text=text, status="rejected", reward=0.0, reason=reason)
                )
                rewards.append(0.0)
                m.suggestions.labels("rejected").inc()
                m.failures.labels(reason).inc()
                continue
            outcome = outcomes[key]
            if outcome.scores is None:
                failed += 1
                zero = 0.0 if on_failure == "zero" else None
                suggestions.append(
                    SuggestionScore(
                        text=text,
                        status="failed",
                        answerability=zero,
                        factuality=zero,
                        information_gain=zero,
                        reward=zero,
                        reason=outcome.failure,
                    )
                )
                if zero is not None:
                    rewards.append(zero)
                m.suggestions.labels("failed").inc()
                m.failures.labels(outcome.failure or "unknown").inc()
                continue
            a, f, i = outcome.scores
            reward = suggestion_reward(a, f, i)
            suggestions.append(
                SuggestionScore(
                    text=text,
                    status="ok",
                    cached=outcome.cached,
                    answerability=a,
                    factuality=f,
                    information_gain=i,
                    reward=reward,
                )
            )
            rewards.append(reward)
            m.suggestions.labels("ok").inc()
            m.reward.observe(reward)
            for dimension, value in zip(DIMENSIONS, (a, f, i), strict=True):
                m.dimension.labels(dimension).observe(value)

        status: ResultStatus = (
            "ok" if failed == 0 else ("failed" if failed == len(texts) else "partial")
        )
        m.format_reward.observe(r_f)
        if failed and on_failure == "null":
            r_q: float | None = None
            u_q: float | None = None
        else:
            r_q = set_reward(r_f, rewards)
            u_q = disagreement(rewards)
            m.set_reward.observe(r_q)
            m.disagreement.observe(u_q)
        return ItemResult(
            id=item.id,
            status=status,
            format_reward=r_f,
            format_problem=problem,
            reward=r_q,
            disagreement=u_q,
            suggestions=suggestions,
        )
