"""``RewardClient`` and ``AsyncRewardClient``: every caller's way to the service.

Scoring for trainers, and the bank, calibration and admin calls for operators and the CLI, over
one pooled httpx client with one retry policy:

- the service unreachable, or answering 429, 502, 503 or 504: wait with exponential backoff and
  jitter (or the service's ``Retry-After``), logging each wait, for up to ``wait_for_service_s``
  (10 minutes by default: a training run outlives a service restart), then raise
  ``RewardServiceUnavailable``;
- any other 5xx: retried ``max_retries`` times (a bug rarely fixes itself);
- 4xx: raised at once as ``RewardRequestRejected`` (or a subclass) with the service's message;
- ``deadline_s`` (optional) bounds a whole call, retries included.

Writes that are not idempotent (retiring an example) are repeated only when the service cannot
have acted on them (the connection was refused, or it answered 429/503).

``transport=`` takes an ``httpx.MockTransport`` or ``httpx.ASGITransport`` for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from tenacity import AsyncRetrying, Retrying

from eqs_reward.client._base import (
    Context,
    T,
    _BaseClient,
    _Call,
    as_context,
    completion_items,
)
from eqs_reward.types import FailurePolicy, ScoreMode, ScoreResponse

__all__ = ["AsyncRewardClient", "RewardClient", "as_context", "completion_items"]


class RewardClient(_BaseClient):
    """The blocking client (scripts, the CLI, OpenRLHF's reward_func, veRL's sync functions).

    Use it as a context manager, or call ``close()``.
    """

    MAX_CONNECTIONS = 8
    _http: httpx.Client

    def _open(self, transport: httpx.BaseTransport | None, limits: httpx.Limits) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, timeout=self.timeout_s, transport=transport, limits=limits
        )

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        started = time.monotonic()
        with self._giving_up(started):
            for attempt in Retrying(**self._retrying_kwargs(call, started)):
                with attempt, self._transport_errors():
                    return self._handle(call, self._http.request(**self._request(call, started)))
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    # -- scoring -------------------------------------------------------------------------------
    def score(self, items: list[dict[str, Any]], **options: Any) -> ScoreResponse:
        """POST contract-shaped items to ``/v1/score``; ``options`` override the client's."""
        return self._run(self._score_call(items, options))

    def score_completions(
        self, contexts: Sequence[Context], completions: Sequence[str], **options: Any
    ) -> ScoreResponse:
        """Score raw policy completions, one context each (a query string or a context)."""
        return self.score(completion_items(contexts, completions), **options)

    def rewards(
        self,
        contexts: Sequence[Context],
        completions: Sequence[str],
        *,
        group_size: int | None = None,
        group_ids: Sequence[Any] | None = None,
        policy: FailurePolicy = "group_mean",
    ) -> list[float | None]:
        """One set reward per completion, failed ones per ``policy`` within their group
        (``group_ids``, or consecutive blocks of ``group_size``)."""
        response = self.score_completions(contexts, completions)
        return self._rewards_from(response, group_size, group_ids, policy)

    def get_reward(
        self,
        queries: Sequence[str],
        prompts: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """OpenRLHF's protocol (``POST /get_reward``); ``params`` are its query parameters."""
        return self._run(self._get_reward_call(queries, prompts, labels, params))

    # -- the few-shot bank ---------------------------------------------------------------------
    def fewshot(self, version: int | None = None) -> dict[str, Any]:
        """A bank version and its examples (the active one by default)."""
        return self._run(self._fewshot_call(version))

    def fewshot_versions(
        self, *, limit: int | None = None, after: int | None = None
    ) -> dict[str, Any]:
        """One page of the bank's versions (oldest first) and the active version."""
        return self._run(self._versions_call(limit, after))

    def recipes(self) -> dict[str, Any]:
        """``GET /v1/recipes``: the server's recipes, their heads and how they combine."""
        return self._run(self._recipes_call())

    def add_examples(
        self,
        examples: Sequence[Mapping[str, Any]],
        *,
        note: str = "",
        expected_version: int | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Add examples as a new version (admin). ``RewardConflict`` when ``expected_version`` is
        stale or the agreement gate refuses (its comparison is in ``.body``)."""
        return self._run(self._add_call(examples, note, expected_version, force))

    def check_examples(
        self,
        examples: Sequence[Mapping[str, Any]],
        *,
        cases: Sequence[Mapping[str, Any]] | None = None,
        score_mode: ScoreMode = "soft",
    ) -> dict[str, Any]:
        """Dry run (admin): the active version against active + ``examples`` on labeled cases."""
        return self._run(self._check_call(examples, cases, score_mode))

    def retire_example(
        self, example_id: str, *, note: str = "", expected_version: int | None = None
    ) -> dict[str, Any]:
        """Retire an example in a new version (admin)."""
        return self._run(self._retire_call(example_id, note, expected_version))

    def calibration(self, version: int | None = None) -> dict[str, Any]:
        """The pass thresholds stored with a version (0.5 each when none were fitted)."""
        return self._run(self._calibration_call(version))

    def calibrate(
        self, cases: Sequence[Mapping[str, Any]], *, version: int | None = None
    ) -> dict[str, Any]:
        """Fit and store a version's pass thresholds on labeled cases (admin)."""
        return self._run(self._calibrate_call(cases, version))


class AsyncRewardClient(_BaseClient):
    """The async client (TRL's async reward functions, veRL's reward loop). Same methods as
    ``RewardClient``, awaited; use ``async with`` or ``await aclose()``."""

    MAX_CONNECTIONS = 32
    _http: httpx.AsyncClient

    def _open(
        self, transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, transport=transport, limits=limits
        )

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        # asyncio closes a transport's socket on the next loop iteration: let it run, so a
        # loop that ends right after (asyncio.run) does not leak the socket.
        await asyncio.sleep(0)

    async def _run(self, call: _Call[T]) -> T:
        started = time.monotonic()
        with self._giving_up(started):
            async for attempt in AsyncRetrying(**self._retrying_kwargs(call, started)):
                with attempt, self._transport_errors():
                    return self._handle(
                        call, await self._http.request(**self._request(call, started))
                    )
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def score(self, items: list[dict[str, Any]], **options: Any) -> ScoreResponse:
        return await self._run(self._score_call(items, options))

    async def score_completions(
        self, contexts: Sequence[Context], completions: Sequence[str], **options: Any
    ) -> ScoreResponse:
        return await self.score(completion_items(contexts, completions), **options)

    async def rewards(
        self,
        contexts: Sequence[Context],
        completions: Sequence[str],
        *,
        group_size: int | None = None,
        group_ids: Sequence[Any] | None = None,
        policy: FailurePolicy = "group_mean",
    ) -> list[float | None]:
        response = await self.score_completions(contexts, completions)
        return self._rewards_from(response, group_size, group_ids, policy)

    async def get_reward(
        self,
        queries: Sequence[str],
        prompts: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        return await self._run(self._get_reward_call(queries, prompts, labels, params))

    async def fewshot(self, version: int | None = None) -> dict[str, Any]:
        return await self._run(self._fewshot_call(version))

    async def fewshot_versions(
        self, *, limit: int | None = None, after: int | None = None
    ) -> dict[str, Any]:
        return await self._run(self._versions_call(limit, after))

    async def recipes(self) -> dict[str, Any]:
        return await self._run(self._recipes_call())

    async def add_examples(
        self,
        examples: Sequence[Mapping[str, Any]],
        *,
        note: str = "",
        expected_version: int | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        return await self._run(self._add_call(examples, note, expected_version, force))

    async def check_examples(
        self,
        examples: Sequence[Mapping[str, Any]],
        *,
        cases: Sequence[Mapping[str, Any]] | None = None,
        score_mode: ScoreMode = "soft",
    ) -> dict[str, Any]:
        return await self._run(self._check_call(examples, cases, score_mode))

    async def retire_example(
        self, example_id: str, *, note: str = "", expected_version: int | None = None
    ) -> dict[str, Any]:
        return await self._run(self._retire_call(example_id, note, expected_version))

    async def calibration(self, version: int | None = None) -> dict[str, Any]:
        return await self._run(self._calibration_call(version))

    async def calibrate(
        self, cases: Sequence[Mapping[str, Any]], *, version: int | None = None
    ) -> dict[str, Any]:
        return await self._run(self._calibrate_call(cases, version))
