"""Metric names against the README's list, and the deployment files checked statically (no
Docker engine here): YAML structure, referenced files, documented variables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from eqs_reward.judge.stub import StubJudge
from tests._helpers import GOOD, GOOD2, SHORT, item, score_body

ROOT = Path(__file__).resolve().parents[2]


def readme_metrics() -> dict[str, tuple[str, set[str]]]:
    text = (ROOT / "docs" / "operators" / "deploy.md").read_text()
    table = text.split("<!-- metrics:start -->", 1)[1].split("<!-- metrics:end -->", 1)[0]
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`eqs_reward_"):
            labels = {x.strip() for x in cells[2].split(",") if x.strip()}
            out[cells[0].strip("`")] = (cells[1], labels)
    return out


def exposed_metrics(text: str) -> dict[str, tuple[str, set[str]]]:
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    labels: dict[str, set[str]] = {name: set() for name in types}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        sample = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
        if not sample:
            continue
        name = sample.group(1)
        family = next(
            (
                f
                for f in types
                if name == f
                or (types[f] == "histogram" and name in (f + "_bucket", f + "_sum", f + "_count"))
            ),
            None,
        )
        if family is None:
            continue
        for key in re.findall(r'(\w+)="', sample.group(3) or ""):
            if key != "le":
                labels[family].add(key)
    return {name: (kind, labels[name]) for name, kind in types.items()}


def test_metrics_match_the_readme_and_the_naming_rules(make_client: Any, stub: StubJudge) -> None:
    client: TestClient = make_client()
    client.post("/v1/score", json=score_body(item("desk", GOOD, GOOD2, SHORT)))
    client.post("/v1/score", json=score_body(item("desk", GOOD, GOOD2, SHORT)))
    stub.behaviour.fail_next = 1
    client.post("/v1/score", json=score_body(item("desk", "A brand new question here?"), k=1))
    client.get("/ready")
    exposed = exposed_metrics(client.get("/metrics").text)
    documented = readme_metrics()
    ours = {name: v for name, v in exposed.items() if name.startswith("eqs_reward_")}
    assert set(ours) == set(documented), set(ours) ^ set(documented)
    for name, (kind, labels) in ours.items():
        doc_kind, doc_labels = documented[name]
        if doc_kind != "info":
            assert kind == doc_kind, name
        if labels:  # families with samples so far: their label names are the documented ones
            assert labels == doc_labels, (name, labels, doc_labels)
        if kind == "counter":
            assert name.endswith("_total"), name
        if "duration" in name or "latency" in name:
            assert name.endswith("_seconds"), name
    # No metric name outside our prefix except the client library's own.
    assert all(n.startswith(("eqs_reward_", "python_", "process_")) for n in exposed)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_file_structure() -> None:
    data = compose()
    services = data["services"]
    assert {"vllm", "reward", "reward-cpu", "redis", "prometheus", "grafana"} <= set(services)
    assert services["vllm"]["profiles"] == ["gpu"] and services["reward"]["profiles"] == ["gpu"]
    assert services["reward-cpu"]["profiles"] == ["cpu"]
    assert "--enable-prefix-caching" in services["vllm"]["command"]
    assert "Qwen3-30B-A3B" in " ".join(services["vllm"]["command"])
    reward_env = services["reward"]["environment"]
    assert json.loads(reward_env["EQS_REWARD_JUDGE_CHAT_TEMPLATE_KWARGS"]) == {
        "enable_thinking": False
    }
    assert "EQS_REWARD_JUDGE_URL" not in services["reward-cpu"]["environment"]
    assert services["reward-cpu"]["build"]["args"]["WITH_EMBEDDED_JUDGE"] == "1"
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], dependency
    for name in ("vllm", "reward", "reward-cpu", "redis", "prometheus"):
        assert services[name]["healthcheck"]["test"], name
    declared_volumes = set(data["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in declared_volumes, (name, source)
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build["context"]
            assert (ROOT / context / "Dockerfile").is_file()


def test_every_compose_variable_is_documented_and_secrets_are_required() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, re.M))
    assert used <= documented, used - documented
    for secret in ("EQS_REWARD_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD", "POSTGRES_PASSWORD"):
        assert re.search(r"\$\{" + secret + r":\?[^}]+\}", text), secret


def test_dockerfile_is_multi_stage_small_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, re.M)
    assert stages == ["build", "runtime"]
    final = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER\s+(?!root|0\b)\S+", final, re.M)
    assert re.search(r"^HEALTHCHECK\s", final, re.M)
    assert not re.search(r"apt-get install|build-essential|gcc", final)
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", text, re.M):
        assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_grafana_provisioning_fits_the_dashboard() -> None:
    base = ROOT / "deploy" / "grafana"
    datasource = yaml.safe_load((base / "provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    provider = yaml.safe_load((base / "provisioning/dashboards/eqs-reward.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((base / "dashboards/eqs-reward.json").read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles)) >= 12
    for panel in dashboard["panels"]:
        if panel["type"] == "row":  # a row only groups the panels below it
            continue
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    assert dashboard["annotations"]["list"][0]["expr"]
    text = json.dumps(dashboard)
    for needle in (
        "vector(0.018)",
        "vllm:prefix_cache_hits_total",
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_waiting",
        "eqs_reward_fewshot_active_version",
    ):
        assert needle in text, needle
