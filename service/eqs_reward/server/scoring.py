"""The scoring service: guards, reward heads, cache, single-flight, bounded judge calls, rewards.

``ScoringService.score`` is the plain entry point every caller uses: the ``/v1/score`` and
``/get_reward`` routes (which apply size limits and admission first), and the bank's gate and
calibration (batches of any size). The request's recipe (``eqs_reward.server.recipes``) says
which heads run. Flow for one suggestion and LLM head (the judge, the simulated shopper): the
deterministic guard (once) -> in-process cache -> one Redis MGET for the rest -> a call already
in flight for the same key -> the judge endpoint (bounded concurrency, retries). The exclusivity
head embeds each set once, beside those calls. A head failure of any kind becomes a ``failed``
suggestion, never an exception out of ``score``; failures are never cached. The whole request
shares one deadline; judge calls that outlive it still fill the cache.

A cache key carries the judge model, the head's prompt version, the guard version, the recipe and
its version, the few-shot version (the judge head only), the score mode and the case: bumping a
recipe's version re-scores exactly what was computed under that recipe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from eqs_reward.catalog import CatalogBackend
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
)
from eqs_reward.server.bank import BankVersion, FewshotBank, VersionNotFoundError
from eqs_reward.server.cache import LRUCache, RedisTier, SingleFlight, score_key
from eqs_reward.server.errors import InvalidRequestError, UnavailableError
from eqs_reward.server.groups import GroupMemory
from eqs_reward.server.guard import Guard
from eqs_reward.server.heads import (
    ComputedHead,
    Embedder,
    ExclusivityHead,
    HeadUnavailableError,
    LLMHead,
    OpenAIEmbedder,
    WordLlamaEmbedder,
)
from eqs_reward.server.heads.clicks import ClicksHead
from eqs_reward.server.heads.retrieval import RetrievalHead
from eqs_reward.server.heads.taught import TaughtHead, training_cases
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.recipes import (
    HEAD_SET_SIGNALS,
    HEAD_SIGNALS,
    Recipe,
    RecipeError,
    load_recipes,
)
from eqs_reward.server.schemas import ScoreItem, ScoreOptions, ScoreRequest
from eqs_reward.server.settings import Settings
from eqs_reward.types import (
    ItemResult,
    OnFailure,
    ResultStatus,
    ScoreMeta,
    ScoreMode,
    ScoreResponse,
    SuggestionScore,
)

__all__ = ["Admit", "RateMeter", "ScoringService"]


@runtime_checkable
class _StoresTaught(Protocol):
    async def get_taught(self, version: int, embedder: str) -> str | None: ...
    async def set_taught(self, version: int, embedder: str, body: str) -> None: ...


#: A computed head; the taught one is also given the bank version a request uses.
AnyComputed = ComputedHead | TaughtHead

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
    """One suggestion on its way through a request: refused (``reason``) or keyed per LLM head."""

    text: str
    reason: str | None
    keys: dict[str, str]


@dataclass(slots=True)
class _Item:
    item: ScoreItem
    problem: str | None
    slots: list[_Slot]
    group_key: str


@dataclass(frozen=True, slots=True)
class _Case:
    head: LLMHead
    context: Context
    suggestion: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """A recipe with its heads built: the LLM heads in call order, the computed heads."""

    recipe: Recipe
    llm_heads: tuple[LLMHead, ...]
    computed: tuple[AnyComputed, ...]


#: Per item and computed head: its per-suggestion and set signals, or a failure reason.
_Computed = tuple[list[dict[str, float]], dict[str, float]] | str


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
        recipes: dict[str, Recipe] | None = None,
        embedder: Embedder | None = None,
        catalog: CatalogBackend | None = None,
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
        self.recipes = recipes or load_recipes(settings.prompts_path / "recipes")
        if settings.default_recipe not in self.recipes:
            raise RecipeError(
                f"EQS_REWARD_DEFAULT_RECIPE={settings.default_recipe!r}: no such recipe "
                f"(known: {sorted(self.recipes)})"
            )
        self._embedder = embedder
        self.catalog = catalog
        self._retrieval: dict[int, RetrievalHead] = {}  # one per search depth (shared cache)
        self.clicks = ClicksHead(settings.data_dir / "clicks")
        self.taught = TaughtHead(
            _LazyEmbedder(self),
            training_cases(settings.taught_cases),
            # A bank store keeps each version's model; a read-only bank (tests, offline) does not.
            (bank.get_taught, bank.set_taught) if isinstance(bank, _StoresTaught) else None,
        )
        self.plans = {name: self._plan(recipe) for name, recipe in self.recipes.items()}

    # -- 0. recipes and heads -------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The exclusivity head's embedder, made on first use (wordllama loads in about 0.1 s)."""
        if self._embedder is None:
            s = self.settings
            if s.embeddings_url:
                self._embedder = OpenAIEmbedder(
                    s.embeddings_url,
                    s.embeddings_model,
                    api_key=s.embeddings_api_key,
                    timeout_s=s.embeddings_timeout_s,
                )
            else:
                self._embedder = WordLlamaEmbedder()
        return self._embedder

    def _plan(self, recipe: Recipe) -> _Plan:
        llm: list[LLMHead] = []
        computed: list[AnyComputed] = []
        for name, head_settings in recipe.heads.items():
            if name == "judge":
                llm.append(LLMHead("judge", self.prompt, uses_bank=True))
            elif name == "shopper":
                prompt = JudgePrompt.load(
                    self.settings.prompts_path, head_settings.get("prompt", "shopper-v1")
                )
                if prompt.output.names != HEAD_SIGNALS["shopper"]:
                    raise RecipeError(
                        f"recipe {recipe.key}: prompt {prompt.version} answers "
                        f"{prompt.output.names}, the shopper head needs {HEAD_SIGNALS['shopper']}"
                    )
                llm.append(LLMHead("shopper", prompt, uses_bank=False))
            elif name == "exclusivity":
                try:
                    computed.append(
                        ExclusivityHead(
                            _LazyEmbedder(self),
                            low=float(head_settings.get("low", ExclusivityHead.LOW)),
                            high=float(head_settings.get("high", ExclusivityHead.HIGH)),
                        )
                    )
                except ValueError as exc:
                    raise RecipeError(f"recipe {recipe.key}: exclusivity: {exc}") from exc
            elif name == "retrieval":
                depth = int(head_settings.get("depth", 10))
                if not 1 <= depth <= 100:
                    raise RecipeError(f"recipe {recipe.key}: retrieval depth must be 1 to 100")
                if depth not in self._retrieval:
                    self._retrieval[depth] = RetrievalHead(self.catalog, depth)
                computed.append(self._retrieval[depth])
            elif name == "clicks":
                computed.append(self.clicks)
            elif name == "taught":
                computed.append(self.taught)
        if "judge" in recipe.heads and self.prompt.output.names != HEAD_SIGNALS["judge"]:
            raise RecipeError(f"prompt {self.prompt.version} does not answer the judge's signals")
        return _Plan(recipe, tuple(llm), tuple(computed))

    async def head_versions(self, plan: _Plan, bank_version: BankVersion) -> dict[str, str]:
        """Each head's own version (prompt, embedder and ramp, catalog, click model, the taught
        model of the bank version); 503 when a head has nothing to work from (no catalog
        loaded, no click model fitted): a configuration to fix, not a failure to flag on every
        suggestion."""
        versions = {head.name: head.version for head in plan.llm_heads}
        for head in plan.computed:
            try:
                if isinstance(head, TaughtHead):
                    versions[head.name] = await head.head_version(bank_version)
                else:
                    versions[head.name] = await head.head_version()
            except HeadUnavailableError as exc:
                raise UnavailableError(f"recipe {plan.recipe.key}: {exc}") from exc
        return versions

    def resolve_recipe(self, name: str | None) -> _Plan:
        """The plan of a named recipe, or of the default one (422 for an unknown name)."""
        plan = self.plans.get(name or self.settings.default_recipe)
        if plan is None:
            raise InvalidRequestError(
                f"options.recipe: no recipe {name!r} (known: {', '.join(sorted(self.plans))}); "
                "GET /v1/recipes lists them"
            )
        return plan

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
        options = request.options
        limit = self.settings.request_deadline_s
        deadline = started + min(limit, options.deadline_s or limit)
        plan = self.resolve_recipe(options.recipe)
        if bank_version is None:
            bank_version = await self.resolve_version(options.fewshot_version)
        head_versions = await self.head_versions(plan, bank_version)
        cases: dict[str, _Case] = {}
        items = [self._prepare(item, options, plan, bank_version, cases) for item in request.items]
        outcomes = await self._lookup(cases) if options.cache else {}
        missing = [key for key in cases if key not in outcomes]
        if missing and admit is not None:
            admit(sum(1 for key in missing if not options.cache or key not in self.inflight))
        computing = [
            asyncio.ensure_future(self._computed(head, items, bank_version, deadline))
            for head in plan.computed
        ]
        if missing:
            calls = {
                key: self._start_call(
                    key, bank_version, cases[key], options.score_mode, options.cache
                )
                for key in missing
            }
            outcomes.update(await self._wait_calls(calls, deadline, private=not options.cache))
        by_head = [await task for task in computing]
        computed = [
            {head.name: results[n] for head, results in zip(plan.computed, by_head, strict=True)}
            for n in range(len(items))
        ]
        self.metrics.cache_entries.set(len(self.cache))
        results = [
            self._result(plan, item, outcomes, extra, options.on_failure)
            for item, extra in zip(items, computed, strict=True)
        ]
        if options.group_size is not None:
            results = await self._fill_groups(items, results, options, started, deadline)
        return ScoreResponse(
            results=tuple(results),
            meta=ScoreMeta(
                judge_model=self.judge.model,
                prompt_version=self.prompt.version,
                fewshot_version=bank_version.version,
                score_mode=options.score_mode,
                recipe={
                    "id": plan.recipe.id,
                    "version": plan.recipe.version,
                    "signals": list(plan.recipe.signals),
                    "set_signals": list(plan.recipe.set_signals),
                    "heads": head_versions,
                },
            ),
        )

    # -- 1. parse, guard and key ----------------------------------------------------------------
    def _prepare(
        self,
        item: ScoreItem,
        options: ScoreOptions,
        plan: _Plan,
        bank_version: BankVersion,
        cases: dict[str, _Case],
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
                slots.append(_Slot(text, "too_many", {}))
                continue
            reason = self.guard.reason(text)
            if reason is not None:
                slots.append(_Slot(text, reason, {}))
                continue
            suggestion = normalise_text(text)
            keys = {}
            for head in plan.llm_heads:
                key = score_key(
                    judge_model=self.judge.model,
                    prompt_version=f"{head.version}+{self.guard.version}+{plan.recipe.key}",
                    fewshot_version=bank_version.cache_id if head.uses_bank else "-",
                    score_mode=options.score_mode,
                    context=context,
                    suggestion=suggestion,
                )
                cases.setdefault(key, _Case(head, context, suggestion))
                keys[head.name] = key
            slots.append(_Slot(text, None, keys))
        group_key = score_key(
            judge_model=self.judge.model,
            prompt_version=f"{self.prompt.version}+{plan.recipe.key}",
            fewshot_version=bank_version.cache_id,
            score_mode=f"{options.score_mode}/k={options.k}",
            context=context,
            suggestion="",
        )
        return _Item(item, problem, slots, group_key)

    # -- 2. cache tiers -------------------------------------------------------------------------
    async def _lookup(self, cases: dict[str, _Case]) -> dict[str, _Outcome]:
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
        self, key: str, bank_version: BankVersion, case: _Case, mode: ScoreMode, cache: bool
    ) -> tuple[asyncio.Task[Scores], bool]:
        """The judge call for ``key``: one already in flight (shared), or one started now and
        counted in the backlog at once (admission reads it; the call's end releases it).

        With ``cache`` off the call is the caller's own: it joins nobody's call and its result
        is written to neither tier (a caller measuring the judge's spread must not evict, or be
        served, anyone else's entries)."""
        if cache:
            task, started = self.inflight.start(
                key, lambda: self._call_judge(bank_version, key, case, mode, store=True)
            )
        else:
            task = self.inflight.start_private(
                lambda: self._call_judge(bank_version, key, case, mode, store=False)
            )
            started = True
        if started:
            self.backlog += 1
            task.add_done_callback(self._call_ended)
        return task, not started

    def _call_ended(self, _: asyncio.Task[Scores]) -> None:
        self.backlog -= 1

    async def _wait_calls(
        self,
        calls: dict[str, tuple[asyncio.Task[Scores], bool]],
        deadline: float,
        private: bool = False,
    ) -> dict[str, _Outcome]:
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

    def _prefix_messages(self, head: LLMHead, bank_version: BankVersion) -> list[dict[str, str]]:
        """The head's system prompt and (for the judge) the bank's examples: the same prefix for
        every call of a head and version, so vLLM's prefix cache serves it."""
        cache_id = f"{head.version}/{bank_version.cache_id if head.uses_bank else '-'}"
        prefix = self._prefix.get(cache_id)
        if prefix is None:
            probe = Context.model_construct(query="-", history=[], profile=None, intent=None)
            examples = (
                select_examples(bank_version.examples, self.settings.fewshot_token_budget)
                if head.uses_bank
                else []
            )
            prefix = head.prompt.messages(examples, probe, "-")[:-1]
            if len(self._prefix) > 16:
                self._prefix.clear()
            self._prefix[cache_id] = prefix
        return prefix

    async def _call_judge(
        self, bank_version: BankVersion, key: str, case: _Case, mode: ScoreMode, *, store: bool
    ) -> Scores:
        head = case.head
        messages = [
            *self._prefix_messages(head, bank_version),
            {"role": "user", "content": head.prompt.case_message(case.context, case.suggestion)},
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
        m.judge_calls.labels("ok" if verdict.attempts == 1 else "retried").inc()
        self.finished.add()
        if store:
            self.cache.set(key, verdict.scores)
            if self.redis is not None:
                self.redis.put(key, verdict.scores)
        return verdict.scores

    async def _computed(
        self, head: AnyComputed, items: list[_Item], bank_version: BankVersion, deadline: float
    ) -> list[_Computed]:
        """A computed head over every item at once (one embedding batch, say); on any failure
        every item gets the reason instead (its suggestions fail, flagged, nothing cached)."""
        limit = self.settings.max_suggestions_per_item
        batch = [
            (item.item.context, [normalise_text(slot.text) for slot in item.slots[:limit]])
            for item in items
        ]
        m = self.metrics
        started = time.perf_counter()
        reason: str
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                if isinstance(head, TaughtHead):
                    return list(await head.score(batch, bank_version))
                return list(await head.score(batch))
        except TimeoutError:
            reason = "deadline"
        except HeadUnavailableError:  # it went away since the request's check
            reason = "unavailable"
        except Exception as exc:  # a head's fault costs these suggestions, not the request
            log.warning("%s head failed: %r", head.name, exc)
            reason = _REASONS.get(head.name, "error")
        finally:
            m.head_duration.labels(head.name).observe(time.perf_counter() - started)
        m.head_failures.labels(head.name, reason).inc()
        return [reason] * len(items)

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
        self,
        plan: _Plan,
        prepared: _Item,
        outcomes: dict[str, _Outcome],
        computed: dict[str, _Computed],
        on_failure: OnFailure,
    ) -> ItemResult:
        m = self.metrics
        recipe = plan.recipe
        names = recipe.signals
        suggestions: list[SuggestionScore] = []
        rewards: list[float] = []
        rows: list[dict[str, float]] = []  # what the set expression aggregates over
        failed = 0
        zero = 0.0 if on_failure == "zero" else None
        nothing = dict.fromkeys(names, 0.0)  # a refused (or zeroed) suggestion's row
        for index, slot in enumerate(prepared.slots):
            if not slot.keys:
                reason = slot.reason or "rejected"
                suggestions.append(
                    SuggestionScore(slot.text, "rejected", reward=0.0, reason=reason, signals={})
                )
                rewards.append(0.0)
                rows.append({**nothing, "reward": 0.0})
                m.suggestions.labels("rejected").inc()
                m.failures.labels(reason).inc()
                m.guard_refusals.labels(reason).inc()
                continue
            signals, cached, failure = self._signals(plan, slot, outcomes, computed, index)
            if failure is not None:
                failed += 1
                suggestions.append(
                    SuggestionScore(
                        slot.text, "failed", False, zero, zero, zero, zero, failure, signals
                    )
                )
                if zero is not None:
                    rewards.append(zero)
                    rows.append({**nothing, "reward": zero})
                m.suggestions.labels("failed").inc()
                m.failures.labels(failure).inc()
                continue
            values = {name: value for name, value in signals.items() if value is not None}
            reward = recipe.suggestion_reward(values)
            # The response's dimensions: the recipe's per-dimension terms when the reward is
            # their product, else the judge's verdicts.
            dimensions = recipe.dimensions(values)
            a, f, i = (
                dimensions[d] if dimensions is not None else signals.get(f"judge.{d}")
                for d in HEAD_SIGNALS["judge"]
            )
            suggestions.append(
                SuggestionScore(slot.text, "ok", cached, a, f, i, reward, signals=signals)
            )
            rewards.append(reward)
            rows.append({**values, "reward": reward})
            m.suggestions.labels("ok").inc()
            m.reward.observe(reward)
            for name, value in values.items():
                m.head_signal.labels(name).observe(value)
                if name.startswith("judge."):
                    m.dimension.labels(name[len("judge.") :]).observe(value)

        set_signals = self._set_signals(plan, suggestions, computed, on_failure)
        status: ResultStatus = (
            "ok" if failed == 0 else ("failed" if failed == len(prepared.slots) else "partial")
        )
        r_f = 0.0 if prepared.problem else 1.0
        m.format_reward.observe(r_f)
        r_q: float | None = None
        u_q: float | None = None
        if not (failed and on_failure == "null"):
            known = {name: 0.0 if v is None else v for name, v in set_signals.items()}
            r_q = recipe.set_reward(r_f, rows, known)
            u_q = disagreement(rewards)
            m.set_reward.observe(r_q)
            m.disagreement.observe(u_q)
            for name, value in known.items():
                m.head_signal.labels(name).observe(value)
        return ItemResult(
            id=prepared.item.id,
            status=status,
            format_reward=r_f,
            format_problem=prepared.problem,
            reward=r_q,
            disagreement=u_q,
            suggestions=tuple(suggestions),
            set_signals=set_signals,
        )

    @staticmethod
    def _signals(
        plan: _Plan,
        slot: _Slot,
        outcomes: dict[str, _Outcome],
        computed: dict[str, _Computed],
        index: int,
    ) -> tuple[dict[str, float | None], bool, str | None]:
        """One suggestion's signals (None where its head failed), whether every LLM head's
        answer came from the cache, and the first failure."""
        signals: dict[str, float | None] = {}
        cached = bool(plan.llm_heads)
        failure: str | None = None
        for head in plan.llm_heads:
            outcome = outcomes[slot.keys[head.name]]
            names = [f"{head.name}.{n}" for n in head.signals]
            if outcome.scores is None:
                failure = failure or outcome.failure or "unknown"
                signals.update(dict.fromkeys(names, None))
            else:
                signals.update(zip(names, outcome.scores, strict=True))
                cached = cached and outcome.cached
        for computed_head in plan.computed:
            name = computed_head.name
            names = [f"{name}.{n}" for n in HEAD_SIGNALS[name]]
            result = computed.get(name, "error")
            if isinstance(result, str):
                failure = failure or result
                signals.update(dict.fromkeys(names, None))
            elif index < len(result[0]):
                signals.update({f"{name}.{n}": v for n, v in result[0][index].items()})
            else:  # past the per-item limit: refused earlier, never reaches here
                failure = failure or "too_many"
        ordered = {name: signals.get(name) for name in plan.recipe.signals}  # the recipe's order
        return ordered, cached, failure

    @staticmethod
    def _set_signals(
        plan: _Plan,
        suggestions: list[SuggestionScore],
        computed: dict[str, _Computed],
        on_failure: OnFailure,
    ) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        if "shopper" in plan.recipe.heads:
            # GQR's list click probability 1 - prod(1 - p_k). A refused suggestion is not
            # tapped; a failed one is unknown (None), or not tapped under on_failure "zero".
            missed: float | None = 1.0
            for suggestion in suggestions:
                if suggestion.status == "rejected":
                    continue
                if suggestion.status == "failed" and on_failure == "zero":
                    continue
                tap = (suggestion.signals or {}).get("shopper.tap")
                if suggestion.status == "failed":
                    tap = None
                if tap is None or missed is None:
                    missed = None
                    continue
                missed *= 1.0 - tap
            out["shopper.any_tap"] = None if missed is None else 1.0 - missed
        for head in plan.computed:
            result = computed.get(head.name, "error")
            for name in HEAD_SET_SIGNALS[head.name]:
                out[f"{head.name}.{name}"] = None if isinstance(result, str) else result[1][name]
        return {name: out.get(name) for name in plan.recipe.set_signals}  # the recipe's order


#: Why a computed head failed, when it raised something unexpected.
_REASONS = {"exclusivity": "embedding", "retrieval": "catalog", "clicks": "click_model"}


class _LazyEmbedder:
    """The service's embedder, made when the exclusivity head first runs (so a server whose
    requests never name a recipe with it never loads one)."""

    def __init__(self, service: ScoringService) -> None:
        self._service = service

    @property
    def name(self) -> str:
        return self._service.embedder.name

    async def embed(self, texts: Any) -> Any:
        return await self._service.embedder.embed(texts)
