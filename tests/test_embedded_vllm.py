"""The judge path against the real thing: ``eqs-reward serve`` with no judge URL starts vLLM's CPU
server with SmolLM2-135M as a child, and scores through it. Started once for this module."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import (
    JUDGE_CASES,
    ROOT,
    ServerProcess,
    free_port,
    models_dir,
    service_process,
    wait_http,
)
from tests.server.test_observability import dashboard_and_alert_expressions

pytestmark = pytest.mark.vllm

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


@pytest.fixture(scope="module")
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


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_readme_example_is_graded_by_the_real_judge(embedded: ServerProcess) -> None:
    response = httpx.post(embedded.url + "/v1/score", json=README_BODY, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["meta"]["judge_model"] == "smollm2-135m-instruct"
    assert data["meta"]["prompt_version"] == "qualeqs-v2"
    assert [r["id"] for r in data["results"]] == ["router-1", "flowers-1"]
    for result in data["results"]:
        assert result["status"] == "ok" and result["format_reward"] == 1.0
        rewards = [s["reward"] for s in result["suggestions"]]
        assert len(rewards) == 3
        for suggestion in result["suggestions"]:
            for dimension in ("answerability", "factuality", "information_gain"):
                assert suggestion[dimension] in (0.0, 1.0)
        mean = sum(rewards) / 3
        assert result["reward"] == pytest.approx(mean)
        assert result["disagreement"] == pytest.approx(sum((r - mean) ** 2 for r in rewards) / 3)


def test_soft_scores_come_from_real_logprobs(embedded: ServerProcess) -> None:
    body = {**README_BODY, "options": {"k": 3, "score_mode": "soft"}}
    response = httpx.post(embedded.url + "/v1/score", json=body, timeout=120)
    assert response.status_code == 200
    values = [
        s[d]
        for r in response.json()["results"]
        for s in r["suggestions"]
        for d in ("answerability", "factuality", "information_gain")
    ]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert any(0.0 < v < 1.0 for v in values), values  # probabilities, not hard verdicts
    # Every real answer passes the logprob checks (issue 20): none is read as malformed.
    statuses = [s["status"] for r in response.json()["results"] for s in r["suggestions"]]
    assert set(statuses) == {"ok"}, response.text


def test_the_end_to_end_benchmark_runs_in_quick_mode(
    embedded: ServerProcess, tmp_path: Path
) -> None:
    """The one benchmark that needs vLLM, against this session's judge (issue 20: every
    benchmark's quick mode runs in CI)."""
    from loadtest import bench

    results = tmp_path / "RESULTS.md"
    judge = f"http://127.0.0.1:{embedded.judge_port}/v1"  # type: ignore[attr-defined]
    argv = ["--quick", "--only", "e2e", "--judge-url", judge, "--results", str(results)]
    assert bench.main(argv) == 0
    text = results.read_text()
    assert "<!-- section:e2e -->" in text and "speed-up:" in text


FLOORS = ROOT / "loadtest" / "fidelity" / "floors.json"


