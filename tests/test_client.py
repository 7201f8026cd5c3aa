"""RewardClient: typed results, retries, deadline, failure policies (injected transports)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.client import (
    AsyncRewardClient,
    RewardClient,
    RewardDeadlineExceeded,
    RewardRequestRejected,
    RewardServiceUnavailable,
    apply_policy,
    groups_from,
)
from tests.conftest import scripted


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
    return {"results": results, "meta": {"fewshot_version": 2}}


def test_policies() -> None:
    rewards = [1.0, None, 0.5, None, None, None]
    groups = groups_from(6, 3, None)
    assert groups == [0, 0, 0, 1, 1, 1]
    assert apply_policy(rewards, groups, "group_mean") == [1.0, 0.75, 0.5, 0.0, 0.0, 0.0]
    assert apply_policy(rewards, groups, "zero") == [1.0, 0.0, 0.5, 0.0, 0.0, 0.0]
    assert apply_policy(rewards, groups, "skip") == rewards
    with pytest.raises(ValueError):
        groups_from(3, None, [1, 2])


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


def test_retries_on_5xx_429_and_transport_errors_then_succeeds() -> None:
    transport, seen = scripted(
        (503, {"error": {"message": "x", "type": "unavailable", "code": 503}}),
        (429, {"error": {"message": "x", "type": "overloaded", "code": 429}}, {"retry-after": "0"}),
        httpx.ConnectError("refused"),
        body(1.0),
    )
    client = RewardClient("http://svc", transport=transport, backoff_s=0.0)
    assert client.score_completions(["q"], ["c"]).items[0].reward == 1.0
    assert len(seen) == 4
    client.close()


def test_gives_up_after_three_retries() -> None:
    transport, seen = scripted((500, {}))
    client = RewardClient("http://svc", transport=transport, backoff_s=0.0)
    with pytest.raises(RewardServiceUnavailable):
        client.score_completions(["q"], ["c"])
    assert len(seen) == 4
    client.close()


def test_4xx_is_raised_with_the_envelope_and_not_retried() -> None:
    error = {"error": {"message": "items: bad", "type": "invalid_request", "code": 422}}
    transport, seen = scripted((422, error))
    client = RewardClient("http://svc", transport=transport)
    with pytest.raises(RewardRequestRejected) as info:
        client.score_completions(["q"], ["c"])
    assert info.value.status == 422 and info.value.type == "invalid_request"
    assert len(seen) == 1
    client.close()


def test_deadline() -> None:
    transport, _ = scripted((503, {}))
    client = RewardClient("http://svc", transport=transport, deadline_s=0.3, backoff_s=10.0)
    with pytest.raises(RewardDeadlineExceeded):
        client.score_completions(["q"], ["c"])
    client.close()


async def test_async_client() -> None:
    transport, seen = scripted((502, {}), body(None, 0.2))
    async with AsyncRewardClient("http://svc", transport=transport, backoff_s=0.0) as client:
        rewards = await client.rewards(["q", "q"], ["a", "b"], group_size=2, policy="zero")
    assert rewards == [0.0, 0.2] and len(seen) == 2
    transport, _ = scripted((503, {}))
    async with AsyncRewardClient(
        "http://svc", transport=transport, deadline_s=0.2, backoff_s=5.0
    ) as client:
        with pytest.raises(RewardDeadlineExceeded):
            await client.score_completions(["q"], ["c"])
