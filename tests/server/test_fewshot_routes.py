"""/v1/fewshot over HTTP, and the bank's effect on judging: pinning, cache keys, prompt order."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from eqs_reward.judge.stub import StubJudge
from tests._helpers import GOOD, assert_envelope, item, score_body

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BAD_CASE = {
    "context": {"query": "I want a blender"},
    "suggestion": GOOD,
    "labels": {"answerability": 1, "factuality": 1, "information_gain": 0},
    "rationale": "online bad case: the judge was too generous",
    "source": "online_bad_case",
}


@pytest.fixture
def admin(make_client: Any) -> TestClient:
    return make_client(admin_token=TOKEN)  # type: ignore[no-any-return]


def test_writes_need_the_admin_token(admin: TestClient, make_client: Any) -> None:
    body = {"examples": [BAD_CASE]}
    assert_envelope(admin.post("/v1/fewshot", json=body), 401, "unauthorized")
    wrong = {"Authorization": "Bearer nope"}
    assert_envelope(admin.post("/v1/fewshot", json=body, headers=wrong), 403, "forbidden")
    assert_envelope(admin.delete("/v1/fewshot/ex-1", headers=wrong), 403)
    assert_envelope(admin.delete("/v1/fewshot/ex-1"), 401)
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert_envelope(admin.post("/v1/fewshot", json=body, headers=basic), 401)
    disabled = make_client()  # no token configured: refused, saying how to enable
    message = assert_envelope(disabled.post("/v1/fewshot", json=body, headers=AUTH), 403)
    assert "EQS_REWARD_ADMIN_TOKEN" in message
    assert admin.get("/v1/fewshot/versions").json()["active"] == 1


def test_add_list_pin_and_retire(admin: TestClient) -> None:
    seed = admin.get("/v1/fewshot").json()
    assert seed["version"] == 1 and seed["note"] == "seed"
    added = admin.post(
        "/v1/fewshot", json={"examples": [BAD_CASE], "note": "blender"}, headers=AUTH
    )
    assert added.status_code == 201, added.text
    new_id = added.json()["added"][0]
    assert added.json() == {"version": 2, "added": [new_id], "duplicates": []}
    again = admin.post("/v1/fewshot", json={"examples": [BAD_CASE]}, headers=AUTH)
    assert again.status_code == 200 and again.json()["version"] == 2
    assert again.json()["duplicates"] == [new_id]
    active = admin.get("/v1/fewshot").json()
    assert active["version"] == 2 and active["examples"][-1]["id"] == new_id
    assert active["examples"][-1]["source"] == "online_bad_case"
    assert admin.get("/v1/fewshot", params={"version": 1}).json()["example_count"] == len(
        seed["examples"]
    )
    stale = admin.post(
        "/v1/fewshot",
        json={"examples": [{**BAD_CASE, "suggestion": "x y"}], "expected_version": 1},
        headers=AUTH,
    )
    assert "stale" in assert_envelope(stale, 409, "conflict")
    assert stale.json()["active_version"] == 2
    retired = admin.delete(f"/v1/fewshot/{new_id}", headers=AUTH)
    assert retired.json() == {"version": 3, "retired": new_id}
    assert_envelope(admin.delete(f"/v1/fewshot/{new_id}", headers=AUTH), 404)
    versions = admin.get("/v1/fewshot/versions").json()
    assert versions["active"] == 3
    assert [v["example_count"] for v in versions["versions"]] == [
        len(seed["examples"]),
        len(seed["examples"]) + 1,
        len(seed["examples"]),
    ]
    assert_envelope(admin.get("/v1/fewshot", params={"version": 9}), 404)
    assert "eqs_reward_fewshot_active_version 3.0" in admin.get("/metrics").text


@pytest.mark.parametrize(
    ("example", "needle"),
    [
        (
            {**BAD_CASE, "labels": {"answerability": 2, "factuality": 1, "information_gain": 0}},
            "examples.0.labels.answerability",
        ),
        ({**BAD_CASE, "suggestion": "   "}, "examples.0.suggestion"),
        ({**BAD_CASE, "source": "rumour"}, "examples.0.source"),
        ({k: v for k, v in BAD_CASE.items() if k != "labels"}, "examples.0.labels"),
        ({**BAD_CASE, "context": {}}, "examples.0.context.query"),
    ],
)
def test_invalid_examples_name_the_field(admin: TestClient, example: Any, needle: str) -> None:
    response = admin.post("/v1/fewshot", json={"examples": [example]}, headers=AUTH)
    assert needle in assert_envelope(response, 422, "invalid_request")


def test_too_many_examples_per_add(make_client: Any) -> None:
    client = make_client(admin_token=TOKEN, fewshot_max_examples_per_add=2)
    examples = [{**BAD_CASE, "suggestion": f"s {n}"} for n in range(3)]
    response = client.post("/v1/fewshot", json={"examples": examples}, headers=AUTH)
    assert "limit of 2" in assert_envelope(response, 422)


def test_new_version_changes_the_prompt_and_the_cache_key(
    admin: TestClient, stub: StubJudge
) -> None:
    stub.keep_requests = True
    body = score_body(item("I want a blender", GOOD), k=1)
    first = admin.post("/v1/score", json=body).json()
    assert first["meta"]["fewshot_version"] == 1 and stub.calls == 1
    seed_prompt = stub.requests[-1]["messages"]
    admin.post("/v1/fewshot", json={"examples": [BAD_CASE]}, headers=AUTH)

    second = admin.post("/v1/score", json=body).json()
    assert second["meta"]["fewshot_version"] == 2
    assert second["results"][0]["suggestions"][0]["cached"] is False  # not served across versions
    assert stub.calls == 2
    new_prompt = stub.requests[-1]["messages"]
    # Appended: the old prompt minus its last turn is an exact prefix of the new one.
    assert new_prompt[: len(seed_prompt) - 1] == seed_prompt[:-1]
    assert len(new_prompt) == len(seed_prompt) + 2
    assert '"I want a blender"' in new_prompt[-3]["content"]
    assert new_prompt[-2]["content"] == '{"a":1,"f":1,"i":0}'

    pinned = admin.post("/v1/score", json={**body, "options": {"k": 1, "fewshot_version": 1}})
    assert pinned.json()["meta"]["fewshot_version"] == 1
    assert pinned.json()["results"][0]["suggestions"][0]["cached"] is True  # v1's score
    assert stub.calls == 2
    pinned_fresh = admin.post(
        "/v1/score", json=score_body(item("mixer", GOOD), k=1, fewshot_version=1)
    )
    assert pinned_fresh.status_code == 200
    assert stub.requests[-1]["messages"][:-1] == seed_prompt[:-1]  # v1's judge prompt


def test_bank_over_budget_keeps_prompt_bounded(make_client: Any, stub: StubJudge) -> None:
    client = make_client(admin_token=TOKEN, fewshot_token_budget=400)
    stub.keep_requests = True
    client.post("/v1/score", json=score_body(item("q", GOOD), k=1))
    turns = len(stub.requests[-1]["messages"])
    assert 1 + 2 * 4 <= turns < 1 + 2 * 20 + 1  # a subset, at least one per failure kind + a pass
