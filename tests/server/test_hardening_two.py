"""One regression test per finding of 'Hard to break, round two' (issue 20): a malformed soft
verdict is a flagged failure that is never cached, bank-version reads are bounded by bytes, the
schema states its bounds, only UTF-8 bodies are read, what uvicorn itself refuses is in the
envelope, admin routes check the token before the body, and ``cache: false`` is private."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from eqs_reward.judge.cases import ExampleIn
from eqs_reward.judge.stub import StubJudge
from eqs_reward.server import build_app
from eqs_reward.server.bank import SQLiteBankStore
from eqs_reward.server.bank._stores import version_bytes
from tests._helpers import (
    GOOD,
    GOOD2,
    ServerProcess,
    assert_envelope,
    make_settings,
    scripted,
    stub_backed_service,
)

TOKEN = "round-two-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SOFT = {"k": 1, "score_mode": "soft"}


def soft_answer(sampled: Any = 0.0, other: Any = None, digit: str = "1") -> dict[str, Any]:
    """A soft verdict whose information-gain digit has the logprobs given (the rest certain)."""
    tokens: list[dict[str, Any]] = [
        {"token": t, "logprob": 0.0, "top_logprobs": []} for t in '{"a":1,"f":1,"i":'
    ]
    alternatives = [] if other is None else [{"token": "01"[digit == "0"], "logprob": other}]
    tokens.append({"token": digit, "logprob": sampled, "top_logprobs": alternatives})
    tokens.append({"token": "}", "logprob": 0.0, "top_logprobs": []})
    content = '{"a":1,"f":1,"i":' + digit + "}"
    return {"choices": [{"message": {"content": content}, "logprobs": {"content": tokens}}]}


def score_one(client: TestClient, **options: Any) -> dict[str, Any]:
    body = {
        "items": [{"context": {"query": "router"}, "suggestions": [GOOD]}],
        "options": {**SOFT, **options},
    }
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    suggestion: dict[str, Any] = response.json()["results"][0]["suggestions"][0]
    return suggestion


# -- 1. malformed soft verdicts ----------------------------------------------------------------
MALFORMED = [
    pytest.param({"sampled": 1e6}, id="sampled-1e6"),
    pytest.param({"sampled": "x"}, id="sampled-text"),
    pytest.param({"sampled": math.inf}, id="sampled-inf"),
    pytest.param({"sampled": math.nan}, id="sampled-nan"),
    pytest.param({"sampled": None}, id="sampled-missing"),
    pytest.param({"sampled": -0.2, "other": 3.0}, id="other-positive"),
    pytest.param({"sampled": -0.2, "other": "x"}, id="other-text"),
    pytest.param({"sampled": True}, id="sampled-bool"),
]


@pytest.mark.parametrize("logprobs", MALFORMED)
def test_a_malformed_soft_verdict_fails_and_is_never_cached(
    tmp_path: Path, logprobs: dict[str, Any]
) -> None:
    answers = [soft_answer(**logprobs)] * 2 + [soft_answer(math.log(0.8), math.log(0.2))]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        # as Python's json writes them: NaN and Infinity included (a proxy may well do that)
        return httpx.Response(200, content=json.dumps(answer).encode())

    transport = httpx.MockTransport(handler)
    settings = make_settings(tmp_path, judge_max_retries=1, judge_backoff_initial_s=0.01)
    with TestClient(build_app(settings, judge_transport=transport)) as client:
        failed = score_one(client)
        assert failed["status"] == "failed" and failed["reason"] == "unparseable", failed
        assert len(seen) == 2  # retried once, as any unreadable answer
        fresh = score_one(client)
        assert fresh["status"] == "ok" and fresh["cached"] is False
        assert fresh["information_gain"] == pytest.approx(0.8)
        again = score_one(client)
        assert again["cached"] is True and again["information_gain"] == pytest.approx(0.8)
        metrics = client.get("/metrics").text
    assert 'eqs_reward_judge_calls_total{outcome="unparseable"} 1.0' in metrics
    assert 'eqs_reward_judge_attempt_errors_total{reason="unparseable"} 2.0' in metrics


def test_a_confident_verdict_with_only_the_sampled_digit_stands(tmp_path: Path) -> None:
    transport, _ = scripted(soft_answer(sampled=-1e-9, digit="0"))
    with TestClient(build_app(make_settings(tmp_path), judge_transport=transport)) as client:
        suggestion = score_one(client)
    assert suggestion["status"] == "ok" and suggestion["information_gain"] == 0.0


def test_every_llm_head_reads_soft_verdicts_by_the_same_rule(tmp_path: Path) -> None:
    """The simulated shopper's answer goes through the same reader: a logprob of 1e6 on its
    tap digit fails its suggestions, it does not tap them at 1.0."""
    tokens = [{"token": t, "logprob": 0.0, "top_logprobs": []} for t in '{"t":']
    tokens += [{"token": "1", "logprob": 1e6, "top_logprobs": []}, {"token": "}", "logprob": 0}]
    shopper = {"choices": [{"message": {"content": '{"t":1}'}, "logprobs": {"content": tokens}}]}

    def answer(request: httpx.Request) -> httpx.Response:
        regex = json.loads(request.content)["structured_outputs"]["regex"]
        if '"t"' in regex:
            return httpx.Response(200, json=shopper)
        return httpx.Response(200, json=soft_answer(sampled=0.0))

    settings = make_settings(tmp_path, judge_max_retries=0)
    app = build_app(settings, judge_transport=httpx.MockTransport(answer))
    with TestClient(app) as client:
        suggestion = score_one(client, recipe="qualeqs-blend")
    assert suggestion["status"] == "failed" and suggestion["reason"] == "unparseable"


# -- 2. bank versions bounded by bytes ---------------------------------------------------------
def _example(n: int) -> ExampleIn:
    return ExampleIn.model_validate(
        {
            "context": {"query": f"query {n} " + "padding " * 40},
            "suggestion": f"Suggestion number {n} with a budget under ${n}?",
            "labels": {"answerability": 1, "factuality": 1, "information_gain": n % 2},
        }
    )


async def test_bank_versions_kept_in_memory_stay_within_their_byte_bound(tmp_path: Path) -> None:
    store = SQLiteBankStore(tmp_path / "bank.sqlite3", cache_bytes=400_000)
    try:
        for n in range(40):  # 40 versions, the last of 400 examples
            await store.add([_example(10 * n + m) for m in range(10)], note=f"v{n}")
        sizes = []
        for version in range(1, 41):
            sizes.append(version_bytes(await store.get(version)))
            assert store.cached_bytes <= store.cache_bytes
        # large versions: a few fit at once, all of them would take several times the bound
        assert store.cache_bytes // 4 < max(sizes) < store.cache_bytes < sum(sizes) // 5
        last = await store.get(40)
        assert await store.get(40) is last  # a kept version is served from memory
        assert store.cached_bytes == sum(size for _, size in store._versions.values())
        tiny = SQLiteBankStore(tmp_path / "bank.sqlite3", cache_bytes=0)
        assert len((await tiny.get(40)).examples) == 400 and tiny.cached_bytes == 0
        await tiny.close()
    finally:
        await store.close()


def test_a_large_version_is_streamed_with_the_same_body(make_client: Any) -> None:
    client = make_client(admin_token=TOKEN)
    examples = [_example(n).model_dump(mode="json") for n in range(60)]
    added = client.post("/v1/fewshot", json={"examples": examples, "force": True}, headers=AUTH)
    assert added.status_code == 201, added.text
    response = client.get("/v1/fewshot", params={"version": added.json()["version"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"version", "created_at", "note", "example_count", "examples"}
    assert body["example_count"] == len(body["examples"]) >= 60
    assert {e["suggestion"] for e in examples} <= {e["suggestion"] for e in body["examples"]}


# -- 3. the schema states its bounds -----------------------------------------------------------
PYDANTIC_ONLY = {"ge", "le", "gt", "lt", "min_length", "max_length", "multiple_of"}


def _walk(node: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        is_schema = "type" in node or "anyOf" in node or "$ref" in node or "enum" in node
        found += [f"{where}.{key}" for key in PYDANTIC_ONLY & set(node) if is_schema]
        for key, value in node.items():
            found += _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found += _walk(value, f"{where}[{n}]")
    return found


def test_the_schema_uses_json_schema_bounds_everywhere(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert _walk(schema) == []
    parameters = {
        (path, p["name"]): p["schema"]
        for path, methods in schema["paths"].items()
        for operation in methods.values()
        for p in operation.get("parameters", [])
    }
    assert parameters[("/v1/fewshot", "version")]["minimum"] == 1
    assert parameters[("/v1/fewshot/calibration", "version")]["minimum"] == 1
    assert parameters[("/get_reward", "fewshot_version")]["minimum"] == 1
    assert parameters[("/get_reward", "group_size")] == {
        "type": "integer",
        "minimum": 2,
        "maximum": 1024,
        "title": "Group Size",
        "description": parameters[("/get_reward", "group_size")]["description"],
    }
    assert_envelope(client.get("/v1/fewshot", params={"version": 0}), 422)


# -- 4. UTF-8 only ------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_a_body_not_in_utf8_is_a_400(client: TestClient, stub: StubJudge, encoding: str) -> None:
    body = json.dumps({"items": [{"context": {"query": "router"}, "suggestions": [GOOD]}]})
    response = client.post(
        "/v1/score",
        content=body.encode(encoding),
        headers={"content-type": "application/json"},
    )
    assert "UTF-8" in assert_envelope(response, 400, "bad_request")
    invalid = client.post(
        "/v1/score", content=b'{"items": "\xff"}', headers={"content-type": "application/json"}
    )
    assert_envelope(invalid, 400, "bad_request")
    assert stub.calls == 0


# -- 5. what uvicorn refuses itself ------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with stub_backed_service(tmp_path_factory.mktemp("round-two")) as service:
        yield service


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


RAW_BAD = {
    "negative-content-length": b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "invalid-utf8-path": b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid-utf8-query": b"GET /health?q=\xc3\x28 HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge-query": b"GET /health?q=" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge-header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(RAW_BAD))
def test_what_the_http_layer_refuses_is_in_the_envelope(served: ServerProcess, name: str) -> None:
    status, headers, body = _raw(served.port, RAW_BAD[name])
    assert status == 400
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == 400 and error["type"] == "bad_request" and error["message"]


# -- 6. the admin token before the body --------------------------------------------------------
ADMIN_WRITES = [
    ("POST", "/v1/fewshot"),
    ("PUT", "/v1/fewshot/calibration"),
    ("DELETE", "/v1/fewshot/ex-1"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_WRITES)
def test_an_admin_route_checks_the_token_before_the_body(
    make_client: Any, method: str, path: str
) -> None:
    client = make_client(admin_token=TOKEN)
    malformed = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    assert_envelope(client.request(method, path, **malformed), 401, "unauthorized")
    wrong = {**malformed, "headers": {**malformed["headers"], "Authorization": "Bearer nope"}}
    assert_envelope(client.request(method, path, **wrong), 403, "forbidden")
    utf16 = {"content": '{"x": 1}'.encode("utf-16"), "headers": malformed["headers"]}
    assert_envelope(client.request(method, path, **utf16), 401, "unauthorized")
    right = {**malformed, "headers": {**malformed["headers"], **AUTH}}
    assert_envelope(client.request(method, path, **right), 400, "bad_request")
    disabled = make_client()
    assert_envelope(disabled.request(method, path, **malformed), 403, "forbidden")


def test_reads_need_no_token(make_client: Any) -> None:
    client = make_client(admin_token=TOKEN)
    assert client.get("/v1/fewshot").status_code == 200
    assert client.get("/v1/fewshot/calibration").status_code == 200


# -- 7. cache: false is private ----------------------------------------------------------------
def test_cache_false_neither_reads_nor_writes_the_memory_tier(
    make_client: Any, stub: StubJudge
) -> None:
    client = make_client()
    scoring = client.app.state.scoring  # type: ignore[attr-defined]
    assert score_one(client, cache=False)["cached"] is False
    assert score_one(client, cache=False)["cached"] is False
    assert stub.calls == 2 and len(scoring.cache) == 0
    assert score_one(client)["cached"] is False  # cache false wrote nothing to find
    assert stub.calls == 3 and len(scoring.cache) == 1
    assert score_one(client, cache=False)["cached"] is False  # nor reads what is there
    assert stub.calls == 4


def test_cache_false_leaves_redis_untouched(
    make_client: Any, stub: StubJudge, redis_url: str, redis_prefix: str
) -> None:
    client = make_client(redis_url=redis_url, redis_key_prefix=redis_prefix)
    score_one(client, cache=False)
    score_one(client, cache=False)
    store = redis.Redis.from_url(redis_url)
    try:
        assert list(store.scan_iter(match=f"{redis_prefix}score:*")) == []
        assert list(store.scan_iter(match=f"{redis_prefix}*score*")) == []
    finally:
        store.close()
    assert stub.calls == 2


async def test_cache_false_does_not_share_another_callers_call(tmp_path: Path) -> None:
    """A caller measuring the judge's spread asks the judge itself, even while the same text is
    being judged for someone else."""
    stub = StubJudge()
    stub.behaviour.delay_s = 0.3
    app = build_app(make_settings(tmp_path), judge_transport=httpx.ASGITransport(app=stub.app()))
    body = {"items": [{"context": {"query": "router"}, "suggestions": [GOOD2]}]}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            shared, private = await asyncio.gather(
                client.post("/v1/score", json={**body, "options": {"k": 1}}),
                client.post("/v1/score", json={**body, "options": {"k": 1, "cache": False}}),
            )
    assert shared.status_code == private.status_code == 200
    assert stub.calls == 2
