"""RewardClient: typed results, the retry policy (an outage is waited out, a bug is not), deadlines,
failure policies, the admin calls and the exception tree (injected transports)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from eqs_reward import client as api
from eqs_reward.client import AsyncRewardClient, RewardClient, apply_policy, consecutive_groups
from eqs_reward.types import parse_failure_policy
from tests._helpers import scripted


def body(*rewards: float | None) -> dict[str, Any]:
    results = []
    for i, r in enumerate(rewards):
        status = "ok" if r is not None else "failed"
        results.append(
            {
                "id": str(i),
                "status": status,
                "reward": r,
                "format_reward": 1.0,
                "format_problem": None,
                "disagreement": 0.0 if r is not None else None,
                "suggestions": [
                    {
                        "text": "s",
                        "status": status,
                        "reward": r,
                        "answerability": r,
                        "factuality": r,
                        "information_gain": r,
                        "cached": False,
                    }
                ],
            }
        )
    meta = {"judge_model": "m", "prompt_version": "p", "fewshot_version": 2, "score_mode": "soft"}
    return {"results": results, "meta": meta}


def envelope(status: int, type_: str = "x", **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": f"m{status}", "type": type_, "code": status}, **extra}


def test_policies() -> None:
    rewards = [1.0, None, 0.5, None, None, None]
    groups = consecutive_groups(6, 3)
    assert groups == [0, 0, 0, 1, 1, 1]
    assert apply_policy(rewards, groups, "group_mean") == [1.0, 0.75, 0.5, 0.0, 0.0, 0.0]
    assert apply_policy(rewards, groups, "zero") == [1.0, 0.0, 0.5, 0.0, 0.0, 0.0]
    assert apply_policy(rewards, groups, "skip") == rewards
    assert consecutive_groups(3, None) == [0, 0, 0]
    with pytest.raises(ValueError):
        apply_policy([1.0], [1, 2], "zero")
    assert parse_failure_policy(" Group_Mean ") == "group_mean"
    with pytest.raises(ValueError, match="use one of"):
        parse_failure_policy("groupmean")


def test_sync_client_request_shape_and_typed_results() -> None:
    transport, seen = scripted(body(1.0, None, 0.5))
    with RewardClient(
        "http://svc", fewshot_version=2, score_mode="soft", transport=transport
    ) as client:
        rewards = client.rewards(
            ["router", {"query": "flowers"}, "router"], ["a", "b", "c"], group_ids=["g", "g", "g"]
        )
    assert rewards == [1.0, 0.75, 0.5]
    sent = seen[0]
    assert sent["options"] == {
        "k": 3,
        "score_mode": "soft",
        "fewshot_version": 2,
        "on_failure": "null",
    }
    assert sent["items"][1] == {"id": "1", "context": {"query": "flowers"}, "completion": "b"}


def test_an_outage_is_waited_out_and_each_wait_logged(caplog: pytest.LogCaptureFixture) -> None:
    transport, seen = scripted(
        envelope(503, "unavailable"),
        (*envelope(429, "overloaded"), {"retry-after": "0"}),
        httpx.ConnectError("refused"),
        envelope(502),
        envelope(504),
        body(1.0),
    )
    client = RewardClient("http://svc", transport=transport, backoff_s=0.0)
    with caplog.at_level(logging.WARNING, logger="eqs_reward.client"):
        assert client.score_completions(["q"], ["c"]).results[0].reward == 1.0
    assert len(seen) == 6
    waits = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(waits) == 5 and "waiting" in waits[0].getMessage()
    client.close()


def test_an_outage_longer_than_the_limit_raises_unavailable() -> None:
    transport, seen = scripted(httpx.ConnectError("refused"))
    client = RewardClient("http://svc", transport=transport, backoff_s=0.01, wait_for_service_s=0.3)
    with pytest.raises(api.RewardServiceUnavailable) as info:
        client.score_completions(["q"], ["c"])
    assert "unavailable after" in str(info.value) and len(seen) > 3
    client.close()


def test_a_server_bug_is_retried_three_times_only() -> None:
    transport, seen = scripted(envelope(500, "internal_error"))
    client = RewardClient("http://svc", transport=transport, backoff_s=0.0)
    with pytest.raises(api.RewardServiceUnavailable) as info:
        client.score_completions(["q"], ["c"])
    assert len(seen) == 4 and info.value.status == 500
    client.close()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (422, api.RewardRequestRejected),
        (401, api.RewardAuthError),
        (403, api.RewardAuthError),
        (404, api.RewardNotFound),
        (409, api.RewardConflict),
    ],
)
def test_4xx_is_raised_with_the_envelope_and_not_retried(
    status: int, kind: type[api.RewardRequestRejected]
) -> None:
    transport, seen = scripted(envelope(status, "typed", comparison={"verdict": "worse"}))
    client = RewardClient("http://svc", transport=transport, admin_token="t")
    with pytest.raises(kind) as info:
        client.add_examples([{"x": 1}])
    assert isinstance(info.value, api.RewardServiceError)
    assert info.value.status == status and info.value.type == "typed"
    assert (
        info.value.message == f"m{status}" and info.value.body["comparison"]["verdict"] == "worse"
    )
    assert len(seen) == 1
    client.close()


def test_deadline() -> None:
    transport, _ = scripted(envelope(503))
    client = RewardClient("http://svc", transport=transport, deadline_s=0.3, backoff_s=10.0)
    with pytest.raises(api.RewardDeadlineExceeded):
        client.score_completions(["q"], ["c"])
    client.close()


def test_admin_calls_send_the_token_and_retire_is_not_repeated_after_a_reset() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.method == "DELETE":
            raise httpx.ReadError("connection reset after sending")
        return httpx.Response(201, json={"version": 3, "added": ["ex-1"], "duplicates": []})

    client = RewardClient(
        "http://svc", transport=httpx.MockTransport(handler), admin_token="secret", backoff_s=0.0
    )
    assert client.add_examples([{"suggestion": "s"}], note="n")["version"] == 3
    assert requests[0].headers["authorization"] == "Bearer secret"
    with pytest.raises(api.RewardServiceUnavailable):
        client.retire_example("ex-1")
    assert [r.method for r in requests] == ["POST", "DELETE"]  # the retire was sent once
    client.close()
    with pytest.raises(ValueError, match="admin token"):
        RewardClient("http://svc", transport=httpx.MockTransport(handler)).calibrate([])


def test_a_url_is_required() -> None:
    with pytest.raises(ValueError, match="base_url"):
        RewardClient("  ")


async def test_async_client() -> None:
    transport, seen = scripted(envelope(502), body(None, 0.2))
    async with AsyncRewardClient("http://svc", transport=transport, backoff_s=0.0) as client:
        rewards = await client.rewards(["q", "q"], ["a", "b"], group_size=2, policy="zero")
    assert rewards == [0.0, 0.2] and len(seen) == 2
    transport, _ = scripted(envelope(503))
    async with AsyncRewardClient(
        "http://svc", transport=transport, deadline_s=0.2, backoff_s=5.0
    ) as client:
        with pytest.raises(api.RewardDeadlineExceeded):
            await client.score_completions(["q"], ["c"])
