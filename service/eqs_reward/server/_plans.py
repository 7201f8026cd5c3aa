"""The heads a recipe may name, and a recipe's plan: which heads run, built once.

``Heads`` is the registry: one builder per head name (``BUILDERS``), so adding a head means a
module under ``heads/``, its signals in ``recipes.HEAD_SIGNALS`` and a builder here. Heads that
hold state (the embedder, the catalog's retrieval per search depth, the click model, the taught
model per bank version) are built once and shared by every recipe that names them. ``compute``
runs a computed head over a whole request; ``versions`` gives each head's version for ``meta``
and for the cache key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from eqs_reward.catalog import CatalogBackend
from eqs_reward.judge import JudgePrompt
from eqs_reward.judge.cases import Context
from eqs_reward.server.bank import BankVersion, FewshotBank
from eqs_reward.server.errors import UnavailableError
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
from eqs_reward.server.recipes import HEAD_SIGNALS, Recipe, RecipeError
from eqs_reward.server.settings import Settings

__all__ = ["AnyComputed", "Computed", "Heads", "Plan"]

log = logging.getLogger("eqs_reward.scoring")

#: A computed head; the taught one is also given the bank version a request uses.
AnyComputed = ComputedHead | TaughtHead
#: Per item and computed head: its per-suggestion and set signals, or a failure reason.
Computed = tuple[list[dict[str, float]], dict[str, float]] | str

#: Why a computed head failed, when it raised something unexpected.
_REASONS = {"exclusivity": "embedding", "retrieval": "catalog", "clicks": "click_model"}


@dataclass(frozen=True, slots=True)
class Plan:
    """A recipe with its heads built: the LLM heads in call order, the computed heads."""

    recipe: Recipe
    llm_heads: tuple[LLMHead, ...]
    computed: tuple[AnyComputed, ...]


@runtime_checkable
class _StoresTaught(Protocol):
    async def get_taught(self, version: int, embedder: str) -> str | None: ...
    async def set_taught(self, version: int, embedder: str, body: str) -> None: ...


class Heads:
    """Every head the service can run, built on demand and shared across recipes."""

    def __init__(
        self,
        settings: Settings,
        prompt: JudgePrompt,
        bank: FewshotBank,
        metrics: Metrics,
        embedder: Embedder | None = None,
        catalog: CatalogBackend | None = None,
    ) -> None:
        self.settings = settings
        self.prompt = prompt
        self.metrics = metrics
        self.catalog = catalog
        self._embedder = embedder
        self._retrieval: dict[int, RetrievalHead] = {}  # one per search depth (shared cache)
        self.clicks = ClicksHead(settings.data_dir / "clicks")
        self.taught = TaughtHead(
            _LazyEmbedder(self),
            training_cases(settings.taught_cases),
            # A bank store keeps each version's model; a read-only bank (tests, offline) does not.
            (bank.get_taught, bank.set_taught) if isinstance(bank, _StoresTaught) else None,
        )

    @property
    def embedder(self) -> Embedder:
        """The embedder, made on first use (wordllama loads in about 0.1 s)."""
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

    # -- the registry: one builder per head name -------------------------------------------------
    def _judge(self, recipe: Recipe, _: dict[str, Any]) -> LLMHead:
        if self.prompt.output.names != HEAD_SIGNALS["judge"]:
            raise RecipeError(f"prompt {self.prompt.version} does not answer the judge's signals")
        return LLMHead("judge", self.prompt, uses_bank=True)

    def _shopper(self, recipe: Recipe, options: dict[str, Any]) -> LLMHead:
        prompt = JudgePrompt.load(self.settings.prompts_path, options.get("prompt", "shopper-v1"))
        if prompt.output.names != HEAD_SIGNALS["shopper"]:
            raise RecipeError(
                f"recipe {recipe.key}: prompt {prompt.version} answers "
                f"{prompt.output.names}, the shopper head needs {HEAD_SIGNALS['shopper']}"
            )
        return LLMHead("shopper", prompt, uses_bank=False, any_of="tap")

    def _exclusivity(self, recipe: Recipe, options: dict[str, Any]) -> ExclusivityHead:
        try:
            return ExclusivityHead(
                _LazyEmbedder(self),
                low=float(options.get("low", ExclusivityHead.LOW)),
                high=float(options.get("high", ExclusivityHead.HIGH)),
            )
        except ValueError as exc:
            raise RecipeError(f"recipe {recipe.key}: exclusivity: {exc}") from exc

    def _retrieval_head(self, recipe: Recipe, options: dict[str, Any]) -> RetrievalHead:
        depth = int(options.get("depth", 10))
        if not 1 <= depth <= 100:
            raise RecipeError(f"recipe {recipe.key}: retrieval depth must be 1 to 100")
        if depth not in self._retrieval:
            self._retrieval[depth] = RetrievalHead(self.catalog, depth)
        return self._retrieval[depth]

    BUILDERS: ClassVar[
        dict[str, Callable[[Heads, Recipe, dict[str, Any]], LLMHead | AnyComputed]]
    ] = {
        "judge": _judge,
        "shopper": _shopper,
        "exclusivity": _exclusivity,
        "retrieval": _retrieval_head,
        "clicks": lambda heads, recipe, options: heads.clicks,
        "taught": lambda heads, recipe, options: heads.taught,
    }

    def plan(self, recipe: Recipe) -> Plan:
        llm: list[LLMHead] = []
        computed: list[AnyComputed] = []
        for name, options in recipe.heads.items():
            head = self.BUILDERS[name](self, recipe, options)
            if isinstance(head, LLMHead):
                llm.append(head)
            else:
                computed.append(head)
        return Plan(recipe, tuple(llm), tuple(computed))

    # -- running them ---------------------------------------------------------------------------
    async def versions(self, plan: Plan, bank_version: BankVersion) -> dict[str, str]:
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

    async def compute(
        self,
        head: AnyComputed,
        batch: Sequence[tuple[Context, Sequence[str]]],
        bank_version: BankVersion,
        deadline: float,
    ) -> list[Computed]:
        """A computed head over every item at once (one embedding batch, say); on any failure
        every item gets the reason instead (its suggestions fail, flagged, nothing cached)."""
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
        return [reason] * len(batch)


class _LazyEmbedder:
    """The registry's embedder, made when a head first embeds (so a server whose requests never
    name a recipe with such a head never loads one)."""

    def __init__(self, heads: Heads) -> None:
        self._heads = heads

    @property
    def name(self) -> str:
        return self._heads.embedder.name

    async def embed(self, texts: Any) -> Any:
        return await self._heads.embedder.embed(texts)
