"""``eqs-reward serve --ray`` (``eqs_reward.server.ray_local``): one command starts a local Ray
cluster, a Redis of its own and two replicas of the service, against the session's real
embedded judge; the README's curl works through Ray's proxy unchanged; SIGTERM stops it all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from eqs_reward.server.ray_judge import JUDGE_REPLICA_HEADER
from eqs_reward.server.ray_serve import REPLICA_HEADER
from tests._helpers import (
    ServerProcess,
    docs_block,
    free_port,
    models_dir,
    service_env,
    wait_gone,
    wait_http,
)

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


def _redis_up(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_one_command_serves_the_readme_curl_on_ray_serve(
    embedded: ServerProcess, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = service_env(
        EQS_REWARD_JUDGE_URL=f"http://127.0.0.1:{embedded.judge_port}/v1",  # type: ignore[attr-defined]
        EQS_REWARD_DATA_DIR=str(data),
        EQS_REWARD_DEFAULT_RECIPE="qualeqs-taught",  # the shipped default, as the README has it
    )
    argv = [sys.executable, "-m", "eqs_reward.cli", "serve", "--ray", "--port", str(port)]
    service = ServerProcess(argv, port, env, tmp_path / "ray-serve.log").start()
    try:
        wait_http(service.url + "/ready", 240)
        curl = docs_block("../README.md", "## Quickstart", "bash").replace(":8000", f":{port}")
        answered = subprocess.run(
            ["bash", "-c", curl], capture_output=True, text=True, timeout=120, check=True
        )
        result = json.loads(answered.stdout)
        assert result["meta"]["recipe"]["id"] == "qualeqs-taught"
        (router,) = result["results"]
        assert router["status"] == "ok" and router["format_reward"] == 1.0
        assert [s["status"] for s in router["suggestions"]] == ["ok", "ok", "ok"]
        # the replicas behind the proxy, and the Redis the command started for them
        replicas = {
            httpx.get(service.url + "/health", timeout=10).headers[REPLICA_HEADER]
            for _ in range(20)
        }
        assert len(replicas) == 2
        started = re.search(r"started Redis at (redis://\S+)", service.log.read_text())
        assert started, "the command started no Redis of its own"
        assert _redis_up(started[1]) and (data / "redis" / "appendonlydir").is_dir()
        # SIGTERM to the command alone: it stops Serve, Ray and its Redis itself
        assert service.process is not None
        os.kill(service.process.pid, signal.SIGTERM)
        service.process.wait(timeout=90)
        deadline = time.monotonic() + 30
        while _redis_up(started[1]):
            assert time.monotonic() < deadline, "the command's Redis outlived it"
            time.sleep(0.5)
        with pytest.raises(httpx.HTTPError):
            httpx.get(service.url + "/health", timeout=2)
        wait_gone("EQS_REWARD_DATA_DIR", str(data))  # Ray's processes and the replicas too
    finally:
        service.stop()
        print(service.log.read_text(errors="replace")[-3000:])


def test_the_embedded_judge_as_a_fleet_behind_serves_router(tmp_path: Path) -> None:
    """``--judge-replicas 2`` with no judge URL: two embedded vLLM judges, each a Serve
    replica, reached by the service's replicas through Ray's proxy; both answer calls."""
    port = free_port()
    data = tmp_path / "data"
    env = service_env(
        EQS_REWARD_DATA_DIR=str(data),
        EQS_REWARD_MODEL_CACHE_DIR=str(models_dir()),
        EQS_REWARD_DEFAULT_RECIPE="qualeqs-taught",
    )
    argv = [sys.executable, "-m", "eqs_reward.cli", "serve", "--ray", "--port", str(port)]
    argv += ["--judge-replicas", "2"]
    service = ServerProcess(argv, port, env, tmp_path / "ray-fleet.log").start()
    try:
        # the command says it is ready once every judge replica answers
        deadline = time.monotonic() + 600
        while "eqs-reward on Ray Serve ready" not in service.log.read_text(errors="replace"):
            assert service.process is not None and service.process.poll() is None
            assert time.monotonic() < deadline, "the fleet did not start"
            time.sleep(2)
        judges = {
            httpx.get(service.url + "/judge/v1/models", timeout=30).headers[JUDGE_REPLICA_HEADER]
            for _ in range(20)
        }
        assert len(judges) == 2
        body = {
            "items": [
                {
                    "context": {"query": "standing desk"},
                    "suggestions": [f"Standing desks with {n} drawers under $400?"],
                }
                for n in range(2, 10)
            ],
            "options": {"k": 1, "score_mode": "soft"},
        }
        answer = httpx.post(service.url + "/v1/score", json=body, timeout=300).json()
        assert [r["suggestions"][0]["status"] for r in answer["results"]] == ["ok"] * 8
        # stopped as a whole process group (Ray's processes too) and killed when slow: the
        # command's Redis and the judges' vLLM processes (engine and worker included), in
        # sessions of their own, still go with it
        started = re.search(r"started Redis at (redis://\S+)", service.log.read_text())
        assert started and _redis_up(started[1])
        service.stop()
        service.kill()
        deadline = time.monotonic() + 30
        while _redis_up(started[1]):
            assert time.monotonic() < deadline, "the command's Redis outlived it"
            time.sleep(0.5)
        wait_gone("EQS_REWARD_DATA_DIR", str(data))
    finally:
        service.stop()
        print(service.log.read_text(errors="replace")[-3000:])
