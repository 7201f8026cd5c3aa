"""A real Prometheus scraping the service and its real vLLM judge."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests._helpers import (
    ROOT,
    ServerProcess,
    dashboard_and_alert_expressions,
    free_port,
    wait_http,
)

pytestmark = pytest.mark.vllm


def test_prometheus_scrapes_and_every_dashboard_and_alert_query_evaluates(
    embedded: ServerProcess, tmp_path: Path
) -> None:
    """A real Prometheus scrapes the service and its real vLLM judge under load; every PromQL
    expression of the dashboard and the alert rules evaluates; promtool accepts config and rules."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prometheus and promtool):
        if os.environ.get("CI"):
            pytest.fail("prometheus/promtool missing: 'make setup' installs Debian's package")
        pytest.skip("prometheus not installed (make setup installs it)")
    judge_port: int = embedded.judge_port  # type: ignore[attr-defined]
    rules = tmp_path / "alerts.yml"
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", rules)
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    targets = {"eqs-reward": f"127.0.0.1:{embedded.port}", "vllm": f"127.0.0.1:{judge_port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    for args in (
        ["check", "config", str(config_path)],
        ["check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],
    ):
        checked = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    server = ServerProcess(
        [
            prometheus,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port,
        dict(os.environ),
        tmp_path / "prometheus.log",
    ).start()
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 60)
        stop = threading.Event()

        def load() -> None:  # bounded: at most 40 requests or until stopped
            for n in range(40):
                if stop.is_set():
                    return
                body = {
                    "items": [
                        {
                            "context": {"query": "desk lamp"},
                            "suggestions": [f"Desk lamps under ${20 + n % 4} with USB?"],
                        }
                    ],
                    "options": {"k": 1},
                }
                httpx.post(embedded.url + "/v1/score", json=body, timeout=120)

        worker = threading.Thread(target=load)
        worker.start()
        deadline = time.monotonic() + 120
        while True:
            up = httpx.get(f"{api}/query", params={"query": "up"}).json()["data"]["result"]
            samples = httpx.get(
                f"{api}/query",
                params={"query": "count_over_time(eqs_reward_http_requests_in_flight[1m])"},
            ).json()
            count = samples["data"]["result"]
            if (
                len(up) == 2
                and all(r["value"][1] == "1" for r in up)
                and count
                and float(count[0]["value"][1]) >= 8
            ):
                break
            assert time.monotonic() < deadline, up
            time.sleep(1)
        stop.set()
        worker.join(120)
        empty = []
        for expr in dashboard_and_alert_expressions():
            answer = httpx.get(f"{api}/query", params={"query": expr}).json()
            assert answer["status"] == "success", (expr, answer)
            if not answer["data"]["result"]:
                empty.append(expr)
        # Data, not just valid syntax, for the core panels (alerts may rightly be empty).
        for needle in (
            'eqs_reward_http_requests_total{route="/v1/score"}[1m]',
            "vllm:num_requests_running",
            "vllm:prefix_cache_hits_total",
            "eqs_reward_judge_call_duration_seconds_bucket",
        ):
            assert not any(needle in e for e in empty), (needle, empty)
        rules_state = httpx.get(f"{api}/rules").json()["data"]["groups"][0]["rules"]
        assert len(rules_state) == 6
        assert all(r["health"] in ("ok", "unknown") for r in rules_state), rules_state
    finally:
        server.stop()
