"""The service as a Ray Serve application on a real two-node Ray cluster (one host): two
replicas of the service's own app behind Ray's HTTP proxy, the bank and the score cache in real
Redis, the judge a stub process. A suggestion judged through one replica is a cache hit through
the other; a group's failed sample gets its mean across replicas; a replica killed under load
costs no request and no acknowledged bank write; a replica refuses the SQLite bank."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from eqs_reward.server.ray_serve import ANNOUNCE_S, REPLICA_HEADER, build, check_settings
from eqs_reward.server.settings import Settings
from tests._helpers import (
    FAILME,
    ROOT,
    ServerProcess,
    captured,
    free_port,
    item,
    metric,
    score_body,
    started_threads,
    stub_judge_process,
    wait_http,
)

pytestmark = pytest.mark.ray

ADMIN = "ray-admin-token"
RAY_PROMETHEUS = ROOT / "deploy" / "ray" / "prometheus.yml"


def test_a_replica_refuses_state_only_one_machine_can_see(tmp_path: Path) -> None:
    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[call-arg]

    shared = {"fewshot_store": "redis", "redis_url": "redis://127.0.0.1:6379/0"}
    with pytest.raises(RuntimeError, match="EQS_REWARD_FEWSHOT_STORE=redis"):
        check_settings(settings(judge_url="http://j/v1"))
    with pytest.raises(RuntimeError, match="EQS_REWARD_GROUP_MEMORY=redis"):
        check_settings(settings(judge_url="http://j/v1", **shared))
    with pytest.raises(RuntimeError, match="EQS_REWARD_JUDGE_URL"):
        check_settings(settings(group_memory="redis", **shared))
    check_settings(settings(judge_url="http://j/v1", group_memory="redis", **shared))


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = stub_judge_process(tmp_path_factory.mktemp("ray-judge")).start()
    wait_http(process.url + "/health", 30)
    yield process
    process.stop()


#: Each of the two Ray nodes on this host: 1 CPU and a small object store (Ray's defaults do not
#: fit 2 cores).
NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """Two Ray nodes on this host. The proxy's preference for replicas on its own node is off,
    so its router uses both."""
    from ray.cluster_utils import Cluster

    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"  # read by the proxy at start
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    cluster.add_node(**NODE)
    try:
        yield cluster
    finally:
        cluster.shutdown()
        os.environ.pop("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", None)


@pytest.fixture(scope="module")
def serve_url(
    judge: ServerProcess, redis_url: str, ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Serve's proxy on the head node, two replicas of 0.6 CPU each (so one per node)."""
    import ray
    import redis
    from ray import serve

    prefix = f"eqs-ray-{uuid.uuid4().hex[:12]}:"
    env = {
        "EQS_REWARD_JUDGE_URL": judge.url + "/v1",
        "EQS_REWARD_JUDGE_MODEL": "stub",
        "EQS_REWARD_DEFAULT_RECIPE": "qualeqs",
        "EQS_REWARD_RECIPE_REFIT": "off",
        "EQS_REWARD_FEWSHOT_STORE": "redis",
        "EQS_REWARD_GROUP_MEMORY": "redis",
        "EQS_REWARD_REDIS_URL": redis_url,
        "EQS_REWARD_REDIS_KEY_PREFIX": prefix,
        "EQS_REWARD_DATA_DIR": str(tmp_path_factory.mktemp("ray-data")),
        "EQS_REWARD_LOG_LEVEL": "warning",
        "EQS_REWARD_JUDGE_MAX_RETRIES": "0",
        "EQS_REWARD_ADMIN_TOKEN": ADMIN,
    }
    port = free_port()
    try:
        ray.init(address=ray_cluster.address, runtime_env={"env_vars": env}, log_to_driver=False)
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(build({"num_replicas": 2, "num_cpus": 0.6}), name="eqs-reward", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/ready", 120)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _score(url: str, text: str) -> httpx.Response:
    body = score_body(item("standing desk", text), k=1, score_mode="soft")
    return httpx.post(url + "/v1/score", json=body, timeout=60)


def test_a_suggestion_judged_by_one_replica_is_a_cache_hit_on_the_other(
    serve_url: str, judge: ServerProcess
) -> None:
    text = "Which standing desks under $400 go up to 48 inches?"
    first = _score(serve_url, text)
    assert first.status_code == 200, first.text
    assert first.json()["results"][0]["suggestions"][0]["cached"] is False
    time.sleep(0.5)  # the Redis tier is written behind the answer
    calls_before = httpx.get(judge.url + "/_stub/stats").json()["calls"]
    replicas: dict[str, list[Any]] = {}
    for _ in range(24):
        response = _score(serve_url, text)
        assert response.status_code == 200, response.text
        suggestion = response.json()["results"][0]["suggestions"][0]
        replicas.setdefault(response.headers[REPLICA_HEADER], []).append(suggestion["cached"])
    assert len(replicas) == 2, replicas  # Serve's router used both
    assert all(cached for values in replicas.values() for cached in values)
    assert httpx.get(judge.url + "/_stub/stats").json()["calls"] == calls_before


def test_a_failed_sample_gets_its_group_mean_when_the_group_spans_replicas(
    serve_url: str, judge: ServerProcess
) -> None:
    """Per-sample trainers send one sample per request: with G = 4, the failed one (the stub
    judge fails FAILME) waits for its three siblings, scored on whichever replicas, and reports
    their mean from the shared group memory."""
    httpx.post(judge.url + "/_stub/config", json={"fail_pattern": FAILME})
    options = {"k": 1, "score_mode": "soft", "group_size": 4, "group_wait_s": 20}
    query = f"desk for a small room {time.time()}"  # a group of this test's own
    texts = [
        "Which desks under $200 fit a 40-inch wall?",
        "Are there white standing desks with a drawer?",
        "Do you have corner desks under 30 inches deep?",
        f"Desks that {FAILME}?",
    ]

    def one(text: str) -> httpx.Response:
        return httpx.post(
            serve_url + "/v1/score",
            json={"items": [item(query, text)], "options": options},
            timeout=60,
        )

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(one, texts))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    results = [r.json()["results"][0] for r in responses]
    judged = [r["reward"] for r in results[:3]]
    failed = results[3]
    assert failed["reward"] is None and failed["group"]["seen"] == 3
    assert failed["group"]["mean"] == pytest.approx(sum(judged) / 3)
    assert len({r.headers[REPLICA_HEADER] for r in responses}) >= 1


