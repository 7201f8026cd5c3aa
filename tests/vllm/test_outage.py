"""A judge that dies under the service: failed results, then a restart by the service itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import httpx
import pytest

from eqs_reward.judge._guard import group_members
from tests._helpers import ServerProcess, metric, wait_http

pytestmark = pytest.mark.vllm


def _vllm_child_pid(judge_port: int) -> int:
    """vLLM's API server (not the guard whose command line holds its command)."""
    out = subprocess.run(
        ["pgrep", "-f", rf"^\S+ -m vllm.entrypoints.openai.api_server .*--port {judge_port}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert out, "no vLLM child found"
    return int(out[0])


def test_dead_judge_gives_failed_results_then_is_restarted(embedded: ServerProcess) -> None:
    judge_port: int = embedded.judge_port  # type: ignore[attr-defined]
    pid = _vllm_child_pid(judge_port)
    group = os.getpgid(pid)
    os.kill(pid, signal.SIGKILL)  # a crash: vLLM's server dies, its engine and worker do not
    body = {
        "items": [{"context": {"query": "tent"}, "suggestions": ["4-person tents under $150?"]}],
        "options": {"k": 1},
    }
    response = httpx.post(embedded.url + "/v1/score", json=body, timeout=120)
    assert response.status_code == 200
    result = response.json()["results"][0]
    assert result["status"] == "failed" and result["suggestions"][0]["status"] == "failed"
    ready = httpx.get(embedded.url + "/ready", timeout=30)
    assert ready.status_code == 503 and "judge" in ready.json()["error"]["message"]
    # The service restarts its judge by itself; scoring resumes without restarting the service.
    wait_http(embedded.url + "/ready", 900)
    assert _vllm_child_pid(judge_port) != pid
    assert not group_members(group), "the dead judge's engine and worker outlived it"
    response = httpx.post(embedded.url + "/v1/score", json=body, timeout=120)
    assert response.json()["results"][0]["status"] == "ok"
    assert metric(embedded.url, "eqs_reward_embedded_judge_restarts_total") >= 1
    assert re.search(r"embedded judge died", embedded.log.read_text(errors="replace"))
