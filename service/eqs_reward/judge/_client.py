"""Client for an LLM judge behind any OpenAI-compatible chat endpoint (vLLM in practice).

One call grades one suggestion. The answer is constrained to a compact JSON object
(``{"a":1,"f":0,"i":1}``) by vLLM's ``structured_outputs`` regex; in soft mode the probability of
each digit is read from ``top_logprobs`` and renormalised over the two allowed digits.

Public surface: ``JudgeClient`` (one attempt per ``grade``), ``grade_with_retries`` (the retry
policy), ``Verdict`` and the ``JudgeError`` family. ``transport=`` is injectable for tests.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from eqs_reward.judge._prompt import QUALEQS_OUTPUT, OutputSpec
from eqs_reward.types import ScoreMode

OutputConstraint = Literal["regex", "json_schema", "none"]


class JudgeError(Exception):
    """Base of every judge failure. ``reason`` is a low-cardinality label for metrics."""

    reason = "error"
    retryable = True


class JudgeTransportError(JudgeError):
    """The judge could not be reached (connection refused, reset, DNS)."""

    reason = "transport"


class JudgeTimeoutError(JudgeError):
    """The judge did not answer within the call's timeout."""

    reason = "timeout"


class JudgeServerError(JudgeError):
    """The judge answered 5xx."""

    reason = "server_error"


class JudgeRateLimitedError(JudgeError):
    """The judge answered 429 (its queue is full); worth retrying after a pause."""

    reason = "rate_limited"


class JudgeRequestError(JudgeError):
    """The judge refused the request itself (4xx other than 429). Retrying cannot help."""

    reason = "client_error"
    retryable = False


class JudgeOutputError(JudgeError):
    """The judge answered, but not with a verdict we can read."""

    reason = "unparseable"


#: A suggestion's scores in the order of the prompt's output keys (for the QualEQS judge,
#: ``DIMENSIONS``: answerability, factuality, information gain): the one shape they keep from the
#: judge's answer through the cache to the response.
Scores = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's scores for one suggestion, each in [0, 1], and how they were obtained."""

    scores: Scores
    raw: str = ""
    attempts: int = 1

    def as_dict(self, output: OutputSpec = QUALEQS_OUTPUT) -> dict[str, float]:
        return dict(zip(output.names, self.scores, strict=True))


