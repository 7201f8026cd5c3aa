"""The Redis cache tier with real Redis servers and real service processes: sharing between
replicas, Redis killed mid-load, Redis back. And the bounded judge queue (429)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from eqs_reward.judge.stub import StubJudge
from tests._helpers import (
    GOOD,
    GOOD2,
    RedisServer,
    ServerProcess,
    item,
    metric,
    score_body,
    service_process,
    started_threads,
    stub_judge_process,
    wait_http,
)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def judge(tmp_path: Path) -> Iterator[ServerProcess]:
    process = stub_judge_process(tmp_path).start()
    wait_http(process.url + "/health", 30)
    yield process
    process.stop()


def judge_calls(judge: ServerProcess) -> int:
    return int(httpx.get(judge.url + "/_stub/stats").json()["calls"])


def replica(tmp_path: Path, judge: ServerProcess, redis_url: str, name: str) -> ServerProcess:
    folder = tmp_path / name
    folder.mkdir()
    return service_process(
        folder,
        EQS_REWARD_JUDGE_URL=judge.url + "/v1",
        EQS_REWARD_JUDGE_MODEL="stub",
        EQS_REWARD_REDIS_URL=redis_url,
        EQS_REWARD_REDIS_KEY_PREFIX=f"eqs-test-{name}-{time.time_ns()}:",
        EQS_REWARD_REDIS_TIMEOUT_S="0.2",
    ).start()


GROUP = score_body(
    item(
        "standing desk",
        "Electric desks under $300 with memory presets?",
        "Which desks hold two 32 inch monitors?",
        "Any desks?",
    ),
)


def test_a_score_cached_by_one_replica_is_served_by_another(
    tmp_path: Path, judge: ServerProcess, own_redis: RedisServer
) -> None:
    prefix = f"eqs-shared-{time.time_ns()}:"
    replicas = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        replicas.append(
            service_process(
                folder,
                EQS_REWARD_JUDGE_URL=judge.url + "/v1",
                EQS_REWARD_JUDGE_MODEL="stub",
                EQS_REWARD_REDIS_URL=own_redis.url,
                EQS_REWARD_REDIS_KEY_PREFIX=prefix,
            ).start()
        )
    a, b = replicas
    try:
        wait_http(a.url + "/ready", 60)
        wait_http(b.url + "/ready", 60)
        first = httpx.post(a.url + "/v1/score", json=GROUP, timeout=30).json()
        assert judge_calls(judge) == 3
        time.sleep(0.3)  # the write-behind flush
        second = httpx.post(b.url + "/v1/score", json=GROUP, timeout=30).json()
        assert judge_calls(judge) == 3  # no judge call: replica b read replica a's scores
        assert all(s["cached"] for s in second["results"][0]["suggestions"])
        assert second["results"][0]["reward"] == first["results"][0]["reward"]
        assert metric(b.url, 'eqs_reward_cache_hits_total{tier="redis"}') == 3.0
        assert metric(b.url, 'eqs_reward_cache_misses_total{tier="memory"}') == 3.0
        keys = redis.Redis(port=own_redis.port).keys(prefix + "score:*")
        assert len(keys) == 3
        assert 0 < redis.Redis(port=own_redis.port).ttl(keys[0]) <= 7 * 24 * 3600
    finally:
        for process in replicas:
            process.stop()


def test_redis_killed_mid_load_fails_no_request_and_is_used_again(
    tmp_path: Path, judge: ServerProcess, own_redis: RedisServer
) -> None:
    service = replica(tmp_path, judge, own_redis.url, "kill")
    statuses: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        with httpx.Client(base_url=service.url, timeout=30) as client:
            while not stop.is_set():
                body = score_body(
                    item(f"query {worker}", f"Suggestion {worker} {n} with a budget?", GOOD), k=2
                )
                try:
                    response = client.post("/v1/score", json=body)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                statuses.append(response.json()["results"][0]["status"])
                n += 1

    try:
        wait_http(service.url + "/ready", 60)
        threads = started_threads(load, 4)
        time.sleep(1.0)
        own_redis.kill()
        during = len(statuses)
        time.sleep(1.5)
        assert len(statuses) > during  # still scoring while Redis is gone
        ready = httpx.get(service.url + "/ready").json()
        assert ready["status"] == "ready" and ready["checks"]["redis_cache"].startswith("down")
        assert metric(service.url, "eqs_reward_cache_redis_up") == 0.0
        own_redis.start()  # back on the same port
        fresh = redis.Redis(port=own_redis.port)
        deadline = time.monotonic() + 40
        # Used again: the breaker closes and new scores are written to the restarted Redis.
        while metric(service.url, "eqs_reward_cache_redis_up") != 1.0 or fresh.dbsize() == 0:
            assert time.monotonic() < deadline, "redis never used again"
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert errors == [] and set(statuses) == {"ok"}
        assert metric(service.url, 'eqs_reward_cache_errors_total{operation="get"}') >= 1
    finally:
        stop.set()
        service.stop()


def test_queue_bound_answers_429_with_retry_after(make_client: Any, stub: StubJudge) -> None:
    client = make_client(
        judge_concurrency=1, judge_queue_max=2, request_deadline_s=3.0, judge_timeout_s=10.0
    )
    stub.behaviour.delay_s = 0.5
    app = client.app

    async def flood() -> list[tuple[int, dict[str, str], float, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://svc", timeout=30
        ) as http:

            async def one(n: int) -> tuple[int, dict[str, str], float, Any]:
                started = time.monotonic()
                response = await http.post(
                    "/v1/score", json=score_body(item("q", f"Suggestion number {n} here?"), k=1)
                )
                return (
                    response.status_code,
                    dict(response.headers),
                    time.monotonic() - started,
                    response.json(),
                )

            import asyncio

            return await asyncio.gather(*[one(n) for n in range(12)])

    results = client.portal.call(flood)
    codes = [code for code, *_ in results]
    assert codes.count(200) == 3 and codes.count(429) == 9  # 1 running + 2 queued
    for code, headers, elapsed, body in results:
        assert elapsed < 3.0 + 1.0  # nobody runs past the deadline
        if code == 429:
            assert int(headers["retry-after"]) >= 1
            assert body["error"]["type"] == "overloaded"
    assert "eqs_reward_http_overloaded_total 9.0" in client.get("/metrics").text
    # Cached and in-flight work is still served while the queue is full.
    again = client.post("/v1/score", json=score_body(item("q", "Suggestion number 0 here?"), k=1))
    assert again.status_code == 200


def test_redis_bank_down_keeps_scoring_on_the_last_active_version(
    tmp_path: Path, judge: ServerProcess, own_redis: RedisServer
) -> None:
    service = service_process(
        tmp_path,
        EQS_REWARD_JUDGE_URL=judge.url + "/v1",
        EQS_REWARD_JUDGE_MODEL="stub",
        EQS_REWARD_REDIS_URL=own_redis.url,
        EQS_REWARD_FEWSHOT_STORE="redis",
    ).start()
    try:
        wait_http(service.url + "/ready", 60)
        first = httpx.post(service.url + "/v1/score", json=GROUP, timeout=30)
        assert first.json()["meta"]["fewshot_version"] == 1
        own_redis.kill()
        body = score_body(item("lamp", "Floor lamps under $80 with a dimmer?"), k=1)
        during = httpx.post(service.url + "/v1/score", json=body, timeout=30)
        assert during.status_code == 200, during.text
        assert during.json()["results"][0]["status"] == "ok"
        assert during.json()["meta"]["fewshot_version"] == 1
        ready = httpx.get(service.url + "/ready")
        assert ready.status_code == 503 and "fewshot_bank" in ready.json()["error"]["message"]
        writes = httpx.get(service.url + "/v1/fewshot/versions")
        assert writes.status_code == 503 and writes.json()["error"]["type"] == "unavailable"
    finally:
        service.stop()


def _together(clients: list[Any], body: dict[str, Any]) -> list[Any]:
    """The same request to every client at once (replicas of one service)."""
    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(lambda client: client.post("/v1/score", json=body), clients))


def test_two_replicas_judge_a_new_suggestion_once(
    make_client: Any, stub: StubJudge, redis_url: str, redis_prefix: str
) -> None:
    """In-flight deduplication across replicas: both need a new suggestion at once; the first
    claims the judge call in Redis, the other waits for its score instead of calling again."""
    stub.behaviour.delay_s = 0.5
    shared = {"redis_url": redis_url, "redis_key_prefix": redis_prefix}
    replicas = [make_client(**shared), make_client(**shared)]
    body = score_body(item("standing desk", GOOD), k=1, score_mode="soft")
    answers = _together(replicas, body)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    rewards = {a.json()["results"][0]["reward"] for a in answers}
    assert len(rewards) == 1 and None not in rewards
    assert stub.calls == 1
    claims = redis.Redis.from_url(redis_url).keys(redis_prefix + "claim:*")
    assert claims == []  # the claim ended when the score landed


def test_when_the_claimed_call_fails_the_waiting_replica_judges_it_itself(
    make_client: Any, stub: StubJudge, redis_url: str, redis_prefix: str
) -> None:
    stub.behaviour.delay_s = 0.3
    stub.behaviour.fail_next = 1  # the first call (the claimer's) fails
    shared = {"redis_url": redis_url, "redis_key_prefix": redis_prefix, "judge_max_retries": 0}
    replicas = [make_client(**shared), make_client(**shared)]
    body = score_body(item("standing desk", GOOD2), k=1, score_mode="soft")
    statuses = sorted(a.json()["results"][0]["status"] for a in _together(replicas, body))
    assert statuses == ["failed", "ok"] and stub.calls == 2