def test_every_replica_is_a_scrape_target_and_together_they_count_every_request(
    serve_url: str,
) -> None:
    """Ray's proxy reaches one replica per request, so each replica serves its own metrics and
    announces the target; any replica lists them all for Prometheus's HTTP service discovery.
    Summed over the replicas, the request counter the dashboard reads counts every request."""
    live = {a["name"].rsplit("#", 1)[1] for a in _replicas()}
    groups = _targets(serve_url)
    groups = [g for g in groups if g["labels"]["replica"] in live]
    assert len(live) == 2 and {g["labels"]["replica"] for g in groups} == live, groups
    _counted_by(groups, serve_url)


SCORED = 'eqs_reward_http_requests_total{method="POST",route="/v1/score",status="200"}'


def _targets(serve_url: str) -> list[dict[str, Any]]:
    """What Prometheus's HTTP service discovery reads."""
    return httpx.get(serve_url + "/v1/metrics/targets", timeout=30).json()  # type: ignore[no-any-return]


def _counted_by(groups: list[dict[str, Any]], serve_url: str) -> None:
    """Ten new scoring requests add exactly ten to the scored-requests counter summed over the
    ``groups``' targets (what the dashboard's request-rate panel sums)."""

    def total() -> float:
        return sum(metric(f"http://{t}", SCORED) for g in groups for t in g["targets"])

    before = total()
    for n in range(10):
        assert _score(serve_url, f"Desks with {n + 2} drawers under $300?").status_code == 200
    assert total() - before == 10


def test_the_ray_prometheus_config_is_one_promtool_accepts() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing: 'make setup' installs Debian's prometheus package")
        pytest.skip("promtool not installed (make setup installs it)")
    checked = captured([promtool, "check", "config", "--syntax-only", str(RAY_PROMETHEUS)])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _replicas() -> list[dict[str, str]]:
    """The running replicas' named actors (``SERVE_REPLICA::<app>#<deployment>#<id>``)."""
    import ray

    named = ray.util.list_named_actors(all_namespaces=True)
    return [a for a in named if a["name"].startswith("SERVE_REPLICA::eqs-reward#")]


