"""The review queue: samples offered by the scoring path, written behind it, read a page at a
time, labeled by an operator and published into the bank.

``offer`` never waits: samples go into a bounded in-memory buffer that one writer task drains
into the store in batches; a sample that finds the buffer full is dropped and counted
(``eqs_reward_review_dropped_total``), never an error. Labels are written before their request
returns. Publishing turns labeled cases into examples of a new bank version through the bank
service (its gate, expected version and dry run), then marks them with that version.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import ValidationError

from eqs_reward.judge.cases import Context, ExampleIn, Labels
from eqs_reward.server.errors import ConflictError, InvalidRequestError, NotFoundError
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.review._item import ReviewItem, ReviewQuery
from eqs_reward.server.review._select import ReviewRules, select
from eqs_reward.server.review._stores import ReviewStore
from eqs_reward.server.schemas import AddExamples, PublishCases, ScoreRequest
from eqs_reward.server.settings import Settings
from eqs_reward.types import ScoreResponse

if TYPE_CHECKING:
    from eqs_reward.server.bank import BankService, GateOutcome

__all__ = ["ReviewQueue"]

log = logging.getLogger("eqs_reward.review")

#: Cases read from the store per step while a filtered page is filled.
_SCAN = 200
#: How often the bounds are applied (the queue may run over them by what arrives meanwhile).
TRIM_EVERY_S = 5.0


class ReviewQueue:
    """See the module docstring."""

    def __init__(
        self, store: ReviewStore, settings: Settings, metrics: Metrics, seed: int | None = None
    ) -> None:
        self.store = store
        self.rules = ReviewRules.of(settings)
        self.keep = settings.review_max_items
        self.retention = timedelta(seconds=settings.review_retention_s)
        self.metrics = metrics
        self._rng = random.Random(seed)
        self._buffer: asyncio.Queue[ReviewItem] = asyncio.Queue(settings.review_buffer)
        self._writer: asyncio.Task[None] | None = None
        self._trim_at = 0.0
        self._first = settings.review_first

    # -- the scoring path's side ---------------------------------------------------------------
    def offer(self, request: ScoreRequest, response: ScoreResponse) -> None:
        """Sample ``response``'s suggestions worth a look; never waits, never raises."""
        rules = self.rules
        if self._first > 0:  # a fresh service samples everything it scores, at first
            self._first -= sum(len(r.suggestions) for r in response.results)
            rules = dataclasses.replace(rules, uniform_rate=1.0)
        try:
            picked = select(request, response, rules, self._rng)
        except Exception:  # a bug here must cost a sample, never a request
            log.exception("review sampling failed")
            return
        for item in picked:
            try:
                self._buffer.put_nowait(item)
            except asyncio.QueueFull:
                self.metrics.review_dropped.inc()
                continue
            for reason in item.reasons:
                self.metrics.review_sampled.labels(reason.split(":", 1)[0]).inc()
        if picked and (self._writer is None or self._writer.done()):
            self._writer = asyncio.ensure_future(self._write_loop())

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._buffer.get()]
            while not self._buffer.empty() and len(batch) < 500:
                batch.append(self._buffer.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[ReviewItem]) -> None:
        try:
            await self.store.add(batch)
            if time.monotonic() >= self._trim_at:  # the bounds, at most every few seconds
                self._trim_at = time.monotonic() + TRIM_EVERY_S
                await self.store.trim(self.keep, datetime.now(UTC) - self.retention)
        except Exception as exc:  # the store is down: these samples are lost, and counted
            log.warning("review queue: %d samples not written: %r", len(batch), exc)
            self.metrics.review_dropped.inc(len(batch))

    async def flush(self) -> None:
        """Write what is buffered now (at shutdown, and for tests)."""
        batch: list[ReviewItem] = []
        while not self._buffer.empty():
            batch.append(self._buffer.get_nowait())
        if batch:
            await self._write(batch)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self.flush()
        await self.store.close()

    # -- the operator's side -------------------------------------------------------------------
    async def page(
        self, query: ReviewQuery, limit: int, after: str | None
    ) -> tuple[list[ReviewItem], str | None]:
        """Up to ``limit`` matching cases older than the cursor ``after``, newest first, and the
        next page's cursor (None at the end)."""
        found: list[ReviewItem] = []
        cursor = after
        while len(found) < limit:
            chunk = await self.store.older(cursor, _SCAN)
            if not chunk:
                return found, None
            for item in chunk:
                if query.matches(item):
                    found.append(item)
                    if len(found) == limit:
                        return found, item.id
            cursor = chunk[-1].id
        return found, cursor

    async def get(self, item_id: str) -> ReviewItem | None:
        return await self.store.get(item_id)

    async def label(self, item_id: str, labels: Labels, rationale: str) -> ReviewItem | None:
        """Store an operator's labels (and why); None when there is no such case."""
        item = await self.store.get(item_id)
        if item is None:
            return None
        labeled = item.model_copy(
            update={"labels": labels, "rationale": rationale, "labeled_at": datetime.now(UTC)}
        )
        await self.store.put(labeled)
        return labeled

    async def publishable(self, ids: Sequence[str] | None, limit: int) -> list[ReviewItem]:
        """The cases ``ids`` (those that exist), else the newest labeled cases not yet
        published, up to ``limit``."""
        if ids is not None:
            items = [await self.store.get(i) for i in ids]
            return [i for i in items if i is not None]
        found, _ = await self.page(ReviewQuery(labeled=True, published=False), limit, None)
        return found

    async def publish(
        self, bank: BankService, change: PublishCases, limit: int, via: str
    ) -> tuple[list[ReviewItem], GateOutcome]:
        """Labeled cases (``change.ids``, else the newest unpublished ones up to ``limit``) as
        examples of a new bank version through the bank's gate, then marked with that version.
        With ``change.dry_run``, only the gate's comparison. ``via`` (API, console) goes into
        the version's default note. The one publishing path of the API and the console."""
        items = await self.publishable(change.ids, limit)
        if change.ids is not None:
            found = {i.id for i in items}
            missing = [i for i in change.ids if i not in found]
            if missing:
                raise NotFoundError(f"no review case {missing[0]}; GET /v1/review lists them")
            done = [i.id for i in items if i.published_in is not None or i.labels is None]
            if done:
                raise ConflictError(f"case {done[0]} is unlabeled or already published")
        if not items:
            raise InvalidRequestError("nothing to publish: label cases first")
        try:
            note = change.note or f"review queue: {len(items)} labeled cases ({via})"
            add = AddExamples(
                examples=[as_example(i) for i in items],
                **{**change.model_dump(exclude={"ids", "cases", "attacks"}), "note": note},
                cases=change.cases,
                attacks=change.attacks,
            )
        except ValidationError as exc:
            raise InvalidRequestError(
                f"a case cannot be a bank example: {exc.errors()[0]['msg']}"
            ) from exc
        outcome = await bank.add(add)
        if outcome.write is not None:
            await self.published(items, outcome.write.version)
        return items, outcome

    async def published(self, items: Sequence[ReviewItem], version: int) -> None:
        for item in items:
            await self.store.put(item.model_copy(update={"published_in": version}))


def as_example(item: ReviewItem) -> ExampleIn:
    """A labeled case as a bank example (an online bad case, as the paper adds them)."""
    assert item.labels is not None
    return ExampleIn(
        context=Context.model_validate(item.context),
        suggestion=item.suggestion,
        labels=item.labels,
        rationale=item.rationale,
        source="online_bad_case",
    )
