"""The service as a Ray Serve application (``pip install 'eqs-reward[ray]'``).

    serve run deploy/ray/serve.yaml              # the config: replicas, autoscaling, resources
    serve run eqs_reward.server.ray_serve:build  # or the builder, with the defaults below

Each replica runs the service's own FastAPI app (``build_app``, built on the replica by
``serve.ingress``'s builder, its lifespan run by Serve), configured from ``EQS_REWARD_*`` as
everywhere. State that must hold across replicas lives in Redis: the score cache (as today),
the few-shot bank (``EQS_REWARD_FEWSHOT_STORE=redis``) and the group memory
(``EQS_REWARD_GROUP_MEMORY=redis``); a replica refuses to start on the SQLite bank, a file that
only one machine can see, or on a group memory of its own. Each answer names its replica in
``x-eqs-reward-replica`` (which one served a request, for operators and the tests).

Under Serve, Ray's HTTP proxy parses HTTP, not the service's uvicorn: the body limits, the
envelope and admission still hold (they are the app's), the header timeout and uvicorn's own
400s in the envelope do not (docs/operators/ray.md).

What does not hold across replicas: single-flight (two replicas may judge one new suggestion
once each at the same moment; the shared cache serves it after that).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from eqs_reward.server._middleware import ResponseHeaderMiddleware
from eqs_reward.server.settings import Settings

__all__ = ["METRICS_TARGETS", "REPLICA_HEADER", "build", "check_settings", "deployment"]

log = logging.getLogger("eqs_reward.ray")

#: The response header naming the replica that answered.
REPLICA_HEADER = "x-eqs-reward-replica"
#: Every replica serves its own metrics on a port of its node and announces that target in
#: Redis under ``<prefix>`` + this + its id, refreshed every ``ANNOUNCE_S`` and expiring after
#: three missed refreshes, so a killed replica leaves Prometheus's targets on its own.
#: ``GET /v1/metrics/targets`` lists them in Prometheus's HTTP service-discovery format.
METRICS_TARGETS = "replica:"
ANNOUNCE_S = 10.0


def check_settings(settings: Settings) -> None:
    """Refuse what cannot be shared by replicas on several machines (a clear error at start):
    the SQLite bank, and an embedded judge per replica (run it once: ``eqs-reward judge``)."""
    if not settings.judge_url:
        raise RuntimeError(
            "under Ray Serve the judge runs once, outside the replicas: start it "
            "('eqs-reward judge', or any OpenAI-compatible vLLM) and set EQS_REWARD_JUDGE_URL"
        )
    if settings.fewshot_store != "redis" or not settings.redis_url:
        raise RuntimeError(
            "under Ray Serve the few-shot bank must be shared by every replica: set "
            "EQS_REWARD_FEWSHOT_STORE=redis and EQS_REWARD_REDIS_URL (the SQLite bank is a file "
            "on one machine)"
        )
    if settings.group_memory != "redis":
        raise RuntimeError(
            "under Ray Serve a group's samples land on different replicas: set "
            "EQS_REWARD_GROUP_MEMORY=redis so a failed sample still gets its group's mean"
        )


def _asgi_app() -> Any:
    """Built on each replica: the service's app, and the replica's name on every answer."""
    from ray import serve

    from eqs_reward.server import build_app

    settings = Settings()
    check_settings(settings)
    app = build_app(settings)
    replica = serve.get_replica_context().replica_id.unique_id
    app.add_middleware(ResponseHeaderMiddleware, name=REPLICA_HEADER, value=replica)
    _announce_metrics(settings, app.state.metrics.registry, replica)
    return app


def _announce_metrics(settings: Settings, registry: Any, replica: str) -> None:
    """Serve this replica's metrics on a free port of its node and keep announcing the target
    (Ray's proxy reaches one replica per request, so Prometheus must scrape each directly)."""
    import ray
    import redis
    from prometheus_client import start_http_server

    host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    server, _ = start_http_server(0, addr=host, registry=registry)
    group = {"targets": [f"{host}:{server.server_port}"], "labels": {"replica": replica}}
    key = settings.redis_key_prefix + METRICS_TARGETS + replica
    client = redis.Redis.from_url(str(settings.redis_url), socket_timeout=5)

    def keep_announcing() -> None:
        while True:
            try:
                client.set(key, json.dumps(group), ex=int(3 * ANNOUNCE_S))
            except redis.RedisError as exc:  # the next refresh tries again
                log.warning("could not announce this replica's metrics: %r", exc)
            time.sleep(ANNOUNCE_S)

    threading.Thread(target=keep_announcing, name="metrics-announce", daemon=True).start()


def deployment(**options: Any) -> Any:
    """The Serve deployment (``options`` go to ``serve.deployment``: ``num_replicas``,
    ``autoscaling_config``, ``ray_actor_options``, ...)."""
    from ray import serve

    @serve.ingress(_asgi_app)
    class EqsReward:
        """One replica of the reward service."""

    return serve.deployment(name="eqs-reward", **options)(EqsReward)


def build(args: dict[str, Any] | None = None) -> Any:
    """The application for ``serve run`` (``args``: ``num_replicas`` and ``num_cpus`` per
    replica, default 0.5: fractional, so two replicas fit a 2-core machine beside the judge;
    a config file's ``deployments`` section overrides these)."""
    args = args or {}
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": float(args.get("num_cpus", 0.5))},
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "max_ongoing_requests": 64,
    }
    if "num_replicas" in args:
        options["num_replicas"] = int(args["num_replicas"])
    return deployment(**options).bind()