def _under_load(serve_url: str, disrupt: Callable[[], None]) -> list[tuple[int, str]]:
    """GRPO-shaped load (groups of 8 completions of 3 suggestions) and bank writes through the
    client, ``disrupt`` in the middle. Every call must return (the client's retries absorb what
    the disruption drops); the writes the client saw acknowledged, as (version, text)."""
    from eqs_reward.client import RewardClient
    from loadtest.traffic import TrafficModel

    model = TrafficModel(group_size=8, k=3, pool=10, prompts=6, seed=7)
    stop = threading.Event()
    scored: list[int] = []
    errors: list[str] = []
    acked: list[tuple[int, str]] = []
    run = uuid.uuid4().hex[:8]

    def score(n: int) -> None:
        with RewardClient(serve_url, score_mode="soft", backoff_s=0.2, max_backoff_s=1.0) as client:
            step = n
            while not stop.is_set():
                try:
                    scored.append(len(client.score(model.group(step)["items"]).results))
                except Exception as exc:  # counted: the assertion below names it
                    errors.append(f"score: {exc!r}")
                step += 2

    def write(n: int) -> None:
        with RewardClient(serve_url, admin_token=ADMIN, wait_for_service_s=60) as client:
            count = 0
            while not stop.is_set():
                text = f"Bad case {run}-{n}-{count} under a disruption, with a made-up spec?"
                example = {
                    "context": {"query": "replica kill"},
                    "suggestion": text,
                    "labels": {"answerability": 1, "factuality": 0, "information_gain": 1},
                    "source": "online_bad_case",
                }
                try:
                    acked.append((client.add_examples([example])["version"], text))
                except Exception as exc:
                    errors.append(f"write: {exc!r}")
                count += 1
                time.sleep(0.05)

    threads = [*started_threads(score, 2), *started_threads(write, 1)]
    time.sleep(3.0)
    disrupt()
    time.sleep(6.0)
    stop.set()
    for thread in threads:
        thread.join(120)
    assert errors == [], errors[:5]
    assert scored and all(n == 8 for n in scored)
    assert acked, "no write was acknowledged"
    with RewardClient(serve_url) as client:
        for version, text in acked:
            stored = {e["suggestion"] for e in client.fewshot(version)["examples"]}
            assert text in stored, (version, text)
    return acked


def _two_replicas_running(gone: str = "") -> None:
    """Wait (at most 90 s) until Serve runs two replicas again, ``gone`` not among them."""
    from ray import serve

    deadline = time.monotonic() + 90
    while True:
        deployment = serve.status().applications["eqs-reward"].deployments["eqs-reward"]
        names = {a["name"] for a in _replicas()}
        if deployment.replica_states.get("RUNNING", 0) == 2 and gone not in names:
            return
        assert time.monotonic() < deadline, (deployment.replica_states, names)
        time.sleep(1)


def test_killing_a_replica_under_grpo_load_loses_no_request_and_no_acknowledged_write(
    serve_url: str,
) -> None:
    """One replica is killed mid-load; Serve replaces it."""
    import ray

    victim = _replicas()[0]

    def kill() -> None:
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)

    _under_load(serve_url, kill)
    _two_replicas_running(gone=victim["name"])
    # What the dashboards read follows: the killed replica's scrape target expires (it stopped
    # announcing it), its replacement's appears, and the two live targets count every request.
    killed = victim["name"].rsplit("#", 1)[1]
    live = {a["name"].rsplit("#", 1)[1] for a in _replicas()}
    deadline = time.monotonic() + 4 * ANNOUNCE_S
    while {g["labels"]["replica"] for g in _targets(serve_url)} != live:
        assert time.monotonic() < deadline, (_targets(serve_url), live, killed)
        time.sleep(1)
    assert killed not in live
    _counted_by(_targets(serve_url), serve_url)


