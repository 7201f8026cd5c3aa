"""The retrieval head: is a suggestion grounded in the shop's own catalog?

QualEQS's judge cannot know that the shop's cheapest Wi-Fi 6 router costs $149.99; the catalog
does. Each suggestion is searched (without its budget phrase) and read against what it retrieves
(the top ``depth`` products; "relevant" ones match at least half of its terms):

- ``hits``: how much it retrieves: ``min(1, relevant / 3)`` (0 when nothing);
- ``match``: the best product's share of the suggestion's terms (term coverage, so the number
  means the same on every backend, whatever its own ranking scores);
- ``budget``: of the relevant products priced in the stated currency (any, when it names none),
  the share whose price the stated budget admits ("under $100", "below 2,500 PHP", "around 50
  euros"); 0 when none is; 1 when no budget is stated (nothing to contradict);
- ``brand``: 0 when a word that looks like a brand ("TP-Link", "ASUS") is in no product of the
  catalog, 1 when it is a catalog brand or nothing looks like one;
- ``consistency`` (QueryAgent-R1): with ``context.viewed_products``, the share of the viewed
  products (ids, or titles found in the catalog) that the suggestion retrieves; 1 without them.

Per set (MiniELM): ``diversity`` ``d = (|P~| - |P_Q ∩ P~|) / |P~|``, the share of the products the
suggestions retrieve that the shopper's own query did not; ``coverage``, the distinct products
the set reaches over the most it could (``depth`` per suggestion).

Searches are cached per catalog version: a new catalog load changes every key.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from eqs_reward.catalog import (
    CatalogBackend,
    CatalogInfo,
    Product,
    brand_candidates,
    split_budget,
    terms,
)
from eqs_reward.judge.cases import Context
from eqs_reward.server.heads._base import HeadUnavailableError, Reread

__all__ = ["CatalogUnavailableError", "RetrievalHead"]

#: Capitalised words that are not names of anything a shop sells.
_NOT_BRANDS = frozenset(
    {
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
        "january", "february", "march", "april", "may", "june", "july", "august",
        "september", "october", "november", "december", "christmas", "easter",
    }
)  # fmt: skip


class CatalogUnavailableError(HeadUnavailableError):
    """No catalog is configured or loaded (``eqs-reward catalog load FILE``)."""


class RetrievalHead:
    """See the module docstring."""

    name = "retrieval"
    RELEVANT = 0.5  # share of a suggestion's terms a product must match to count

    def __init__(
        self, catalog: CatalogBackend | None, depth: int = 10, cache_size: int = 50_000
    ) -> None:
        self.catalog = catalog
        self.depth = depth
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], list[Product]] = OrderedDict()
        self._cache_size = cache_size
        self._info: Reread[CatalogInfo] = Reread(
            CatalogUnavailableError,
            "no catalog is loaded: run 'eqs-reward catalog load FILE' (JSONL, CSV or Parquet)",
        )
        self._brands: tuple[str, list[tuple[str, ...]]] | None = None
        self._lock = asyncio.Lock()

    @property
    def _backend(self) -> CatalogBackend:
        if self.catalog is None:
            raise CatalogUnavailableError(
                "no catalog backend is configured (EQS_REWARD_CATALOG_BACKEND)"
            )
        return self.catalog

    async def info(self) -> CatalogInfo:
        """The active catalog, re-read every few seconds (a load by another process shows)."""
        if self._info.due():
            async with self._lock:
                if self._info.due():
                    self._info.set(await self._backend.active())
        return self._info.current()

    async def head_version(self) -> str:
        return f"retrieval-v1/{(await self.info()).key}/depth={self.depth}"

    async def _search(self, key: str, words: Sequence[str]) -> list[Product]:
        cache_key = (key, tuple(words))
        found = self._cache.get(cache_key)
        if found is None:
            found = await self._backend.search(words, self.depth)
            self._cache[cache_key] = found
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(cache_key)
        return found

    async def _known_brands(self, key: str) -> list[tuple[str, ...]]:
        if self._brands is None or self._brands[0] != key:
            brands = [tuple(terms(b)) for b in await self._backend.brands()]
            self._brands = (key, [b for b in brands if b])
        return self._brands[1]

    @staticmethod
    def _coverage(words: Sequence[str], product: Product) -> float:
        if not words:
            return 0.0
        own = set(terms(product.text))
        return sum(1 for w in words if w in own) / len(words)

    async def _brand(self, key: str, text: str) -> float:
        candidates = [c for c in brand_candidates(text) if " ".join(c) not in _NOT_BRANDS]
        if not candidates:
            return 1.0
        known = await self._known_brands(key)
        if any(tuple(c) in known for c in candidates):
            return 1.0
        for candidate in candidates:
            if not await self._backend.has_phrase(candidate):
                return 0.0  # named, and in no product of the shop
        return 1.0

    async def _viewed(self, key: str, viewed: Sequence[str]) -> set[str]:
        """Viewed products as catalog ids: an id as it is, else a title's best match."""
        found = {p.id for p in await self._backend.get(list(viewed))}
        for entry in viewed:
            if entry in found:
                continue
            words = terms(entry)
            hits = await self._search(key, words)
            if hits and self._coverage(words, hits[0]) >= 0.6:
                found.add(hits[0].id)
        return found

    async def _suggestion(
        self, key: str, text: str, viewed: set[str] | None
    ) -> tuple[dict[str, float], list[Product]]:
        budget, rest = split_budget(text)
        words = terms(rest)
        hits = await self._search(key, words)
        coverage = [self._coverage(words, p) for p in hits]
        relevant = [p for p, c in zip(hits, coverage, strict=True) if c >= self.RELEVANT]
        signals = {
            "hits": min(1.0, len(relevant) / 3),
            "match": max(coverage, default=0.0),
            "budget": 1.0,
            "brand": await self._brand(key, text),
            "consistency": 1.0,
        }
        if budget is not None:
            pool = [
                p
                for p in relevant
                if p.price is not None and (budget.currency in (None, p.currency))
            ]
            admitted = [p for p in pool if p.price is not None and budget.admits(p.price)]
            signals["budget"] = len(admitted) / len(pool) if pool else 0.0
        if viewed:
            signals["consistency"] = len(viewed & {p.id for p in hits}) / len(viewed)
        return signals, hits

    async def score(
        self, items: Sequence[tuple[Context, Sequence[str]]]
    ) -> list[tuple[list[dict[str, float]], dict[str, float]]]:
        """For each item (its context, its suggestions): per-suggestion and set signals."""
        key = (await self.info()).key
        out = []
        for context, suggestions in items:
            viewed = (
                await self._viewed(key, context.viewed_products)
                if context.viewed_products
                else None
            )
            query_budgetless = split_budget(context.query)[1]
            from_query = {p.id for p in await self._search(key, terms(query_budgetless))}
            per: list[dict[str, float]] = []
            reached: set[str] = set()
            for text in suggestions:
                signals, hits = await self._suggestion(key, text, viewed)
                per.append(signals)
                reached |= {p.id for p in hits}
            diversity = (
                (len(reached) - len(reached & from_query)) / len(reached) if reached else 0.0
            )
            most = self.depth * len(suggestions)
            coverage = len(reached) / most if most else 0.0
            out.append((per, {"diversity": diversity, "coverage": min(1.0, coverage)}))
        return out