def _fidelity_report(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``eqs-reward fidelity report`` against ``url``, held to the committed floors."""
    command = [sys.executable, "-m", "eqs_reward.cli", "fidelity", "report", "--url", url]
    return subprocess.run(
        [*command, "--floors", str(FLOORS), *argv],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_the_default_reward_holds_its_fidelity_floors_and_the_gate_refuses_a_worse_one(
    embedded: ServerProcess, tmp_path: Path
) -> None:
    """Issue 21's gate on the real judge: the shipped default recipe measured on the labeled
    cases it was not fit on stays above the committed floors; the same command refuses a
    recipe change that lowers them (the taught head's weight moved to the judge)."""
    # The shipped default, named: the fixture's service defaults to qualeqs like every test's.
    out = str(tmp_path / "fidelity")
    report = _fidelity_report(embedded.url, "--recipe", "qualeqs-taught", "--out", out)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    measured = json.loads((tmp_path / "fidelity" / "report.json").read_text())
    assert {r["recipe"] for r in measured} == {"qualeqs-taught"}
    assert all(r["scored"] == r["cases"] for r in measured)
    validation = next(r for r in measured if r["split"] == "validation")
    assert validation["median_reward_good"] > validation["p75_reward_others"]

    # A deliberately worse change: the default recipe's weights moved to the judge alone.
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    recipe = prompts / "recipes" / "qualeqs-taught.toml"
    text = re.sub(r"weights = \[[^\]]*\]", "weights = [1, 0]", recipe.read_text())
    recipe.write_text(text)
    worse = service_process(
        tmp_path,
        EQS_REWARD_JUDGE_URL=f"http://127.0.0.1:{embedded.judge_port}/v1",  # type: ignore[attr-defined]
        EQS_REWARD_PROMPTS_DIR=str(prompts),
        EQS_REWARD_DEFAULT_RECIPE="qualeqs-taught",
    ).start()
    try:
        wait_http(worse.url + "/ready", 120)
        refused = _fidelity_report(
            worse.url, "--split", "validation", "--prompts-dir", str(prompts)
        )
    finally:
        worse.stop()
    assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert "fidelity gate: qualeqs-taught (soft, validation): product ROC AUC" in refused.stderr


@pytest.mark.parametrize("mode", ["soft", "binary"])
def test_grpo_groups_scored_by_the_default_reward_have_spread(
    embedded: ServerProcess, mode: str
) -> None:
    """A GRPO group whose rewards are all equal teaches nothing. GRPO-shaped groups of
    well-formed completions on real shopper queries (8 completions of 3 suggestions, drawn from
    a per-prompt pool, as a policy repeats itself): under the default recipe fewer than half have
    zero spread, in soft and in binary mode (the judge alone in binary mode gave every group the
    same reward)."""
    from loadtest.traffic import TrafficModel

    model = TrafficModel(group_size=8, k=3, pool=10, prompts=6, seed=21)
    groups = [model.group(n) for n in range(6)]
    spreads = []
    for group in groups:
        body = {**group, "options": {"k": 3, "score_mode": mode, "recipe": "qualeqs-taught"}}
        response = httpx.post(embedded.url + "/v1/score", json=body, timeout=600)
        assert response.status_code == 200, response.text[:500]
        rewards = [r["reward"] for r in response.json()["results"]]
        assert all(r is not None for r in rewards)
        spreads.append(max(rewards) - min(rewards))
    zero = sum(spread == 0 for spread in spreads) / len(spreads)
    assert zero < 0.5, spreads


def test_repeated_suggestions_cost_one_real_judge_call_each(embedded: ServerProcess) -> None:
    before = metric(embedded.url, "eqs_reward_judge_calls_total")
    group = [
        "Any cordless drills under $60 with two batteries?",
        "Which drills have a hammer mode for concrete?",
        "Do you sell a drill that runs forever without charging?",
    ]
    items = [{"context": {"query": "power drill"}, "suggestions": group} for _ in range(8)]
    response = httpx.post(embedded.url + "/v1/score", json={"items": items}, timeout=300)
    assert response.status_code == 200
    assert all(r["status"] == "ok" for r in response.json()["results"])
    assert metric(embedded.url, "eqs_reward_judge_calls_total") - before == 3


def test_the_simulated_shopper_head_runs_on_the_real_judge(embedded: ServerProcess) -> None:
    """The blended recipe on the real embedded judge: the shopper's P(tap) from the digit's
    logprobs, GQR's list formula over them, one judge call per head and new suggestion."""
    calls = "eqs_reward_judge_calls_total"
    before = metric(embedded.url, calls)
    body = {
        "items": [
            {
                "context": {"query": "I want to buy a router", "profile": "gamer, big flat"},
                "suggestions": [
                    "Which Wi-Fi 6 mesh routers cover a 150 square meter flat?",
                    "What kind of router do you want to buy?",
                    "Any ASUS gaming routers under $200?",
                ],
            }
        ],
        "options": {"k": 3, "score_mode": "soft", "recipe": "qualeqs-blend"},
    }
    response = httpx.post(embedded.url + "/v1/score", json=body, timeout=300)
    assert response.status_code == 200, response.text
    data = response.json()
    (result,) = data["results"]
    assert result["status"] == "ok" and data["meta"]["recipe"]["id"] == "qualeqs-blend"
    taps = [s["signals"]["shopper.tap"] for s in result["suggestions"]]
    assert all(0.0 <= t <= 1.0 for t in taps)
    assert any(0.0 < t < 1.0 for t in taps), taps  # a probability, not a hard digit
    any_tap = 1 - (1 - taps[0]) * (1 - taps[1]) * (1 - taps[2])
    assert result["set_signals"]["shopper.any_tap"] == pytest.approx(any_tap)
    echo = result["suggestions"][1]["signals"]["exclusivity.novelty"]
    assert echo < 0.2  # the echo of the query, whatever the small judge thought of it
    assert metric(embedded.url, calls) - before == 6  # 3 judge + 3 shopper calls
    head = 'eqs_reward_head_duration_seconds_count{head="shopper"}'
    assert metric(embedded.url, head) >= 3


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
    assert first["meta"]["fewshot_version"] == 1
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
    assert added.status_code == 201 and added.json()["version"] == 2

    hits = vllm_metric(judge_port, "vllm:prefix_cache_hits_total")
    queries = vllm_metric(judge_port, "vllm:prefix_cache_queries_total")
    second = httpx.post(url, json=body, timeout=120).json()
    assert second["meta"]["fewshot_version"] == 2
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

    pinned = {**body, "options": {**body["options"], "fewshot_version": 1}}
    old = httpx.post(url, json=pinned, timeout=120).json()
    assert old["meta"]["fewshot_version"] == 1
    assert old["results"][0]["suggestions"][0]["cached"] is True
    assert old["results"][0]["suggestions"][0]["information_gain"] == v1_score["information_gain"]


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


def test_grpo_training_and_mining_use_the_service(embedded: ServerProcess, tmp_path: Path) -> None:
    """``eqs-reward train`` runs 2 tiny GRPO steps (TRL, SmolLM2 policy, CPU) with every reward
    from the service, counted there; ``eqs-reward mine`` ranks contexts by disagreement."""
    scored = 'eqs_reward_http_requests_total{method="POST",route="/v1/score",status="200"}'
    before = metric(embedded.url, scored)
    active = httpx.get(embedded.url + "/v1/fewshot/versions").json()["active"]
    env = {**os.environ, "EQS_REWARD_MODEL_CACHE_DIR": str(models_dir())}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "eqs_reward.cli",
            "train",
            "--url",
            embedded.url,
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--group-size",
            "2",
            "--max-completion-length",
            "48",
            "--prompts",
            "4",
            "--recipe",
            "qualeqs-blend",
            "--out",
            str(tmp_path / "train"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    with (tmp_path / "train" / "rewards.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["reward"]) <= 1.0 for r in rows)
    assert (tmp_path / "train" / "rewards.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    assert summary["fewshot_version"] == active  # pinned for the run
    assert summary["recipe"] == "qualeqs-blend"  # pinned too, and every signal in the CSV
    for name in ("shopper.tap", "exclusivity.novelty", "exclusivity.diversity", "shopper.any_tap"):
        assert name in rows[0], name
    assert metric(embedded.url, scored) - before >= 2  # one scoring request per step at least

    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in [
                {
                    "query": "router",
                    "suggestions": [
                        "Any TP-Link routers under $100 with Wi-Fi 6?",
                        "What router do you want?",
                        "Routers?",
                    ],
                },
                {
                    "query": "desk",
                    "suggestions": [
                        "Standing desks under $300 with presets?",
                        "Desks for two 32 inch monitors?",
                        "A desk that floats in the air?",
                    ],
                },
                {
                    "query": "flowers",
                    "suggestions": [
                        "Roses under $30 delivered tomorrow?",
                        "Flowers for a 70th birthday?",
                        "White lilies?",
                    ],
                },
            ]
        )
    )
    mined = subprocess.run(
        [
            sys.executable,
            "-m",
            "eqs_reward.cli",
            "mine",
            "--url",
            embedded.url,
            "--candidates",
            str(candidates),
            "--top",
            "2",
            "--out",
            str(tmp_path / "mine"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert mined.returncode == 0, mined.stderr[-3000:]
    scores = [json.loads(x) for x in (tmp_path / "mine" / "scores.jsonl").read_text().splitlines()]
    hard = [json.loads(x) for x in (tmp_path / "mine" / "hard.jsonl").read_text().splitlines()]
    assert len(scores) == 3 and len(hard) == 2
    everyone = sorted(s["u_q"] for s in scores)
    assert [h["u_q"] for h in hard] == everyone[::-1][:2]  # the most disputed first
    for row in scores:
        mean = sum(row["rewards"]) / 3
        assert row["u_q"] == pytest.approx(sum((r - mean) ** 2 for r in row["rewards"]) / 3)
    assert (tmp_path / "mine" / "u_q_hist.png").stat().st_size > 5_000


def test_eval_on_the_dev_cases_with_the_real_judge(embedded: ServerProcess, tmp_path: Path) -> None:
    """``eqs-reward eval`` over the packaged dev.jsonl: a table, a JSON report and a PNG, whose
    numbers agree with each other."""
    cases = JUDGE_CASES / "dev.jsonl"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "eqs_reward.cli",
            "eval",
            "--url",
            embedded.url,
            "--cases",
            str(cases),
            "--recipe",
            "qualeqs-blend",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "agree" in run.stdout and "worst disagreements" in run.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cases"] == len(cases.read_text().splitlines())
    assert report["meta"]["judge_model"] == "smollm2-135m-instruct"
    for dimension, r in report["dimensions"].items():
        n = r["tp"] + r["fp"] + r["fn"] + r["tn"]
        assert n == report["judged"], dimension
        assert r["agreement"] == pytest.approx((r["tp"] + r["tn"]) / n)
        judge_pass, label_pass = (r["tp"] + r["fp"]) / n, (r["tp"] + r["fn"]) / n
        expected = judge_pass * label_pass + (1 - judge_pass) * (1 - label_pass)
        if expected < 1:
            assert r["kappa"] == pytest.approx((r["agreement"] - expected) / (1 - expected))
        assert r["auc"] is None or 0.0 <= r["auc"] <= 1.0
    assert (tmp_path / "report.png").stat().st_size > 20_000
    # Every head's signal against every label the cases carry.
    signals = report["signals"]
    assert set(signals["shopper.tap"]) == {"answerability", "factuality", "information_gain"}
    novelty = signals["exclusivity.novelty"]["information_gain"]
    assert novelty is not None and 0.0 <= novelty <= 1.0
    assert "shopper.tap" in run.stdout


def test_algorithm_1_on_the_real_judge(embedded: ServerProcess, tmp_path: Path) -> None:
    """Algorithm 1 end to end on the real judge, tiny: warm-start pairs sampled and selected
    through the service, SFT, then two rounds that each train (from the previous policy, on the
    queries plus the previous hard subset) and mine, with the paper's metrics after each stage."""
    env = {**os.environ, "EQS_REWARD_MODEL_CACHE_DIR": str(models_dir())}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "eqs_reward.cli",
            "iterate",
            "--url",
            embedded.url,
            "--rounds",
            "2",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--group-size",
            "2",
            "--max-completion-length",
            "32",
            "--prompts",
            "2",
            "--limit",
            "2",
            "--k",
            "3",
            "--top",
            "1",
            "--held-out",
            "2",
            "--eval-samples",
            "1",
            "--warm-queries",
            "4",
            "--warm-samples",
            "2",
            "--warm-epochs",
            "1",
            "--threshold-sft",
            "0",
            "--warm-min-pairs",
            "1",
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    history = json.loads((tmp_path / "rounds.json").read_text())
    assert [h["round"] for h in history] == [1, 2]
    for number in (1, 2):
        folder = tmp_path / f"round-{number}"
        assert (folder / "train" / "rewards.csv").is_file()
        assert (folder / "train" / "model" / "config.json").is_file()
        assert (folder / "mine" / "hard.jsonl").is_file()
        assert (folder / "mine" / "u_q_hist.png").is_file()
    # The warm start's policy starts round 1; round 2 trains on round 1's hard subset, from
    # round 1's policy.
    warm = json.loads((tmp_path / "warmstart" / "summary.json").read_text())
    assert warm["source"] == "service" and warm["pairs"] >= 1
    assert history[0]["train"]["model"] == str(tmp_path / "warmstart" / "model")
    assert history[1]["train"]["prompts_file"] == str(tmp_path / "round-1" / "mine" / "hard.jsonl")
    assert history[1]["train"]["model"] == str(tmp_path / "round-1" / "train" / "model")
    # Every candidate the pairs came from was scored by the real judge.
    scored = [
        json.loads(x)
        for x in (tmp_path / "warmstart" / "candidates.jsonl").read_text().splitlines()
    ]
    assert len(scored) == 4 and all(r["candidates"] for r in scored)
    # The paper's metrics after every stage, on the held-out queries, in JSON, a table and a PNG.
    report = json.loads((tmp_path / "stages.json").read_text())
    names = [s["stage"] for s in report["stages"]]
    assert names == ["base", "warm start", "GRPO round 1", "GRPO round 2"]
    assert report["meta"]["judge_model"] == "smollm2-135m-instruct"
    for stage in report["stages"]:
        assert 0.0 <= stage["format_reward"] <= 1.0
        assert 0.0 <= stage["mean_set_reward"] <= 1.0
    assert "| GRPO round 2 |" in (tmp_path / "stages.md").read_text()
    assert (tmp_path / "stages.png").stat().st_size > 10_000


def _vllm_child_pid(judge_port: int) -> int:
    out = subprocess.run(
        ["pgrep", "-f", f"vllm.entrypoints.openai.api_server.*--port {judge_port}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert out, "no vLLM child found"
    return int(out[0])


def test_dead_judge_gives_failed_results_then_is_restarted(embedded: ServerProcess) -> None:
    judge_port: int = embedded.judge_port  # type: ignore[attr-defined]
    pid = _vllm_child_pid(judge_port)
    os.killpg(pid, signal.SIGKILL)  # the child and its engine process: a crash
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
    response = httpx.post(embedded.url + "/v1/score", json=body, timeout=120)
    assert response.json()["results"][0]["status"] == "ok"
    assert metric(embedded.url, "eqs_reward_embedded_judge_restarts_total") >= 1
    assert re.search(r"embedded judge died", embedded.log.read_text(errors="replace"))
