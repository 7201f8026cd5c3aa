"""``RewardClient``: the trainer's side of eqs-reward, one import away.

    from service.client import RewardClient

    with RewardClient("http://127.0.0.1:8000", fewshot_version=3) as client:
        rewards = client.rewards(contexts=["I want a router"] * 4, completions=texts, group_size=4)

One ``/v1/score`` request per GRPO group or batch; pooled httpx; retries (up to 3, exponential
backoff with jitter) on transport errors, 5xx and 429; a whole-call deadline; typed results.
Suggestions the service could not judge come back ``failed``; a *failure policy* turns them into
numbers a trainer can use:

- ``"group_mean"`` (default): a failed sample gets the mean reward of the rest of its group, so
  its group-normalised advantage is zero: it neither helps nor hurts the update.
- ``"zero"``: the paper's neutral 0. Under group normalisation 0 is *not* neutral: it is below the
  group mean whenever the others scored, so the failed sample is pushed down. Use it only when
  rewards are not normalised per group.
- ``"skip"``: ``None``; TRL's GRPOTrainer treats ``None`` as "no reward from this function".

``transport=`` is injectable (``httpx.MockTransport``, ``httpx.ASGITransport``) for tests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

FailurePolicy = Literal["group_mean", "zero", "skip"]
ScoreMode = Literal["binary", "soft"]
DIMENSIONS = ("answerability", "factuality", "information_gain")


class RewardServiceError(Exception):
    """Base of the client's errors."""


class RewardServiceUnavailable(RewardServiceError):
    """The service could not be reached, or answered 5xx/429, through every retry."""


class RewardRequestRejected(RewardServiceError):
    """The service refused the request (4xx other than 429): retrying cannot help.

    ``status``, ``type`` and ``message`` come from the service's error envelope.
    """

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message


class RewardDeadlineExceeded(RewardServiceError):
    """The call's deadline passed before the service answered."""


class _ServiceBusy(Exception):
    """A 5xx or 429 answer: worth retrying (after Retry-After when the service gave one)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"service answered {status}")
        self.retry_after = retry_after


_RETRYABLE = (httpx.TransportError, httpx.TimeoutException, _ServiceBusy)


@dataclass(frozen=True, slots=True)
class SuggestionResult:
    text: str
    status: str
    reward: float | None
    answerability: float | None
    factuality: float | None
    information_gain: float | None
    cached: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One scored item (one completion's suggestion set)."""

    id: str | None
    status: str
    reward: float | None
    format_reward: float
    disagreement: float | None
    suggestions: list[SuggestionResult]
    format_problem: str | None = None

    def dimension_mean(self, dimension: str) -> float | None:
        values = [getattr(s, dimension) for s in self.suggestions]
        judged = [v for v in values if v is not None]
        return sum(judged) / len(judged) if judged else None


@dataclass(frozen=True, slots=True)
class ScoreResult:
    items: list[ItemResult]
    meta: dict[str, Any] = field(default_factory=dict)


def parse_response(body: dict[str, Any]) -> ScoreResult:
    items = []
    for raw in body["results"]:
        suggestions = [
            SuggestionResult(
                text=s["text"],
                status=s["status"],
                reward=s.get("reward"),
                answerability=s.get("answerability"),
                factuality=s.get("factuality"),
                information_gain=s.get("information_gain"),
                cached=bool(s.get("cached")),
                reason=s.get("reason"),
            )
            for s in raw["suggestions"]
        ]
        items.append(
            ItemResult(
                id=raw.get("id"),
                status=raw["status"],
                reward=raw.get("reward"),
                format_reward=raw["format_reward"],
                disagreement=raw.get("disagreement"),
                suggestions=suggestions,
                format_problem=raw.get("format_problem"),
            )
        )
    return ScoreResult(items, body.get("meta", {}))


def as_context(context: str | dict[str, Any]) -> dict[str, Any]:
    """A context from a bare query string or a contract-shaped dict."""
    return {"query": context} if isinstance(context, str) else dict(context)


