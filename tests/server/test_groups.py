"""Group memory: a sample scored on its own gets its group's mean when the judge failed on it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from eqs_reward.judge.stub import StubJudge
from eqs_reward.server.groups import GroupFill, GroupMemory, RedisGroupMemory
from tests._helpers import GOOD, GOOD2, SHORT

THIRD = "Which blenders are quiet enough for 6 am?"


def completion(*options: str) -> str:
    return json.dumps({"options": list(options)})


async def test_memory_is_bounded_and_forgets() -> None:
    memory = GroupMemory(max_keys=3, per_key=2, ttl_s=0.2)
    for n in range(10):
        memory.record(f"k{n}", 1.0)
    assert len(memory) == 3  # least recently used keys dropped
    tokens = [memory.record("k9", r) for r in (0.1, 0.2, 0.3)]
    fill = await memory.fill("k9", tokens[-1], 3, time.monotonic(), 0)
    assert fill.seen == 1 and fill.mean == 0.2  # per_key=2 kept the last two outcomes
    await asyncio.sleep(0.25)
    fill = await memory.fill("k9", tokens[-1], 3, time.monotonic(), 0)
    assert fill.seen == 0 and fill.mean is None  # past the TTL


def test_a_failed_sample_waits_for_its_siblings(make_client: Any, stub: StubJudge) -> None:
    client = make_client(judge_max_retries=0)
    stub.behaviour.fail_pattern = "FAILME"
    app = client.app

    async def four_requests() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://svc", timeout=30
        ) as http:

            async def one(text: str, delay: float) -> dict[str, Any]:
                await asyncio.sleep(delay)
                body = {
                    "items": [{"context": {"query": "blender"}, "completion": text}],
                    "options": {"score_mode": "soft", "group_size": 4, "group_wait_s": 10},
                }
                response = await http.post("/v1/score", json=body)
                assert response.status_code == 200, response.text
                return dict(response.json()["results"][0])

            return await asyncio.gather(
                one(completion("FAILME a?", "FAILME b?", "FAILME c?"), 0.0),  # fails first
                one(completion(GOOD, GOOD2, THIRD), 0.3),  # its siblings come later
                one(completion("Blenders?", "Glass ones?", "Quiet ones?"), 0.6),
                one(completion(GOOD, GOOD2, THIRD), 0.9),
            )

    failed, *siblings = client.portal.call(four_requests)
    judged = [s["reward"] for s in siblings]
    assert failed["status"] == "failed" and failed["reward"] is None
    assert failed["group"] == {"mean": sum(judged) / 3, "seen": 3, "judged": 3}
    assert all("group" not in s for s in siblings)  # only failed items carry it
    # Without group_size nothing waits and nothing is added to the response.
    alone = client.post(
        "/v1/score",
        json={"items": [{"context": {"query": "b"}, "suggestions": ["FAILME x?", SHORT]}]},
    ).json()["results"][0]
    assert "group" not in alone and alone["reward"] is None


async def test_the_redis_memory_is_shared_by_replicas(redis_url: str, redis_prefix: str) -> None:
    """Two replicas' memories on one real Redis: the failed sample recorded through one gets
    the mean of its siblings recorded through the other; a Redis that is down costs the fill
    (unknown), never the request."""
    import redis.asyncio

    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(2)]
    one, other = (RedisGroupMemory(c, redis_prefix) for c in clients)
    try:
        waiting = asyncio.ensure_future(other.fill_failed(["g"], [None], 3, 0.0, 5.0))
        await asyncio.sleep(0.2)  # the failed sample waits; its siblings come in elsewhere
        assert await one.fill_failed(["g", "g"], [0.2, 0.4], 3, 0.0, 0.0) == {}
        fill = (await waiting)[0]
        assert (fill.mean, fill.seen, fill.judged) == (pytest.approx(0.3), 2, 2)
        down = RedisGroupMemory(redis.asyncio.Redis(port=1, socket_connect_timeout=0.2), "x:")
        assert await down.fill_failed(["g", "g"], [0.5, None], 2, 0.0, 0.1) == {
            1: GroupFill(None, 0, 0)
        }
    finally:
        for client in clients:
            await client.aclose()
