"""One regression test per finding of the 'Hard to break' issue: every input gets a 2xx or a clear
4xx in the envelope, a judge that answers nonsense costs flagged suggestions, never a 5xx."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from eqs_reward.judge.stub import StubJudge
from eqs_reward.server import build_app
from eqs_reward.server.bank import ACTIVE_TTL_S
from eqs_reward.server.scoring import RateMeter
from tests._helpers import GOOD, GOOD2, SHORT, assert_envelope, make_settings, scripted

TOKEN = "hard-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BLANKS = [" ", "\t\n", "\u00a0", "\u3000", "\u200b "]


def post(client: TestClient, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    """Send JSON as written (a lone surrogate as the escape ``\\ud800``), as any client can."""
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return client.post(path, content=json.dumps(body).encode(), headers=headers, **kwargs)


def case(query: str = "router", suggestion: str = GOOD) -> dict[str, Any]:
    labels = {"answerability": 1, "factuality": 1, "information_gain": 1}
    return {"context": {"query": query}, "suggestion": suggestion, "labels": labels}


@pytest.mark.parametrize("blank", BLANKS)
def test_f1_a_blank_query_is_a_422_everywhere(make_client: Any, blank: str) -> None:
    client = make_client(admin_token=TOKEN)
    body = {"items": [{"context": {"query": blank}, "suggestions": [GOOD]}]}
    assert "items.0.context.query" in assert_envelope(post(client, "/v1/score", body), 422)
    for path, method, payload in (
        ("/v1/fewshot/calibration", "put", {"cases": [case(blank), case()]}),
        ("/v1/fewshot", "post", {"examples": [case()], "dry_run": True, "cases": [case(blank)]}),
        ("/v1/fewshot", "post", {"examples": [case(blank)]}),
    ):
        response = client.request(
            method.upper(),
            path,
            content=json.dumps(payload).encode(),
            headers={**AUTH, "content-type": "application/json"},
        )
        assert "query" in assert_envelope(response, 422), (path, payload)


def test_f2_a_lone_surrogate_is_refused_where_it_stands(make_client: Any, stub: StubJudge) -> None:
    client = make_client(admin_token=TOKEN)
    bad = "Routers\ud800 under $80?"
    ok = post(
        client,
        "/v1/score",
        {"items": [{"context": {"query": "r"}, "suggestions": [bad, GOOD]}], "options": {"k": 2}},
    )
    assert ok.status_code == 200, ok.text
    first, second = ok.json()["results"][0]["suggestions"]
    assert first["status"] == "rejected" and first["reason"] == "invalid_text"
    assert second["status"] == "ok" and first["text"] == bad  # echoed as sent
    completion = json.dumps({"options": [bad, GOOD, GOOD2]})
    item = {"context": {"query": "r"}, "completion": completion}
    assert post(client, "/v1/score", {"items": [item]}).status_code == 200
    for context in ({"query": "r", "profile": bad}, {"query": bad},
                    {"query": "r", "history": [{"role": "user", "content": bad}]}):  # fmt: skip
        body = {"items": [{"context": context, "suggestions": [GOOD]}]}
        assert_envelope(post(client, "/v1/score", body), 422)
    reward = post(
        client,
        "/get_reward",
        {
            "query": ["p" + json.dumps({"options": [bad, GOOD, GOOD2]})],
            "prompts": ["p"],
            "labels": [bad],
        },
    )
    assert reward.status_code == 200  # the refused option scores 0, the other two are judged
    assert reward.json()["rewards"] == [pytest.approx(2 * 0.9**3 / 3)]
    example = post(client, "/v1/fewshot", {"examples": [case(suggestion=bad)]}, headers=AUTH)
    assert_envelope(example, 422)


def test_f3_integers_past_64_bits_are_422(make_client: Any) -> None:
    client = make_client(admin_token=TOKEN)
    huge = 2**64
    assert_envelope(client.get("/v1/fewshot", params={"version": huge}), 422)
    assert_envelope(client.get("/v1/fewshot/calibration", params={"version": huge}), 422)
    body = {
        "items": [{"context": {"query": "r"}, "suggestions": [GOOD]}],
        "options": {"fewshot_version": huge},
    }
    assert_envelope(post(client, "/v1/score", body), 422)
    calibrate = {"version": huge, "cases": [case(), case()]}
    assert_envelope(post(client, "/v1/fewshot/calibration", calibrate, headers=AUTH), 405)
    assert_envelope(client.put("/v1/fewshot/calibration", json=calibrate, headers=AUTH), 422)
    assert_envelope(client.get("/v1/fewshot/versions", params={"after": huge}), 422)
    assert_envelope(client.get("/v1/fewshot", params={"version": 2**63 - 1}), 404)


WRONG_SHAPES: list[Any] = [
    {"choices": [{"message": {"content": {"a": 1}}}]},
    {"choices": [{"message": {"content": 7}}]},
    {"choices": [{"message": {"content": '{"a":1,"f":1,"i":1}'}, "logprobs": [1, 2]}]},
    {"choices": [{"message": {"content": '{"a":1,"f":1,"i":1}'}, "logprobs": "x"}]},
    {"choices": []},
    [],
    "not an object",
]  # fmt: skip


@pytest.mark.parametrize("answer", WRONG_SHAPES)
def test_f4_a_judge_answer_of_the_wrong_shape_is_a_flagged_failure(
    tmp_path: Path, answer: Any
) -> None:
    transport, _ = scripted(answer)
    settings = make_settings(tmp_path, judge_max_retries=1)
    with TestClient(build_app(settings, judge_transport=transport)) as client:
        body = {
            "items": [{"context": {"query": "r"}, "suggestions": [GOOD]}],
            "options": {"k": 1, "score_mode": "soft"},
        }
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        suggestion = response.json()["results"][0]["suggestions"][0]
        assert suggestion["status"] == "failed" and suggestion["reason"] == "unparseable"


def test_f5_the_largest_documented_request_is_served_on_an_idle_service(
    make_client: Any, stub: StubJudge
) -> None:
    """256 items x 16 distinct suggestions = 4,096 judge calls, past the queue's 1,056 places:
    an idle service takes it (admission refuses only work that would queue behind others)."""
    client = make_client()
    items = [
        {
            "context": {"query": f"q{n}"},
            "suggestions": [f"Suggestion {m} for item {n} here?" for m in range(16)],
        }
        for n in range(256)
    ]
    response = client.post("/v1/score", json={"items": items, "options": {"k": 16}})
    assert response.status_code == 200, response.text[:300]
    assert stub.calls == 4096


def test_f7_the_throughput_meter_has_fixed_memory() -> None:
    meter = RateMeter(window_s=10)
    for n in range(200_000):
        meter.add(now=n / 1000)  # 200 s of calls at 1,000 a second
    assert len(meter._counts) == len(meter._stamps) == 10
    assert meter.rate(now=199.5) == pytest.approx(1000, rel=0.02)
    assert meter.rate(now=1000.0) == 0.0  # an idle service forgets


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/fewshot?dry_run=true", {"examples": [case()]}),
        ("POST", "/v1/fewshot?force=1", {"examples": [case()]}),
        ("PUT", "/v1/fewshot/calibration?version=1", {"cases": [case(), case()]}),
        ("DELETE", "/v1/fewshot/ex-1?expected_version=1", None),
        (
            "POST",
            "/v1/score?mode=soft",
            {"items": [{"context": {"query": "r"}, "suggestions": [GOOD]}]},
        ),
        ("GET", "/health?x=1", None),
    ],
)
def test_f8_unknown_query_parameters_never_write(
    make_client: Any, method: str, path: str, body: Any
) -> None:
    client = make_client(admin_token=TOKEN)
    response = client.request(method, path, json=body, headers=AUTH)
    assert "unknown query parameter" in assert_envelope(response, 422)
    versions = client.get("/v1/fewshot/versions").json()
    assert versions["active"] == 1 and len(versions["versions"]) == 1


def test_head_requests_and_strict_labels(make_client: Any) -> None:
    client = make_client(admin_token=TOKEN)
    assert client.head("/health").status_code == 200
    assert client.head("/ready").status_code == 200
    for labels in ({"answerability": False, "factuality": 1, "information_gain": 1},
                   {"answerability": "1", "factuality": 1, "information_gain": 1},
                   {"answerability": 1.0, "factuality": 1, "information_gain": 1}):  # fmt: skip
        example = {**case(), "labels": labels}
        assert_envelope(client.post("/v1/fewshot", json={"examples": [example]}, headers=AUTH), 422)


def test_the_schema_lists_every_status_and_the_item_rule(make_client: Any) -> None:
    schema = make_client().get("/openapi.json").json()
    score = schema["paths"]["/v1/score"]["post"]["responses"]
    assert {"200", "400", "408", "413", "422", "429", "503"} <= set(score)
    assert {"404", "422"} <= set(schema["paths"]["/v1/fewshot"]["get"]["responses"])
    add = schema["paths"]["/v1/fewshot"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "409", "413", "422", "503"} <= set(add)
    item = schema["components"]["schemas"]["ScoreItem"]
    assert item["oneOf"] == [{"required": ["suggestions"]}, {"required": ["completion"]}]
    assert "head" in schema["paths"]["/health"] and "head" in schema["paths"]["/ready"]


def test_a_redis_bank_that_lost_its_data_is_a_503_and_not_ready(
    make_client: Any, redis_url: str, redis_prefix: str
) -> None:
    client = make_client(fewshot_store="redis", redis_url=redis_url, redis_key_prefix=redis_prefix)
    body = {
        "items": [{"context": {"query": "r"}, "suggestions": [GOOD, SHORT]}],
        "options": {"k": 2},
    }
    assert client.post("/v1/score", json=body).status_code == 200
    server = redis.Redis.from_url(redis_url)
    for key in server.scan_iter(match=redis_prefix + "fewshot:*"):
        server.delete(key)  # a Redis without persistence restarted
    server.close()
    time.sleep(ACTIVE_TTL_S + 0.2)
    assert "lost its data" in assert_envelope(client.post("/v1/score", json=body), 503)
    ready = client.get("/ready")
    assert ready.status_code == 503 and "fewshot_bank" in ready.json()["error"]["message"]