def completion_items(
    contexts: Sequence[str | dict[str, Any]], completions: Sequence[str]
) -> list[dict[str, Any]]:
    if len(contexts) != len(completions):
        raise ValueError(f"{len(contexts)} contexts for {len(completions)} completions")
    return [
        {"id": str(i), "context": as_context(c), "completion": text}
        for i, (c, text) in enumerate(zip(contexts, completions, strict=True))
    ]


def groups_from(n: int, group_size: int | None, group_ids: Sequence[Any] | None) -> list[Any]:
    """Group labels for n samples: explicit ids, consecutive blocks of ``group_size``, or one
    group for everything."""
    if group_ids is not None:
        if len(group_ids) != n:
            raise ValueError(f"{len(group_ids)} group ids for {n} samples")
        return list(group_ids)
    if group_size:
        return [i // group_size for i in range(n)]
    return [0] * n


def apply_policy(
    rewards: Sequence[float | None], groups: Sequence[Any], policy: FailurePolicy
) -> list[float | None]:
    """Turn failed (None) rewards into numbers per the failure policy (see module docstring)."""
    if policy == "skip":
        return list(rewards)
    if policy == "zero":
        return [0.0 if r is None else r for r in rewards]
    out: list[float | None] = []
    for index, reward in enumerate(rewards):
        if reward is not None:
            out.append(reward)
            continue
        peers = [r for j, r in enumerate(rewards) if groups[j] == groups[index] and r is not None]
        out.append(sum(peers) / len(peers) if peers else 0.0)
    return out


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        k: int | None,
        score_mode: ScoreMode,
        fewshot_version: int | None,
        max_retries: int,
        timeout_s: float,
        deadline_s: float,
        backoff_s: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.k = k
        self.score_mode = score_mode
        self.fewshot_version = fewshot_version
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.backoff_s = backoff_s

    def _body(self, items: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
        merged = {
            "k": self.k,
            "score_mode": self.score_mode,
            "fewshot_version": self.fewshot_version,
            "on_failure": "null",
        }
        merged.update({key: value for key, value in options.items() if value is not None})
        return {"items": items, "options": merged}

    def _retry_policy(self) -> dict[str, Any]:
        """tenacity: up to ``max_retries`` retries on transport errors, timeouts, 5xx and 429,
        exponential backoff with jitter (or the service's Retry-After), within the deadline."""
        return {
            "stop": stop_after_attempt(self.max_retries + 1) | stop_after_delay(self.deadline_s),
            "wait": self._wait,
            "retry": retry_if_exception_type(_RETRYABLE),
            "reraise": True,
        }

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _ServiceBusy) and error.retry_after is not None:
            pause = error.retry_after
        else:
            pause = self.backoff_s * 2.0 ** (state.attempt_number - 1) * random.uniform(0.5, 1)
        left = self.deadline_s - (state.seconds_since_start or 0.0)
        return float(max(0.0, min(pause, left)))  # never sleep past the deadline

    def _gave_up(self, error: BaseException, deadline: float) -> RewardServiceError:
        if time.monotonic() >= deadline:
            return RewardDeadlineExceeded(f"no answer within {self.deadline_s} s")
        return RewardServiceUnavailable(f"reward service unavailable: {error!r}")

    @staticmethod
    def _result(response: httpx.Response) -> ScoreResult:
        """The parsed result; raise ``_ServiceBusy`` (retried) for 5xx/429, or
        ``RewardRequestRejected`` (not retried) for other 4xx."""
        if response.status_code == 200:
            return parse_response(response.json())
        if response.status_code == 429 or response.status_code >= 500:
            header = response.headers.get("retry-after", "")
            raise _ServiceBusy(response.status_code, float(header) if header.isdigit() else None)
        try:
            error = response.json()["error"]
            type_, message = error["type"], error["message"]
        except (ValueError, KeyError, TypeError):
            type_, message = "http_error", response.text[:300]
        raise RewardRequestRejected(response.status_code, type_, message)

    @staticmethod
    def _rewards(
        result: ScoreResult,
        group_size: int | None,
        group_ids: Sequence[Any] | None,
        policy: FailurePolicy,
    ) -> list[float | None]:
        groups = groups_from(len(result.items), group_size, group_ids)
        return apply_policy([i.reward for i in result.items], groups, policy)


class AsyncRewardClient(_Base):
    """The async client (TRL's async reward functions, veRL's reward loop)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        k: int | None = 3,
        score_mode: ScoreMode = "binary",
        fewshot_version: int | None = None,
        max_retries: int = 3,
        timeout_s: float = 120.0,
        deadline_s: float = 300.0,
        backoff_s: float = 0.5,
        max_connections: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            k=k,
            score_mode=score_mode,
            fewshot_version=fewshot_version,
            max_retries=max_retries,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
            backoff_s=backoff_s,
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

    async def score(self, items: list[dict[str, Any]], **options: Any) -> ScoreResult:
        """POST contract-shaped items to /v1/score, with retries, under the deadline."""
        body = self._body(items, **options)
        deadline = time.monotonic() + self.deadline_s
        try:
            async for attempt in AsyncRetrying(**self._retry_policy()):
                with attempt:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RewardDeadlineExceeded(f"no answer within {self.deadline_s} s")
                    try:
                        response = await asyncio.wait_for(
                            self._http.post("/v1/score", json=body), timeout=remaining
                        )
                    except TimeoutError:
                        raise RewardDeadlineExceeded(
                            f"no answer within {self.deadline_s} s"
                        ) from None
                    return self._result(response)
        except _RETRYABLE as exc:
            raise self._gave_up(exc, deadline) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def score_completions(
        self, contexts: Sequence[str | dict[str, Any]], completions: Sequence[str], **options: Any
    ) -> ScoreResult:
        return await self.score(completion_items(contexts, completions), **options)

    async def rewards(
        self,
        contexts: Sequence[str | dict[str, Any]],
        completions: Sequence[str],
        *,
        group_size: int | None = None,
        group_ids: Sequence[Any] | None = None,
        policy: FailurePolicy = "group_mean",
    ) -> list[float | None]:
        """One set reward per completion, with the failure policy applied per group."""
        result = await self.score_completions(contexts, completions)
        return self._rewards(result, group_size, group_ids, policy)


class RewardClient(_Base):
    """The blocking client (scripts, OpenRLHF's reward_func, veRL's batch manager)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        k: int | None = 3,
        score_mode: ScoreMode = "binary",
        fewshot_version: int | None = None,
        max_retries: int = 3,
        timeout_s: float = 120.0,
        deadline_s: float = 300.0,
        backoff_s: float = 0.5,
        max_connections: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            k=k,
            score_mode=score_mode,
            fewshot_version=fewshot_version,
            max_retries=max_retries,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
            backoff_s=backoff_s,
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

    def score(self, items: list[dict[str, Any]], **options: Any) -> ScoreResult:
        """POST contract-shaped items to /v1/score, with retries, under the deadline."""
        body = self._body(items, **options)
        deadline = time.monotonic() + self.deadline_s
        try:
            for attempt in Retrying(**self._retry_policy()):
                with attempt:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RewardDeadlineExceeded(f"no answer within {self.deadline_s} s")
                    response = self._http.post(
                        "/v1/score", json=body, timeout=min(self.timeout_s, remaining)
                    )
                    return self._result(response)
        except _RETRYABLE as exc:
            raise self._gave_up(exc, deadline) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def score_completions(
        self, contexts: Sequence[str | dict[str, Any]], completions: Sequence[str], **options: Any
    ) -> ScoreResult:
        return self.score(completion_items(contexts, completions), **options)

    def rewards(
        self,
        contexts: Sequence[str | dict[str, Any]],
        completions: Sequence[str],
        *,
        group_size: int | None = None,
        group_ids: Sequence[Any] | None = None,
        policy: FailurePolicy = "group_mean",
    ) -> list[float | None]:
        result = self.score_completions(contexts, completions)
        return self._rewards(result, group_size, group_ids, policy)
