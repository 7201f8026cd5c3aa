"""The judge client against an injected transport: request shape, parsing, soft scores, retries."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from eqs_reward.judge import (
    VERDICT_REGEX,
    JudgeClient,
    JudgeOutputError,
    JudgeRequestError,
    JudgeServerError,
    JudgeTimeoutError,
    JudgeTransportError,
    RetryPolicy,
    grade_with_retries,
    parse_verdict,
    soft_scores,
)
from tests._helpers import scripted

MESSAGES = [{"role": "user", "content": "x"}]
FAST = RetryPolicy(max_retries=3, initial_s=0.0, max_s=0.0)


def completion(content: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"choices": [choice]}


def client(transport: httpx.MockTransport, **kw: Any) -> JudgeClient:
    return JudgeClient("http://judge/v1", "m", transport=transport, **kw)


async def test_request_body_binary_uses_compact_regex_grammar() -> None:
    transport, seen = scripted(completion('{"a":1,"f":0,"i":1}'))
    judge = client(transport, chat_template_kwargs={"enable_thinking": False})
    verdict = await judge.grade(MESSAGES, "binary")
    await judge.aclose()
    assert verdict.as_dict() == {"answerability": 1.0, "factuality": 0.0, "information_gain": 1.0}
    body = seen[0]
    assert body["structured_outputs"] == {"regex": VERDICT_REGEX}
    assert body["temperature"] == 0.0 and body["model"] == "m"
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "logprobs" not in body


async def test_json_schema_constraint_for_other_servers() -> None:
    transport, seen = scripted(completion('{"a": 0, "f": 1, "i": 1}'))
    judge = client(transport, output_constraint="json_schema")
    verdict = await judge.grade(MESSAGES, "binary")
    await judge.aclose()
    schema = seen[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["a"] == {"type": "integer", "enum": [0, 1]}
    assert verdict.scores[0] == 0.0


def test_parse_verdict_variants() -> None:
    assert parse_verdict('{"a":1,"f":1,"i":0}') == {"a": 1, "f": 1, "i": 0}
    assert parse_verdict(' {"answerability": true, "factuality": 0, "information_gain": 1} ') == {
        "a": 1,
        "f": 0,
        "i": 1,
    }
    for bad in ["", "yes", '{"a":2,"f":1,"i":1}', '{"a":1}', "[1,1,1]"]:
        with pytest.raises(JudgeOutputError):
            parse_verdict(bad)


def _lp(token: str, probs: dict[str, float] | None = None) -> dict[str, Any]:
    if probs is None:
        return {"token": token, "logprob": 0.0, "top_logprobs": [{"token": token, "logprob": 0.0}]}
    top = [{"token": t, "logprob": math.log(p)} for t, p in probs.items()]
    return {"token": token, "logprob": math.log(probs[token]), "top_logprobs": top}


def test_soft_scores_renormalise_over_the_two_digits() -> None:
    tokens = [
        _lp('{"'),
        _lp("a"),
        _lp('":'),
        _lp("1", {"1": 0.6, "0": 0.2, "<x>": 0.2}),
        _lp(',"'),
        _lp("f"),
        _lp('":'),
        _lp("0", {"0": 0.9, "1": 0.1}),
        _lp(',"'),
        _lp("i"),
        _lp('":'),
        _lp("1", {"1": 0.5, "0": 0.5}),
        _lp("}"),
        _lp("<|im_end|>"),
    ]
    scores = soft_scores('{"a":1,"f":0,"i":1}', tokens, {"a": 1, "f": 0, "i": 1})
    assert scores["answerability"] == pytest.approx(0.75)
    assert scores["factuality"] == pytest.approx(0.1)
    assert scores["information_gain"] == pytest.approx(0.5)


def test_soft_scores_with_merged_tokens_and_missing_alternatives() -> None:
    tokens = [
        _lp('{"a":'),
        _lp('1,"', {'1,"': 0.8, '0,"': 0.2}),
        _lp('f":'),
        _lp("1", None),
        _lp(',"i":'),
        _lp("0}", {"0}": 0.3, "1}": 0.7}),
    ]
    scores = soft_scores('{"a":1,"f":1,"i":0}', tokens, {"a": 1, "f": 1, "i": 0})
    assert scores["answerability"] == pytest.approx(0.8)
    assert scores["factuality"] == 1.0  # no alternative listed: the sampled digit stands
    assert scores["information_gain"] == pytest.approx(0.7)


async def test_soft_mode_requests_logprobs() -> None:
    transport, seen = scripted(completion('{"a":1,"f":1,"i":1}', []))
    judge = client(transport, top_logprobs=7)
    await judge.grade(MESSAGES, "soft")
    await judge.aclose()
    assert seen[0]["logprobs"] is True and seen[0]["top_logprobs"] == 7


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (500, JudgeServerError),
        (503, JudgeServerError),
        (429, Exception),
        (httpx.ConnectError("refused"), JudgeTransportError),
        (httpx.ReadTimeout("slow"), JudgeTimeoutError),
        (completion("not a verdict"), JudgeOutputError),
    ],
)
async def test_retryable_failures_are_retried_then_succeed(failure: Any, error: type) -> None:
    transport, seen = scripted(failure, failure, completion('{"a":1,"f":1,"i":1}'))
    judge = client(transport)
    retried: list[str] = []
    verdict = await grade_with_retries(
        judge, MESSAGES, "binary", FAST, lambda exc: retried.append(exc.reason)
    )
    await judge.aclose()
    assert verdict.attempts == 3 and len(seen) == 3 and len(retried) == 2
    assert verdict.scores[0] == 1.0


async def test_gives_up_after_three_retries() -> None:
    transport, seen = scripted(500)
    judge = client(transport)
    with pytest.raises(JudgeServerError):
        await grade_with_retries(judge, MESSAGES, "binary", FAST)
    await judge.aclose()
    assert len(seen) == 4  # the first attempt and 3 retries


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    transport, seen = scripted(status)
    judge = client(transport)
    with pytest.raises(JudgeRequestError):
        await grade_with_retries(judge, MESSAGES, "binary", FAST)
    await judge.aclose()
    assert len(seen) == 1


async def test_ping() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"data": []}))
    judge = client(transport)
    await judge.ping()
    await judge.aclose()
    down = client(httpx.MockTransport(lambda r: (_ for _ in ()).throw(httpx.ConnectError("no"))))
    with pytest.raises(JudgeTransportError):
        await down.ping()
    await down.aclose()