@dataclass(slots=True)
class JudgeClient:
    """A pooled async client for one judge endpoint.

    ``base_url`` is the OpenAI-compatible root (``http://host:port/v1``). The ``httpx`` client is
    created once and reused for every call (connection pooling); close it with ``aclose``.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    max_connections: int = 64
    max_tokens: int = 24
    top_logprobs: int = 10
    output_constraint: OutputConstraint = "regex"
    chat_template_kwargs: dict[str, Any] | None = None
    transport: httpx.AsyncBaseTransport | None = None
    _http: httpx.AsyncClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
            transport=self.transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def request_body(
        self,
        messages: list[dict[str, str]],
        mode: ScoreMode,
        output: OutputSpec = QUALEQS_OUTPUT,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        if self.output_constraint == "regex":
            body["structured_outputs"] = {"regex": output.regex}
        elif self.output_constraint == "json_schema":
            digit = {"type": "integer", "enum": [0, 1]}
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "verdict",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {key: digit for key, _ in output.keys},
                        "required": [key for key, _ in output.keys],
                        "additionalProperties": False,
                    },
                },
            }
        if mode == "soft":
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        if self.chat_template_kwargs:
            body["chat_template_kwargs"] = self.chat_template_kwargs
        return body

    async def grade(
        self,
        messages: list[dict[str, str]],
        mode: ScoreMode,
        output: OutputSpec = QUALEQS_OUTPUT,
    ) -> Verdict:
        """One judge call, no retries. Raises a ``JudgeError`` subclass on any failure."""
        try:
            response = await self._http.post(
                "chat/completions", json=self.request_body(messages, mode, output)
            )
        except httpx.TimeoutException as exc:
            raise JudgeTimeoutError(f"judge timed out: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise JudgeTransportError(f"judge unreachable: {exc!r}") from exc
        if response.status_code == 429:
            raise JudgeRateLimitedError("judge answered 429")
        if response.status_code >= 500:
            raise JudgeServerError(f"judge answered {response.status_code}")
        if response.status_code >= 400:
            raise JudgeRequestError(
                f"judge refused the request ({response.status_code}): {response.text[:300]}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise JudgeOutputError("judge answer is not JSON") from exc
        content, logprobs = read_choice(body)
        hard = parse_verdict(content, output)
        named = (
            soft_scores(content, logprobs, hard, output)
            if mode == "soft"
            else _hard_scores(hard, output)
        )
        return Verdict(tuple(named[name] for name in output.names), raw=content)

    async def ping(self) -> None:
        """Raise ``JudgeError`` unless the judge lists its models (cheap readiness probe)."""
        try:
            response = await self._http.get("models", timeout=3.0)
        except httpx.TimeoutException as exc:
            raise JudgeTimeoutError("judge did not answer /models") from exc
        except httpx.TransportError as exc:
            raise JudgeTransportError(f"judge unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise JudgeServerError(f"judge /models answered {response.status_code}")


def read_choice(body: Any) -> tuple[str, list[dict[str, Any]]]:
    """The first choice's message content and its logprob entries, checked for shape: a judge
    (or a proxy in front of it) can answer valid JSON of any shape, and that must become a
    ``JudgeOutputError`` (retried, then a flagged suggestion), never an exception elsewhere."""
    try:
        choice = body["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise JudgeOutputError("judge answer is not a chat completion") from exc
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise JudgeOutputError(f"judge message content is {type(content).__name__}, not text")
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    if logprobs is None:
        return content, []
    entries = logprobs.get("content") if isinstance(logprobs, dict) else logprobs
    if entries is None:
        return content, []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise JudgeOutputError("judge logprobs are not a list of token entries")
    return content, entries


#: How far above 0 a log-probability may read and still count as 0: servers round, and a
#: logprob of ``1e-7`` is a certain token, not a malformed one.
_LOGPROB_ROUNDING = 1e-6


def _logprob(value: Any, what: str) -> float:
    """A usable log-probability (a finite number, at most 0 up to rounding).

    Anything else is a malformed answer: raising here is what keeps a logprob of ``1e6`` or
    ``"x"`` from turning into a confident 1.0 that is then cached (issue 20).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JudgeOutputError(f"judge logprob for {what} is not a number: {str(value)[:40]!r}")
    number = float(value)
    if not math.isfinite(number) or number > _LOGPROB_ROUNDING:
        raise JudgeOutputError(f"judge logprob for {what} is not a log-probability: {number!r}")
    return min(number, 0.0)


def parse_verdict(content: str, output: OutputSpec = QUALEQS_OUTPUT) -> dict[str, int]:
    """Read the compact answer (``{"a":0|1,"f":0|1,"i":0|1}`` for the QualEQS judge); tolerant of
    whitespace and of full signal names (for judges served without structured outputs)."""
    text = content.strip()
    match = output.pattern.fullmatch(text)
    if match:
        return {key: int(g) for (key, _), g in zip(output.keys, match.groups(), strict=True)}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise JudgeOutputError(f"judge output is not JSON: {text[:80]!r}") from exc
    if not isinstance(value, dict):
        raise JudgeOutputError(f"judge output is not an object: {text[:80]!r}")
    out: dict[str, int] = {}
    for key, name in output.keys:
        raw = value.get(key, value.get(name))
        if isinstance(raw, bool):
            raw = int(raw)
        if raw not in (0, 1):
            raise JudgeOutputError(f"judge output lacks a 0/1 for {name!r}: {text[:80]!r}")
        out[key] = int(raw)
    return out


def _hard_scores(hard: dict[str, int], output: OutputSpec = QUALEQS_OUTPUT) -> dict[str, float]:
    names = dict(output.keys)
    return {names[key]: float(value) for key, value in hard.items()}


