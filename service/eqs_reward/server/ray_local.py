"""One command for the Ray Serve application on this machine: ``eqs-reward serve --ray``.

It starts what the replicated service needs and nothing the operator already runs:

- **the judge**: the embedded one (vLLM CPU, SmolLM2-135M), once, outside the replicas, unless
  ``EQS_REWARD_JUDGE_URL`` names one;
- **Redis** (the bank, the cache, the group memory and the in-flight claims every replica
  shares): a ``redis-server`` of its own with its append-only file in ``<data dir>/redis``
  (an acknowledged bank write survives a restart), unless ``EQS_REWARD_REDIS_URL`` names one;
- **a local Ray cluster** (explicit CPUs and a small object store: Ray's defaults do not fit a
  2-core machine), Serve's proxy on ``EQS_REWARD_HOST``/``EQS_REWARD_PORT`` (or ``--host``
  and ``--port``), and the application of ``eqs_reward.server.ray_serve`` with ``--replicas``
  replicas, every one configured by the same ``EQS_REWARD_*`` environment.

It answers like ``eqs-reward serve`` on the same port (the README's curl works unchanged) and
stops all of it on Ctrl-C or SIGTERM. On a cluster that already exists (the trainers'), use
``serve deploy deploy/ray/serve.yaml`` instead: docs/operators/ray.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from eqs_reward.judge.embedded import die_with_parent
from eqs_reward.server.ray_judge import JUDGE_ROUTE, judge_fleet
from eqs_reward.server.settings import Settings

__all__ = ["run_local"]

log = logging.getLogger("eqs_reward.ray")

#: Ray's object store on this host (the service passes no large objects; Ray's default is 30 %
#: of memory).
OBJECT_STORE_BYTES = 128 * 2**20
#: Logical CPUs per replica: the service waits on the judge, so replicas share cores with it.
REPLICA_CPUS = 0.5
#: Logical CPUs per judge replica (vLLM's CPU build uses the cores it finds; this only places it).
JUDGE_CPUS = 0.5


def run_local(settings: Settings, replicas: int = 2, judge_replicas: int = 0) -> None:
    """Run the judge, Redis, a local Ray cluster and the Serve application until stopped
    (``judge_replicas``: the embedded judge as a fleet of that many Serve replicas, instead of
    one process beside the cluster)."""
    asyncio.run(_run(settings, replicas, judge_replicas))


async def _run(settings: Settings, replicas: int, judge_replicas: int) -> None:
    stop = asyncio.Event()
    _on_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        judge_url = settings.judge_url
        judge = None
        url = f"http://{_client_host(settings.host)}:{settings.port}"
        fleet = judge_replicas > 0 and not judge_url
        if fleet:
            from eqs_reward.judge.embedded import prepare_model

            # once, here: the replicas would race to convert the same model folder
            await asyncio.to_thread(prepare_model, settings.models_dir)
            judge_url = url + JUDGE_ROUTE + "/v1"
        elif not judge_url:
            from eqs_reward.server import Metrics, embedded_judge

            judge = embedded_judge(settings, Metrics())
            judge.start()
            stack.push_async_callback(judge.stop)
            judge_url = f"http://127.0.0.1:{settings.embedded_port}/v1"
            log.info("starting the embedded judge at %s (about a minute)", judge_url)
        redis_url = settings.redis_url or stack.enter_context(_redis(settings.data_dir / "redis"))
        env = _replica_env(settings, judge_url, redis_url)
        stack.enter_context(
            await asyncio.to_thread(_serve, settings, replicas, env, judge_replicas if fleet else 0)
        )
        _on_signals(stop)  # again: Ray's core worker installs its own handlers, which exit at once
        if judge is not None:
            await _first(judge.ready.wait(), stop.wait())
        while not stop.is_set() and not await _ready(url):
            await _first(asyncio.sleep(1.0), stop.wait())
        if not stop.is_set():
            log.info(
                "eqs-reward on Ray Serve: %s (%d replicas; judge %s%s; Redis %s); Ctrl-C stops it",
                url,
                replicas,
                judge_url,
                f", a fleet of {judge_replicas}" if fleet else "",
                redis_url,
            )
            print(f"eqs-reward on Ray Serve ready: {url}", flush=True)
        await stop.wait()
        log.info("stopping the Serve application, Ray, Redis and the judge")


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _replica_env(settings: Settings, judge_url: str, redis_url: str) -> dict[str, str]:
    """Every replica's ``EQS_REWARD_*``: this process's, plus what replicas must share."""
    env = {k: v for k, v in os.environ.items() if k.startswith("EQS_REWARD_")}
    env.update(
        {
            "EQS_REWARD_JUDGE_URL": judge_url,
            "EQS_REWARD_JUDGE_MODEL": settings.judge_model,
            "EQS_REWARD_REDIS_URL": redis_url,
            "EQS_REWARD_FEWSHOT_STORE": "redis",
            "EQS_REWARD_GROUP_MEMORY": "redis",
            "EQS_REWARD_DATA_DIR": str(settings.data_dir),
        }
    )
    if settings.admin_token:
        env["EQS_REWARD_ADMIN_TOKEN"] = settings.admin_token
    return env


@contextlib.contextmanager
def _serve(
    settings: Settings, replicas: int, env: dict[str, str], judge_replicas: int
) -> Iterator[None]:
    import ray
    from ray import serve

    from eqs_reward.server.ray_serve import build

    need = replicas * REPLICA_CPUS + judge_replicas * JUDGE_CPUS
    cpus = max(os.cpu_count() or 1, math.ceil(need))
    ray.init(
        num_cpus=cpus,
        object_store_memory=OBJECT_STORE_BYTES,
        include_dashboard=False,
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    try:
        serve.start(
            proxy_location="HeadOnly", http_options={"host": settings.host, "port": settings.port}
        )
        app = build({"num_replicas": replicas, "num_cpus": REPLICA_CPUS})
        serve.run(app, name="eqs-reward", route_prefix="/")
        if judge_replicas:  # returns once every judge answers (about a minute)
            fleet = judge_fleet(judge_replicas, settings.judge_concurrency, JUDGE_CPUS)
            serve.run(fleet, name="judge", route_prefix=JUDGE_ROUTE)
        yield
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


@contextlib.contextmanager
def _redis(folder: Path) -> Iterator[str]:
    """A redis-server of this command's own on a free port, its append-only file in
    ``folder`` (kept across restarts)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "no redis-server on PATH: install Redis (Debian: apt install redis-server) or set "
            "EQS_REWARD_REDIS_URL to a running one"
        )
    import redis

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    # Its own session: a terminal's Ctrl-C reaches this command, which stops Redis last, after
    # the replicas that write to it; and it dies with this command if that is killed outright.
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {' '.join(argv)}") from None
                time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}/0"
        log.info("started Redis at %s (append-only file in %s)", url, folder)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            return (await client.get(url + "/ready")).status_code == 200
    except httpx.HTTPError:
        return False


async def _first(*waits: Any) -> None:
    """Wait for the first of ``waits`` (coroutines); cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
