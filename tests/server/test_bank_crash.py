"""Kill the service with SIGKILL while many adds are in flight; after a restart every add that
was acknowledged with 201 is present, and every version reads back as acknowledged."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests._helpers import service_process, started_threads, wait_http

TOKEN = "crash-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def bad_case(writer: int, n: int) -> dict[str, object]:
    return {
        "context": {"query": f"crash query {writer}"},
        "suggestion": f"Bad case {writer}-{n} with a made-up spec?",
        "labels": {"answerability": 1, "factuality": 0, "information_gain": 1},
        "source": "online_bad_case",
    }


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_sigkill_loses_no_acknowledged_add(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {
        "EQS_REWARD_ADMIN_TOKEN": TOKEN,
        "EQS_REWARD_JUDGE_URL": "http://127.0.0.1:9/v1",  # the bank needs no judge
        "EQS_REWARD_FEWSHOT_STORE": backend,
    }
    if backend == "redis":
        env["EQS_REWARD_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["EQS_REWARD_REDIS_KEY_PREFIX"] = request.getfixturevalue("redis_prefix")
    service = service_process(tmp_path, **env).start()
    acks: list[tuple[int, list[str]]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(index: int) -> None:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            n = 0
            while not stop.is_set():
                try:
                    response = client.post(
                        "/v1/fewshot", json={"examples": [bad_case(index, n)]}, headers=AUTH
                    )
                except httpx.HTTPError:
                    return  # the service is gone
                if response.status_code == 201:
                    body = response.json()
                    with lock:
                        acks.append((body["version"], body["added"]))
                n += 1

    try:
        wait_http(service.url + "/health", 60)
        threads = started_threads(writer, 8)
        deadline = time.monotonic() + 20
        while len(acks) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        service.kill(9)  # writers still in flight
        stop.set()
        for thread in threads:
            thread.join(15)
        assert len(acks) >= 40

        service = service_process(tmp_path, service.port, **env).start()
        wait_http(service.url + "/health", 60)
        versions = [v for v, _ in acks]
        assert len(set(versions)) == len(versions)  # no number acknowledged twice
        with httpx.Client(base_url=service.url, timeout=10) as client:
            active = client.get("/v1/fewshot").json()
            active_ids = {e["id"] for e in active["examples"]}
            for version, added in acks:
                assert set(added) <= active_ids
                now = [
                    e["id"]
                    for e in client.get("/v1/fewshot", params={"version": version}).json()[
                        "examples"
                    ]
                ]
                before = [
                    e["id"]
                    for e in client.get("/v1/fewshot", params={"version": version - 1}).json()[
                        "examples"
                    ]
                ]
                assert now == before + added, version
            listed = client.get("/v1/fewshot/versions").json()["versions"]
            assert [v["version"] for v in listed] == list(range(1, len(listed) + 1))
    finally:
        stop.set()
        service.stop()
