"""The judge path against the real thing: ``eqs-reward serve`` with no judge URL starts vLLM's CPU
server with SmolLM2-135M as a child, and scores through it. One service (and judge) for the whole
session, shared by every module here.

Order matters once: ``test_teaching.py`` adds a bank version, and sorts after the modules that
measure the shipped bank (pytest runs a folder's modules by name)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests._helpers import ServerProcess, free_port, models_dir, service_process, wait_http

README_BODY = {
    "items": [
        {
            "id": "router-1",
            "context": {"query": "I want to buy a router"},
            "suggestions": [
                "Do you have TP-Link routers under $100 that support Wi-Fi 6?",
                "What kind of router do you want to buy?",
                "Is there a router that gives 10 Gbps over 3G?",
            ],
        },
        {
            "id": "flowers-1",
            "context": {"query": "flowers"},
            "completion": '{"options": ["Which flowers are good gifts for elderly parents?", '
            '"Roses under $30 delivered tomorrow?", "Will it rain tomorrow?"]}',
        },
    ],
    "options": {"k": 3, "score_mode": "binary"},
}


TOKEN = "vllm-test-token"


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("embedded")
    judge_port = free_port()
    service = service_process(
        tmp,
        EQS_REWARD_MODEL_CACHE_DIR=str(models_dir()),
        EQS_REWARD_ADMIN_TOKEN=TOKEN,
        EQS_REWARD_EMBEDDED_PORT=str(judge_port),
        EQS_REWARD_EMBEDDED_RESTART_BACKOFF_MAX_S="2",
        EQS_REWARD_JUDGE_BACKOFF_INITIAL_S="0.1",
    ).start()
    service.judge_port = judge_port  # type: ignore[attr-defined]
    try:
        wait_http(service.url + "/health", 60)
        # Before the judge is up, scoring answers 503 with Retry-After (not failed results).
        early = httpx.post(service.url + "/v1/score", json=README_BODY, timeout=30)
        assert early.status_code == 503, early.text
        assert early.headers["retry-after"] and early.json()["error"]["type"] == "unavailable"
        wait_http(service.url + "/ready", 900)
        yield service
    finally:
        service.stop()
        log = service.log.read_text(errors="replace")[-3000:]
        print(log)
    # The child went down with the service.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{judge_port}/health", timeout=2)
