"""The load generator and its traffic model, against a real service process (stub judge)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from loadtest.loadgen import main as loadgen
from loadtest.traffic import TrafficModel, load_queries, percentile, repetition
from tests._helpers import ServerProcess


def test_traffic_model_is_grpo_shaped_and_uses_real_queries() -> None:
    queries = load_queries()
    assert len(queries) > 400  # WANDS + ESCI
    model = TrafficModel(group_size=8, k=3, pool=10, prompts=5, seed=1)
    group = model.group(0)
    assert len(group["items"]) == 8
    assert {i["context"]["query"] for i in group["items"]} <= set(queries)
    for item in group["items"]:
        options = json.loads(item["completion"])["options"]
        assert len(options) == 3 and len(set(options)) == 3
    total, distinct = repetition(group)
    assert total == 24 and distinct < total  # a policy repeats itself within a group
    assert model.group(5)["items"][0]["context"] == group["items"][0]["context"]  # epochs
    assert percentile([1, 2, 3, 4], 0.5) == 2.5


def test_loadgen_reports_throughput_latency_and_savings(
    tmp_path: Path, running_service: Callable[..., ServerProcess]
) -> None:
    service = running_service()
    out = tmp_path / "report.json"
    code = loadgen(
        [
            "--url",
            service.url,
            "--concurrency",
            "4",
            "--requests",
            "40",
            "--duration",
            "30",
            "--prompts",
            "8",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["requests"] == 40 and report["status_counts"] == {"200": 40}
    assert report["qps_requests"] > 0 and report["suggestions"] == 40 * 24
    assert report["latency_s"]["p50"] <= report["latency_s"]["p99"]
    assert report["request_failure_rate"] == 0 and report["suggestion_failure_rate"] == 0
    assert 0 < report["judge_calls"] < report["suggestions"]
    assert report["judge_calls_saved"] == report["suggestions"] - report["judge_calls"]
    assert report["cache"]["memory"]["hits"] > 0  # the prompts came back
    rate = loadgen(["--url", service.url, "--rate", "20", "--requests", "10", "--duration", "10"])
    assert rate == 0
