"""An external judge dies in the middle of a request and comes back: real processes, real sockets.

The service runs as ``eqs-reward serve`` against a stub judge process; the stub is SIGKILLed while
it holds a request, then started again on the same port.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests._helpers import free_port, service_process, stub_judge_process, wait_http

BODY = {
    "items": [
        {
            "context": {"query": "standing desk"},
            "suggestions": [
                "Electric standing desks under $300 with memory presets?",
                "Which desks hold 150 lb monitors on a 48 inch top?",
            ],
        }
    ],
    "options": {"k": 2},
}


def test_judge_killed_mid_request_then_back(tmp_path: Path) -> None:
    port = free_port()
    judge = stub_judge_process(tmp_path, port).start()
    service = service_process(
        tmp_path,
        EQS_REWARD_JUDGE_URL=f"http://127.0.0.1:{port}/v1",
        EQS_REWARD_JUDGE_MODEL="stub",
        EQS_REWARD_JUDGE_BACKOFF_INITIAL_S="0.05",
        EQS_REWARD_JUDGE_BACKOFF_MAX_S="0.2",
    ).start()
    try:
        wait_http(judge.url + "/health", 30)
        wait_http(service.url + "/ready", 60)
        httpx.post(judge.url + "/_stub/config", json={"delay_s": 5.0})
        answer: dict[str, httpx.Response] = {}
        thread = threading.Thread(
            target=lambda: answer.update(
                r=httpx.post(service.url + "/v1/score", json=BODY, timeout=60)
            )
        )
        thread.start()
        deadline = time.monotonic() + 10
        # Wait until the judge holds the first call: on a new prompt prefix it goes alone and
        # the other waits for it to end (server/_judge_pool.py), so it meets a dead judge.
        while time.monotonic() < deadline:
            if httpx.get(judge.url + "/_stub/stats").json()["calls"] >= 1:
                break
            time.sleep(0.05)
        judge.kill()
        thread.join(60)
        response = answer["r"]
        assert response.status_code == 200, response.text
        result = response.json()["results"][0]
        assert result["status"] == "failed" and result["reward"] is None
        reasons = {s["reason"] for s in result["suggestions"]}
        assert reasons <= {"transport", "timeout", "server_error"}, reasons
        ready = httpx.get(service.url + "/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["judge"].startswith("unreachable")

        judge = stub_judge_process(tmp_path, port).start()  # back, same address
        wait_http(judge.url + "/health", 30)
        wait_http(service.url + "/ready", 30)
        response = httpx.post(service.url + "/v1/score", json=BODY, timeout=60)
        assert response.json()["results"][0]["status"] == "ok"
        metrics = httpx.get(service.url + "/metrics").text
        assert 'eqs_reward_judge_calls_total{outcome="failed"} 2.0' in metrics
        assert "eqs_reward_score_failures_total{reason=" in metrics
    finally:
        service.stop()
        judge.stop()
