"""Teaching the real judge: a bad case added to the bank moves its verdict on the next request.
This module adds a bank version, so it sorts last (see conftest)."""

from __future__ import annotations

import httpx
import pytest

from tests._helpers import ServerProcess, metric
from tests.vllm.conftest import TOKEN

pytestmark = pytest.mark.vllm


def vllm_metric(judge_port: int, name: str) -> float:
    return metric(f"http://127.0.0.1:{judge_port}", name)


def test_a_new_bad_case_changes_the_real_judge(embedded: ServerProcess) -> None:
    judge_port: int = embedded.judge_port  # type: ignore[attr-defined]
    case = {
        "context": {"query": "I want to buy a router"},
        "suggestions": ["Can you recommend a router?"],
    }
    body = {"items": [case], "options": {"k": 1, "score_mode": "soft"}}
    url = embedded.url + "/v1/score"
    first = httpx.post(url, json=body, timeout=120).json()
    active = first["meta"]["fewshot_version"]  # the shipped bank's, unless a test added one
    v1_score = first["results"][0]["suggestions"][0]
    assert httpx.post(url, json=body, timeout=120).json()["results"][0]["suggestions"][0]["cached"]

    bad_case = {
        "context": case["context"],
        "suggestion": case["suggestions"][0],
        "labels": {"answerability": 1, "factuality": 1, "information_gain": 0},
        "rationale": "repeats the query",
        "source": "online_bad_case",
    }
    added = httpx.post(
        embedded.url + "/v1/fewshot",
        json={"examples": [bad_case]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert added.status_code == 201 and added.json()["version"] == active + 1

    hits = vllm_metric(judge_port, "vllm:prefix_cache_hits_total")
    queries = vllm_metric(judge_port, "vllm:prefix_cache_queries_total")
    second = httpx.post(url, json=body, timeout=120).json()
    assert second["meta"]["fewshot_version"] == active + 1
    v2_score = second["results"][0]["suggestions"][0]
    assert v2_score["cached"] is False  # the v1 score is not served for v2
    # The judge saw its own mistake as an example: the verdict on that case moved.
    assert v2_score["information_gain"] != v1_score["information_gain"]
    assert v2_score["information_gain"] < v1_score["information_gain"]
    # The appended example left the old prompt as a prefix: vLLM reused it from its cache.
    hit_ratio = (vllm_metric(judge_port, "vllm:prefix_cache_hits_total") - hits) / (
        vllm_metric(judge_port, "vllm:prefix_cache_queries_total") - queries
    )
    assert hit_ratio > 0.8, hit_ratio

    pinned = {**body, "options": {**body["options"], "fewshot_version": active}}
    old = httpx.post(url, json=pinned, timeout=120).json()
    assert old["meta"]["fewshot_version"] == active
    assert old["results"][0]["suggestions"][0]["cached"] is True
    assert old["results"][0]["suggestions"][0]["information_gain"] == v1_score["information_gain"]