def test_the_contract_holds_behind_rays_proxy(serve_url: str) -> None:
    """The app's own limits and envelope hold under Serve (Ray's proxy parses HTTP)."""
    json_type = {"content-type": "application/json"}
    for content in (b"{not json", b"\xff\xfe"):
        bad = httpx.post(serve_url + "/v1/score", content=content, headers=json_type, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "bad_request"
    empty = httpx.post(serve_url + "/v1/score", json={"items": []}, timeout=30)
    assert empty.status_code == 422 and empty.json()["error"]["code"] == 422
    large = httpx.post(
        serve_url + "/v1/score", content=b"[" + b" " * (2 * 2**20) + b"]", headers=json_type
    )
    assert large.status_code == 413 and large.json()["error"]["type"] == "payload_too_large"
    unauthorised = httpx.post(serve_url + "/v1/fewshot", json={"examples": []}, timeout=30)
    assert unauthorised.status_code in (401, 403) and "error" in unauthorised.json()
    assert httpx.get(serve_url + "/health", timeout=30).status_code == 200


def test_the_serve_config_is_one_ray_accepts() -> None:
    """``deploy/ray/serve.yaml`` against Ray's own schema for ``serve deploy`` / ``serve run``."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(
        yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
    )
    (app,) = config.applications
    assert app.import_path == "eqs_reward.server.ray_serve:build"
    env = app.runtime_env["env_vars"]
    assert env["EQS_REWARD_FEWSHOT_STORE"] == env["EQS_REWARD_GROUP_MEMORY"] == "redis"
    (deployment,) = app.deployments
    assert deployment.name == "eqs-reward" and deployment.autoscaling_config["min_replicas"] >= 2


def test_removing_a_worker_node_under_grpo_load_loses_no_request_and_no_acknowledged_write(
    serve_url: str, ray_cluster: Any
) -> None:
    """The worker node (and the replica on it) leaves mid-load; the head's replica serves on.
    A new node joins and Serve runs two replicas again. (Last in the module: it changes the
    cluster.)"""
    worker = next(iter(ray_cluster.worker_nodes))
    _under_load(serve_url, lambda: ray_cluster.remove_node(worker))
    ray_cluster.add_node(**NODE)
    _two_replicas_running()


def test_the_kuberay_manifest_runs_the_tested_serve_application() -> None:
    """``deploy/kubernetes/rayservice.yaml``: a RayService (ray.io/v1) at the pinned Ray version,
    whose serveConfigV2 Ray's own schema accepts and whose application is the one the tests run
    from ``deploy/ray/serve.yaml`` (only the addresses of Redis and the judge differ), pointing
    at the Redis service the directory defines. (KubeRay's CRD schema itself is not vendored
    here; see docs/operators/ray.md.)"""
    import ray
    import yaml
    from ray.serve.schema import ServeDeploySchema

    manifest = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    spec = manifest["spec"]
    assert spec["rayClusterConfig"]["rayVersion"] == ray.__version__
    groups = [
        spec["rayClusterConfig"]["headGroupSpec"],
        *spec["rayClusterConfig"]["workerGroupSpecs"],
    ]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert images == {f"rayproject/ray:{ray.__version__}-py311"}
    served = ServeDeploySchema.model_validate(yaml.safe_load(spec["serveConfigV2"]))
    tested = ServeDeploySchema.model_validate(
        yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
    )
    (k8s,), (local,) = served.applications, tested.applications
    assert k8s.import_path == local.import_path and k8s.route_prefix == local.route_prefix
    assert k8s.deployments == local.deployments
    env, local_env = k8s.runtime_env["env_vars"], local.runtime_env["env_vars"]
    assert set(env) == set(local_env)
    for name in set(env) - {"EQS_REWARD_JUDGE_URL", "EQS_REWARD_REDIS_URL"}:
        assert env[name] == local_env[name], name
    redis_service = next(
        d
        for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "redis.yaml").read_text())
        if d["kind"] == "Service"
    )
    assert env["EQS_REWARD_REDIS_URL"] == f"redis://{redis_service['metadata']['name']}:6379/0"
    from eqs_reward import __version__

    assert f"eqs-reward[server,ray]=={__version__}" in k8s.runtime_env["pip"]
