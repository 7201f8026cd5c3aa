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
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, Retrying

from eqs_reward.client._exceptions import (
    RewardDeadlineExceeded,
    RewardServiceError,
    RewardServiceUnavailable,
    rejected,
)
from eqs_reward.rewards import apply_policy, consecutive_groups
from eqs_reward.types import FailurePolicy, ScoreMode, ScoreResponse

__all__ = ["AsyncRewardClient", "RewardClient"]

log = logging.getLogger("eqs_reward.client")

T = TypeVar("T")
Context = str | Mapping[str, Any]

_UNAVAILABLE = frozenset({429, 502, 503, 504})
_NOT_PROCESSED = frozenset({429, 503})


class _Retry(Exception):
    """One attempt that is worth repeating. ``sent`` is False when the service cannot have acted
    on the request; ``bug`` marks a plain 5xx (retried a bounded number of times)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        sent: bool = True,
        bug: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.sent = sent
        self.bug = bug


def _retry_after(response: httpx.Response) -> float | None:
    header = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


def _error_envelope(response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
    try:
        body = response.json()
        error = body["error"]
        return str(error["type"]), str(error["message"]), dict(body)
    except (ValueError, KeyError, TypeError):
        return "http_error", response.text[:300], {}


def as_context(context: Context) -> dict[str, Any]:
    """A contract context from a bare query string or a contract-shaped mapping."""
    return {"query": context} if isinstance(context, str) else dict(context)


def completion_items(
    contexts: Sequence[Context], completions: Sequence[str]
) -> list[dict[str, Any]]:
    """``/v1/score`` items for raw policy completions, ids ``"0"``, ``"1"``, ..."""
    if len(contexts) != len(completions):
        raise ValueError(f"{len(contexts)} contexts for {len(completions)} completions")
    return [
        {"id": str(i), "context": as_context(c), "completion": text}
        for i, (c, text) in enumerate(zip(contexts, completions, strict=True))
    ]


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One API call, described once and run by either client."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)
    admin: bool = False
    idempotent: bool = True


def _identity(value: Any) -> Any:
    return value


class _BaseClient:
    """What both clients share: configuration, request descriptions, the retry policy."""

    def __init__(
        self,
        base_url: str,
        *,
        k: int | None,
        score_mode: ScoreMode,
        fewshot_version: int | None,
        recipe: str | None,
        admin_token: str | None,
        timeout_s: float,
        wait_for_service_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        deadline_s: float | None,
    ) -> None:
        if not base_url or not base_url.strip():
            raise ValueError("base_url is required, e.g. http://127.0.0.1:8000")
        self.base_url = base_url.strip().rstrip("/")
        self.k = k
        self.score_mode = score_mode
        self.fewshot_version = fewshot_version
        self.recipe = recipe
        self.admin_token = admin_token or os.environ.get("EQS_REWARD_ADMIN_TOKEN") or None
        self.timeout_s = timeout_s
        self.wait_for_service_s = wait_for_service_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.deadline_s = deadline_s

    # -- request descriptions ------------------------------------------------------------------
    def _score_call(
        self, items: list[dict[str, Any]], options: dict[str, Any]
    ) -> _Call[ScoreResponse]:
        merged: dict[str, Any] = {
            "k": self.k,
            "score_mode": self.score_mode,
            "fewshot_version": self.fewshot_version,
            "on_failure": "null",
            "recipe": self.recipe,
        }
        merged.update({key: value for key, value in options.items() if value is not None})
        if self.deadline_s is not None:  # the service answers within it, with time to spare
            merged.setdefault("deadline_s", self._service_deadline(self.deadline_s))
        if merged.get("recipe") is None:
            merged.pop("recipe", None)  # the server's default (and servers older than recipes)
        return _Call(
            "POST", "/v1/score", ScoreResponse.from_dict, {"items": items, "options": merged}
        )

    @staticmethod
    def _rewards_from(
        response: ScoreResponse,
        group_size: int | None,
        group_ids: Sequence[Any] | None,
        policy: FailurePolicy,
    ) -> list[float | None]:
        n = len(response.results)
        if group_ids is not None and len(group_ids) != n:
            raise ValueError(f"{len(group_ids)} group ids for {n} samples")
        groups = list(group_ids) if group_ids is not None else consecutive_groups(n, group_size)
        return apply_policy([r.reward for r in response.results], groups, policy)

    def _get_reward_call(
        self,
        queries: Sequence[str],
        prompts: Sequence[str] | None,
        labels: Sequence[Any] | None,
        params: Mapping[str, Any],
    ) -> _Call[dict[str, Any]]:
        body: dict[str, Any] = {"query": list(queries)}
        if prompts is not None:
            body["prompts"] = list(prompts)
        if labels is not None:
            body["labels"] = list(labels)
        clean = {key: value for key, value in params.items() if value is not None}
        if self.deadline_s is not None:
            clean.setdefault("deadline_s", self._service_deadline(self.deadline_s))
        return _Call("POST", "/get_reward", _identity, body, params=clean)

    @staticmethod
    def _service_deadline(deadline_s: float) -> float:
        """The deadline the service is given: the caller's, less what the answer needs to
        travel back (a tenth, at most 2 s), so it arrives before the caller gives up."""
        return round(max(0.1, deadline_s - min(2.0, deadline_s / 10)), 3)

    @staticmethod
    def _fewshot_call(version: int | None) -> _Call[dict[str, Any]]:
        params = {} if version is None else {"version": version}
        return _Call("GET", "/v1/fewshot", _identity, params=params)

    @staticmethod
    def _recipes_call() -> _Call[dict[str, Any]]:
        return _Call("GET", "/v1/recipes", _identity)

    @staticmethod
    def _versions_call(limit: int | None, after: int | None) -> _Call[dict[str, Any]]:
        params = {key: value for key, value in (("limit", limit), ("after", after)) if value}
        return _Call("GET", "/v1/fewshot/versions", _identity, params=params)

    @staticmethod
    def _add_call(
        examples: Sequence[Mapping[str, Any]],
        note: str,
        expected_version: int | None,
        force: bool,
    ) -> _Call[dict[str, Any]]:
        body: dict[str, Any] = {"examples": list(examples), "note": note, "force": force}
        if expected_version is not None:
            body["expected_version"] = expected_version
        # Adding is idempotent: an example's id derives from its content.
        return _Call("POST", "/v1/fewshot", _identity, body, admin=True)

    @staticmethod
    def _check_call(
        examples: Sequence[Mapping[str, Any]],
        cases: Sequence[Mapping[str, Any]] | None,
        score_mode: ScoreMode,
    ) -> _Call[dict[str, Any]]:
        body: dict[str, Any] = {
            "examples": list(examples),
            "dry_run": True,
            "score_mode": score_mode,
        }
        if cases is not None:
            body["cases"] = list(cases)
        return _Call("POST", "/v1/fewshot", _identity, body, admin=True)

    @staticmethod
    def _retire_call(
        example_id: str, note: str, expected_version: int | None
    ) -> _Call[dict[str, Any]]:
        body: dict[str, Any] = {"note": note}
        if expected_version is not None:
            body["expected_version"] = expected_version
        return _Call(
            "DELETE", f"/v1/fewshot/{example_id}", _identity, body, admin=True, idempotent=False
        )

    @staticmethod
    def _calibration_call(version: int | None) -> _Call[dict[str, Any]]:
        params = {} if version is None else {"version": version}
        return _Call("GET", "/v1/fewshot/calibration", _identity, params=params)

    @staticmethod
    def _calibrate_call(
        cases: Sequence[Mapping[str, Any]], version: int | None
    ) -> _Call[dict[str, Any]]:
        body: dict[str, Any] = {"cases": list(cases)}
        if version is not None:
            body["version"] = version
        return _Call("PUT", "/v1/fewshot/calibration", _identity, body, admin=True)

    # -- HTTP ----------------------------------------------------------------------------------
    def _headers(self, call: _Call[Any]) -> dict[str, str]:
        if not call.admin:
            return {}
        if not self.admin_token:
            raise ValueError(
                f"{call.method} {call.path} needs the admin token: pass admin_token= or set "
                "EQS_REWARD_ADMIN_TOKEN"
            )
        return {"Authorization": f"Bearer {self.admin_token}"}

    @staticmethod
    def _handle(call: _Call[T], response: httpx.Response) -> T:
        status = response.status_code
        if status < 300:
            return call.parse(response.json() if response.content else None)
        if status in _UNAVAILABLE:
            raise _Retry(
                f"service answered {status}",
                status=status,
                retry_after=_retry_after(response),
                sent=status not in _NOT_PROCESSED,
            )
        type_, message, body = _error_envelope(response)
        if status >= 500:
            raise _Retry(f"service answered {status}: {message}", status=status, bug=True)
        raise rejected(status, type_, message, body)

    @staticmethod
    def _transport_error(exc: httpx.TransportError) -> _Retry:
        sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        return _Retry(f"{type(exc).__name__}: {exc}", sent=sent)

    def _attempt_timeout(self, started: float) -> float:
        if self.deadline_s is None:
            return self.timeout_s
        remaining = self.deadline_s - (time.monotonic() - started)
        if remaining <= 0:
            raise RewardDeadlineExceeded(f"no answer within the deadline of {self.deadline_s} s")
        return min(self.timeout_s, remaining)

    def _retrying_kwargs(self, call: _Call[Any], started: float) -> dict[str, Any]:
        """tenacity's arguments for one call (see the module docstring for the policy)."""

        def retry(state: RetryCallState) -> bool:
            error = state.outcome.exception() if state.outcome else None
            return isinstance(error, _Retry) and (call.idempotent or not error.sent)

        def stop(state: RetryCallState) -> bool:
            error = state.outcome.exception() if state.outcome else None
            elapsed = time.monotonic() - started
            if self.deadline_s is not None and elapsed >= self.deadline_s:
                return True
            if isinstance(error, _Retry) and error.bug:
                return state.attempt_number > self.max_retries
            return elapsed >= self.wait_for_service_s

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, _Retry) and error.retry_after is not None:
                pause = error.retry_after
            else:
                exponent = min(state.attempt_number - 1, 16)
                pause = min(self.max_backoff_s, self.backoff_s * 2.0**exponent)
                pause *= random.uniform(0.5, 1.0)
            elapsed = time.monotonic() - started
            limit = self.wait_for_service_s
            if self.deadline_s is not None:
                limit = min(limit, self.deadline_s)
            return max(0.0, min(pause, limit - elapsed))

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            pause = state.upcoming_sleep
            log.warning(
                "eqs-reward service at %s unavailable for %s %s (%s); waiting %.1f s "
                "(%.0f s of at most %.0f s so far)",
                self.base_url,
                call.method,
                call.path,
                error,
                pause,
                time.monotonic() - started,
                self.wait_for_service_s,
            )

        return {
            "retry": retry,
            "stop": stop,
            "wait": wait,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def _gave_up(self, error: _Retry, started: float) -> RewardServiceError:
        elapsed = time.monotonic() - started
        if self.deadline_s is not None and elapsed >= self.deadline_s:
            return RewardDeadlineExceeded(
                f"no answer within the deadline of {self.deadline_s} s (last: {error})",
                status=error.status,
            )
        return RewardServiceUnavailable(
            f"eqs-reward service at {self.base_url} unavailable after {elapsed:.0f} s: {error}",
            status=error.status,
        )


class RewardClient(_BaseClient):
    """The blocking client (scripts, the CLI, OpenRLHF's reward_func, veRL's sync functions).

    Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        k: int | None = 3,
        score_mode: ScoreMode = "binary",
        fewshot_version: int | None = None,
        recipe: str | None = None,
        admin_token: str | None = None,
        timeout_s: float = 120.0,
        wait_for_service_s: float = 600.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
        deadline_s: float | None = None,
        max_connections: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            k=k,
            score_mode=score_mode,
            fewshot_version=fewshot_version,
            recipe=recipe,
            admin_token=admin_token,
            timeout_s=timeout_s,
            wait_for_service_s=wait_for_service_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            deadline_s=deadline_s,
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections),
        )

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        started = time.monotonic()
        headers = self._headers(call)
        try:
            for attempt in Retrying(**self._retrying_kwargs(call, started)):
                with attempt:
                    try:
                        response = self._http.request(
                            call.method,
                            call.path,
                            json=call.json,
                            params=dict(call.params),
                            headers=headers,
                            timeout=self._attempt_timeout(started),
                        )
                    except httpx.TransportError as exc:
                        raise self._transport_error(exc) from exc
                    return self._handle(call, response)
        except _Retry as exc:
            raise self._gave_up(exc, started) from exc
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

    def __init__(
        self,
        base_url: str,
        *,
        k: int | None = 3,
        score_mode: ScoreMode = "binary",
        fewshot_version: int | None = None,
        recipe: str | None = None,
        admin_token: str | None = None,
        timeout_s: float = 120.0,
        wait_for_service_s: float = 600.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
        deadline_s: float | None = None,
        max_connections: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            k=k,
            score_mode=score_mode,
            fewshot_version=fewshot_version,
            recipe=recipe,
            admin_token=admin_token,
            timeout_s=timeout_s,
            wait_for_service_s=wait_for_service_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            deadline_s=deadline_s,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections),
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
        headers = self._headers(call)
        try:
            async for attempt in AsyncRetrying(**self._retrying_kwargs(call, started)):
                with attempt:
                    try:
                        response = await self._http.request(
                            call.method,
                            call.path,
                            json=call.json,
                            params=dict(call.params),
                            headers=headers,
                            timeout=self._attempt_timeout(started),
                        )
                    except httpx.TransportError as exc:
                        raise self._transport_error(exc) from exc
                    return self._handle(call, response)
        except _Retry as exc:
            raise self._gave_up(exc, started) from exc
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