def soft_scores(
    content: str,
    logprobs: list[dict[str, Any]],
    hard: dict[str, int],
    output: OutputSpec = QUALEQS_OUTPUT,
) -> dict[str, float]:
    """P(1) / (P(0) + P(1)) at each verdict digit, from the tokens' ``top_logprobs``.

    Each digit is located by character offset in the concatenated tokens; alternatives are the
    same token with that one character swapped (so merged tokens such as ``1,"`` still work).

    Every log-probability that counts is validated: the sampled digit's own and that of each
    alternative for the same position (the other digit, when it is among the top logprobs) must be
    finite and at most 0, else the answer is malformed (``JudgeOutputError``: retried, then a
    ``failed`` suggestion, never cached). Where the other digit is absent from the top logprobs the
    sampled digit stands (a confident hard 0 or 1), as documented. A judge that returns no
    logprobs at all is read as hard.
    """
    scores = _hard_scores(hard, output)
    tokens = [str(entry.get("token", "")) for entry in logprobs]
    joined = "".join(tokens)
    # The tokens may carry more than the content (a trailing end-of-turn token, say).
    match = output.pattern.search(joined)
    if match is None:
        if logprobs:
            raise JudgeOutputError("judge logprob tokens do not spell the verdict")
        return scores
    starts: list[int] = []
    offset = 0
    for token in tokens:
        starts.append(offset)
        offset += len(token)
    for group, (_, name) in enumerate(output.keys, start=1):
        position = match.start(group)
        index = max(i for i, start in enumerate(starts) if start <= position)
        token, j = tokens[index], position - starts[index]
        probability = {"0": 0.0, "1": 0.0}
        sampled = _logprob(logprobs[index].get("logprob"), f"{name}'s sampled digit")
        probability[token[j]] = math.exp(max(sampled, -1e4))
        alternatives = logprobs[index].get("top_logprobs") or []
        if not isinstance(alternatives, list):
            raise JudgeOutputError("judge top_logprobs is not a list")
        seen = {token}
        for candidate in alternatives:
            if not isinstance(candidate, dict):
                continue
            text = str(candidate.get("token", ""))
            if len(text) != len(token) or text[:j] + text[j + 1 :] != token[:j] + token[j + 1 :]:
                continue
            digit = text[j]
            if digit not in probability:
                continue
            logprob = _logprob(candidate.get("logprob"), f"{name}'s alternative {digit!r}")
            if text not in seen:
                seen.add(text)
                probability[digit] += math.exp(max(logprob, -1e4))
        total = probability["0"] + probability["1"]
        value = probability["1"] / total if total > 0 else float(token[j])
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):  # pragma: no cover - defensive
            raise JudgeOutputError(f"judge soft score for {name} is {value!r}")
        scores[name] = value
    return scores


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to ``max_retries`` retries after the first attempt, exponential backoff with jitter."""

    max_retries: int = 3
    initial_s: float = 0.25
    max_s: float = 4.0

    def backoff(self, state: RetryCallState) -> float:
        """``initial * 2**(n-1)`` capped at ``max``, scaled by a random factor in [0.5, 1]
        ("equal jitter"): retries of many suggestions that failed together spread out."""
        attempt: int = state.attempt_number
        base: float = min(self.max_s, self.initial_s * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)


async def grade_with_retries(
    client: JudgeClient,
    messages: list[dict[str, str]],
    mode: ScoreMode,
    policy: RetryPolicy,
    on_retry: Callable[[JudgeError], None] | None = None,
    output: OutputSpec = QUALEQS_OUTPUT,
) -> Verdict:
    """Grade with retries on transport errors, timeouts, 5xx, 429 and unreadable output.

    4xx answers are not retried (``JudgeRequestError.retryable`` is False). The last error is
    raised when every attempt failed; the caller turns it into a ``failed`` suggestion.
    """

    def _before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if isinstance(exc, JudgeError):
                on_retry(exc)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=policy.backoff,
        retry=retry_if_exception(lambda exc: isinstance(exc, JudgeError) and exc.retryable),
        before_sleep=_before_sleep,
        reraise=True,
    )
    attempt_number = 0
    async for attempt in retrying:
        with attempt:
            attempt_number = attempt.retry_state.attempt_number
            verdict = await client.grade(messages, mode, output)
            return Verdict(verdict.scores, raw=verdict.raw, attempts=attempt_number)
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover
