"""The scoring service: one request's walk through the guard, the heads, the cache and the judge.

``ScoringService.score`` is the plain entry point every caller uses: the ``/v1/score`` and
``/get_reward`` routes (which apply size limits and admission first), and the bank's gate and
calibration (batches of any size). The request's recipe (``eqs_reward.server.recipes``) says
which heads run. Flow for one suggestion and LLM head (the judge, the simulated shopper): the
deterministic guard (once) -> in-process cache -> one Redis MGET for the rest -> a call already
in flight for the same key -> the judge endpoint (bounded concurrency, retries). The exclusivity
head embeds each set once, beside those calls. A head failure of any kind becomes a ``failed``
suggestion, never an exception out of ``score``; failures are never cached. The whole request
shares one deadline; judge calls that outlive it still fill the cache.

The steps live in their own modules: ``_items`` parses, guards and keys each item;
``cache.ScoreCache`` reads both tiers; ``_judge_pool`` runs the judge calls (bounds, retries,
single-flight, the cache's writes); ``_plans`` builds a recipe's heads and runs the computed
ones; ``_results`` assembles each item's result; ``groups`` fills a failed sample's neutral
value. This module only walks them in order.

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

from eqs_reward.catalog import CatalogBackend
from eqs_reward.judge import JudgeClient, JudgePrompt
from eqs_reward.server._items import Item, prepare
from eqs_reward.server._judge_pool import Case, JudgePool, Outcome, RateMeter
from eqs_reward.server._plans import Heads, Plan
from eqs_reward.server._results import item_result
from eqs_reward.server.bank import BankVersion, FewshotBank, VersionNotFoundError
from eqs_reward.server.cache import RedisTier, ScoreCache
from eqs_reward.server.errors import InvalidRequestError
from eqs_reward.server.groups import GroupMemory, RedisGroupMemory
from eqs_reward.server.guard import Guard
from eqs_reward.server.heads import Embedder
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.recipes import FitFor, Recipe, RecipeError, load_recipes
from eqs_reward.server.refit import with_stored_fits
from eqs_reward.server.review import ReviewQueue
from eqs_reward.server.schemas import ScoreOptions, ScoreRequest
from eqs_reward.server.settings import Settings
from eqs_reward.types import ItemResult, ScoreMeta, ScoreResponse

__all__ = ["Admit", "RateMeter", "ScoringService"]

log = logging.getLogger("eqs_reward.scoring")

#: Called with the number of new judge calls a request needs, before any starts; raises to
#: refuse (the HTTP layer's 429). The plain entry point passes none: internal batches queue.
Admit = Callable[[int], None]


class ScoringService:
    """Scores requests against one judge: the entry point of every caller."""

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
        self.cache = ScoreCache(settings.cache_max_entries, redis, metrics)
        self.pool = JudgePool(settings, judge, self.cache, metrics)
        self.groups: GroupMemory | RedisGroupMemory = GroupMemory()
        if settings.group_memory == "redis":
            if redis is None:
                raise RuntimeError("EQS_REWARD_GROUP_MEMORY=redis needs EQS_REWARD_REDIS_URL")
            self.groups = RedisGroupMemory(redis.redis, settings.redis_key_prefix)
        self.heads = Heads(settings, prompt, bank, metrics, embedder, catalog)
        #: What this service's stacking recipes must be fit for (``eqs_reward.server.refit``).
        self.fit_target = FitFor(judge.model, prompt.version, self.heads.taught.family)
        self.recipes = with_stored_fits(
            recipes or load_recipes(settings.prompts_path / "recipes"), settings, self.fit_target
        )
        if settings.default_recipe not in self.recipes:
            raise RecipeError(
                f"EQS_REWARD_DEFAULT_RECIPE={settings.default_recipe!r}: no such recipe "
                f"(known: {sorted(self.recipes)})"
            )
        self.plans = {name: self.heads.plan(recipe) for name, recipe in self.recipes.items()}
        #: Where requests' suggestions worth a look are sampled (set by the app when it is on).
        self.review: ReviewQueue | None = None

    def install_recipe(self, recipe: Recipe) -> None:
        """Serve ``recipe`` (a refit) from the next request on, in place of its id's."""
        plan = self.heads.plan(recipe)
        self.recipes[recipe.id] = recipe
        self.plans[recipe.id] = plan

    def resolve_recipe(self, name: str | None) -> Plan:
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
        outside = bank_version is None  # a caller's request, not the bank gate's own scoring
        options = request.options
        limit = self.settings.request_deadline_s
        deadline = started + min(limit, options.deadline_s or limit)
        plan = self.resolve_recipe(options.recipe)
        if bank_version is None:
            bank_version = await self.resolve_version(options.fewshot_version)
        head_versions = await self.heads.versions(plan, bank_version)
        # 1. parse, guard and key every item
        cases: dict[str, Case] = {}
        items = [
            prepare(
                item, options, plan, bank_version, cases,
                guard=self.guard, judge_model=self.judge.model,
                judge_prompt=self.prompt.version, settings=self.settings,
            )
            for item in request.items
        ]  # fmt: skip
        # 2. the cache's two tiers, then the judge for what they miss; the computed heads beside
        outcomes = {
            key: Outcome(scores, True)
            for key, scores in (
                await self.cache.get_many(list(cases)) if options.cache else {}
            ).items()
        }
        missing = [key for key in cases if key not in outcomes]
        if missing and admit is not None:
            admit(sum(1 for key in missing if not options.cache or key not in self.pool.inflight))
        batch = [item.batch() for item in items]
        computing = [
            asyncio.ensure_future(self.heads.compute(head, batch, bank_version, deadline))
            for head in plan.computed
        ]
        if missing:
            judge_mode = plan.recipe.judge_mode(options.score_mode)
            calls = {
                key: self.pool.start(key, cases[key], bank_version, judge_mode, options.cache)
                for key in missing
            }
            outcomes.update(await self.pool.wait(calls, deadline, private=not options.cache))
        by_head = [await task for task in computing]
        # 3. each item's result, then a failed sample's group mean
        results = [
            item_result(
                plan, item, outcomes,
                {head.name: done[n] for head, done in zip(plan.computed, by_head, strict=True)},
                options.on_failure, self.metrics,
            )
            for n, item in enumerate(items)
        ]  # fmt: skip
        if options.group_size is not None:
            results = await self._fill_groups(items, results, options, started, deadline)
        response = ScoreResponse(
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
        if outside and self.review is not None:
            self.review.offer(request, response)
        return response

    async def _fill_groups(
        self,
        items: list[Item],
        results: list[ItemResult],
        options: ScoreOptions,
        started: float,
        deadline: float,
    ) -> list[ItemResult]:
        """Record every item's reward under its group key; a failed item waits for its siblings
        and reports their mean (see ``eqs_reward.server.groups``)."""
        assert options.group_size is not None
        wait = max(0.0, min(options.group_wait_s, deadline - time.monotonic()))
        fills = await self.groups.fill_failed(
            [item.group_key for item in items],
            [result.reward for result in results],
            options.group_size,
            time.monotonic() - started,
            wait,
        )
        return [
            dataclasses.replace(result, group=fills[n].to_dict()) if n in fills else result
            for n, result in enumerate(results)
        ]
