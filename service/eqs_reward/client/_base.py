"""What both clients share: request descriptions (``_Call``), configuration and the retry
policy (``_BaseClient``); the clients themselves are in ``_client``."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from tenacity import RetryCallState

from eqs_reward.client._exceptions import (
    RewardDeadlineExceeded,
    RewardServiceError,
    RewardServiceUnavailable,
    rejected,
)
from eqs_reward.rewards import apply_policy, consecutive_groups
from eqs_reward.types import FailurePolicy, ScoreMode, ScoreResponse

__all__ = ["Context", "as_context", "completion_items"]

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
    """What both clients share: configuration, request descriptions, the retry policy.

    Every option is a keyword argument of both clients, with its default written here once.
    ``transport`` is an ``httpx.BaseTransport`` for ``RewardClient`` and an
    ``httpx.AsyncBaseTransport`` for ``AsyncRewardClient`` (tests inject mock or ASGI ones);
    ``max_connections`` defaults to the client's ``MAX_CONNECTIONS``."""

    MAX_CONNECTIONS = 8

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
        max_connections: int | None = None,
        transport: Any = None,
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
        limits = httpx.Limits(max_connections=max_connections or self.MAX_CONNECTIONS)
        self._http = self._open(transport, limits)

    def _open(self, transport: Any, limits: httpx.Limits) -> Any:
        """The pooled httpx client (sync or async) every call goes through."""
        raise NotImplementedError

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
    def _request(self, call: _Call[Any], started: float) -> dict[str, Any]:
        """One attempt's arguments to httpx's ``request`` (the timeout is what the call's
        deadline leaves)."""
        return {
            "method": call.method,
            "url": call.path,
            "json": call.json,
            "params": dict(call.params),
            "headers": self._headers(call),
            "timeout": self._attempt_timeout(started),
        }

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
    @contextlib.contextmanager
    def _transport_errors() -> Iterator[None]:
        """A transport failure becomes an attempt worth repeating (``sent`` False when the
        connection never opened, so the service cannot have acted)."""
        try:
            yield
        except httpx.TransportError as exc:
            sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise _Retry(f"{type(exc).__name__}: {exc}", sent=sent) from exc

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

    @contextlib.contextmanager
    def _giving_up(self, started: float) -> Iterator[None]:
        """The last attempt's failure, once the retries are over, as the error callers see."""
        try:
            yield
        except _Retry as exc:
            raise self._gave_up(exc, started) from exc

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
