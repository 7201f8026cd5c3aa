"""The judge fleet on Ray Serve, measured in one run on a real two-node Ray cluster on this host.

    python -m loadtest.bench_fleet [--quick] [--results loadtest/RESULTS.md]

1. Throughput of 1 and 2 judge replicas side by side. The judge is the stub, served by a Serve
   deployment whose replicas each answer after a fixed latency and take at most ``--limit``
   calls at once (``max_ongoing_requests``: what a vLLM instance's batch is to its GPU). Serve's
   router spreads the calls over the replicas; nothing here balances by hand.
2. Duplicate judge calls across 2 service replicas for one GRPO step: the step's samples are
   sent one per request (as veRL's reward loop and OpenRLHF do), so a suggestion the policy
   repeated within a group reaches both replicas. Every judge call is counted in Redis by the
   stub's replicas; a duplicate is a call beyond one per distinct (context, suggestion).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from loadtest._results import section as results_section
from loadtest._results import write_sections
from loadtest.traffic import TrafficModel

#: A chat call the stub judges (one suggestion, the judge's three keys).
CALL = {
    "model": "stub",
    "messages": [{"role": "user", "content": '<suggestion>"Desks under $300?"</suggestion>'}],
    "structured_outputs": {"regex": '\\{"a":[01],"f":[01],"i":[01]\\}'},
}


def _counted_stub(delay_s: float, redis_url: str, key: str) -> Any:
    """A replica's ASGI app: the stub judge, each chat call counted in Redis (all replicas')."""
    import redis.asyncio as aioredis

    from eqs_reward.judge.stub import StubBehaviour, StubJudge

    app = StubJudge(StubBehaviour(delay_s=delay_s)).app()
    counter = aioredis.Redis.from_url(redis_url)

    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            await counter.incr(key)
        await app(scope, receive, send)

    return counted


def judge_app(replicas: int, limit: int, delay_s: float, redis_url: str, key: str) -> Any:
    """The stub judge fleet as a Serve application: ``replicas`` replicas of ``limit`` calls."""
    from ray import serve

    def replica_app() -> Any:  # a builder: Serve calls it on each replica
        return _counted_stub(delay_s, redis_url, key)

    @serve.ingress(replica_app)
    class StubJudgeReplica:
        """One judge instance."""

    options = {"num_cpus": 0.1}
    deployment = serve.deployment(
        name="judge", num_replicas=replicas, max_ongoing_requests=limit, ray_actor_options=options
    )
    return deployment(StubJudgeReplica).bind()


async def _throughput(url: str, concurrency: int, seconds: float) -> float:
    """Judge calls answered per second with ``concurrency`` callers for ``seconds``."""
    done = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as c:

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                response = await c.post(url + "/v1/chat/completions", json=CALL)
                response.raise_for_status()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


async def _grpo_step(url: str, model: TrafficModel, prompts: int) -> tuple[int, int]:
    """One GRPO step sent one sample per request, all at once: (samples, distinct suggestions)."""
    items = [i for n in range(prompts) for i in model.group(n)["items"]]
    distinct = {
        (i["context"]["query"], s) for i in items for s in json.loads(i["completion"])["options"]
    }
    async with httpx.AsyncClient(timeout=120) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    url + "/v1/score", json={"items": [i], "options": {"score_mode": "soft"}}
                )
                for i in items
            )
        )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers][:3]
    return len(items), len(distinct)


def run(quick: bool, limit: int, delay_s: float, redis_url: str) -> dict[str, Any]:
    import ray
    import redis
    from ray import serve
    from ray.cluster_utils import Cluster

    from eqs_reward.server.ray_serve import build

    seconds = 3.0 if quick else 10.0
    key = f"eqs-fleet-{uuid.uuid4().hex[:12]}"
    counter = redis.Redis.from_url(redis_url)
    node: dict[str, Any] = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "EQS_REWARD_JUDGE_URL": base + "/judge/v1",
        "EQS_REWARD_JUDGE_MODEL": "stub",
        "EQS_REWARD_DEFAULT_RECIPE": "qualeqs",
        "EQS_REWARD_RECIPE_REFIT": "off",
        "EQS_REWARD_FEWSHOT_STORE": "redis",
        "EQS_REWARD_GROUP_MEMORY": "redis",
        "EQS_REWARD_REDIS_URL": redis_url,
        "EQS_REWARD_REDIS_KEY_PREFIX": key + ":",
        "EQS_REWARD_LOG_LEVEL": "warning",
    }
    report: dict[str, Any] = {"limit": limit, "delay_s": delay_s, "seconds": seconds}
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": env}, log_to_driver=False)
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        concurrency = 4 * limit  # enough callers to fill two replicas twice over
        for replicas in (1, 2):
            app = judge_app(replicas, limit, delay_s, redis_url, key)
            serve.run(app, name="judge", route_prefix="/judge")
            _wait(base + "/judge/health")
            rate = asyncio.run(_throughput(base + "/judge", concurrency, seconds))
            report[f"replicas_{replicas}_calls_per_s"] = rate
        report["ratio"] = report["replicas_2_calls_per_s"] / report["replicas_1_calls_per_s"]
        report["ideal_calls_per_s"] = {"1": limit / delay_s, "2": 2 * limit / delay_s}

        serve.run(build({"num_replicas": 2, "num_cpus": 0.3}), name="eqs-reward", route_prefix="/")
        _wait(base + "/ready")
        prompts = 2 if quick else 8
        model = TrafficModel(group_size=8, k=3, pool=10, prompts=prompts, seed=3)
        before = int(counter.get(key) or 0)
        samples, distinct = asyncio.run(_grpo_step(base, model, prompts))
        calls = int(counter.get(key) or 0) - before
        report["grpo_step"] = {
            "samples": samples,
            "suggestions": samples * 3,
            "distinct": distinct,
            "judge_calls": calls,
            "duplicates": calls - distinct,
        }
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
        os.environ.pop("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", None)
        leftovers = [key, *counter.scan_iter(match=key + ":*", count=1000)]
        counter.delete(*leftovers)
        counter.close()
    return report


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not up after {timeout} s")
        time.sleep(0.5)


def render(report: dict[str, Any]) -> str:
    step = report["grpo_step"]
    return "\n".join(
        [
            f"Stub judge replicas answering after {report['delay_s']} s, at most "
            f"{report['limit']} calls each at once, {4 * report['limit']} callers for "
            f"{report['seconds']:g} s each; Serve's router balances.",
            "",
            "| judge replicas | calls/s | ideal |",
            "|---|---|---|",
            *(
                f"| {n} | {report[f'replicas_{n}_calls_per_s']:.1f} | "
                f"{report['ideal_calls_per_s'][str(n)]:.0f} |"
                for n in (1, 2)
            ),
            "",
            f"- 2 replicas / 1: **{report['ratio']:.2f}x** (target >= 1.8x)",
            f"- one GRPO step through 2 service replicas, one sample per request: "
            f"{step['samples']} samples, {step['suggestions']} suggestions, {step['distinct']} "
            f"distinct, {step['judge_calls']} judge calls: **{step['duplicates']} duplicates** "
            "(target 0)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (the tests')")
    parser.add_argument("--limit", type=int, default=4, help="calls one judge replica takes")
    parser.add_argument("--delay", type=float, default=0.25, help="the stub's latency (s)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--results", default=None, help="write RESULTS.md's 'fleet' section")
    args = parser.parse_args(argv)
    report = run(args.quick, args.limit, args.delay, args.redis_url)
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.results:
        given = sys.argv[1:] if argv is None else argv
        command = " ".join(["python -m loadtest.bench_fleet", *given])
        block = results_section("fleet", "8. The judge fleet on Ray Serve", render(report), command)
        write_sections(Path(args.results), {"fleet": block})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
