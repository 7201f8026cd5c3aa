"""The embedded judge as a fleet on Ray Serve: several vLLM CPU judges behind Serve's router.

Each replica of the ``judge`` deployment runs one embedded judge (vLLM's CPU build serving
SmolLM2-135M, as ``eqs-reward judge`` does) on a free loopback port of its node, supervised
(restarted when it dies), and forwards the OpenAI routes the service calls (``/v1/...``,
``/health``) to it. Serve's router spreads the calls over the replicas, never more than
``max_ongoing_requests`` at once on one (what one instance batches well), so nothing here
balances by hand. The service's replicas reach the fleet through Ray's proxy:
``EQS_REWARD_JUDGE_URL=http://<proxy>/judge/v1``. ``eqs-reward serve --ray --judge-replicas N``
deploys it (``eqs_reward.server.ray_local``).

On GPU clusters, Ray Serve LLM (``ray[llm]``, which pins a GPU build of vLLM) is the better
fleet: its OpenAI route is the judge URL, with prefix-aware routing (docs/operators/ray.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from eqs_reward.server.settings import Settings

__all__ = ["JUDGE_REPLICA_HEADER", "JUDGE_ROUTE", "judge_fleet"]

log = logging.getLogger("eqs_reward.ray")

#: Where the fleet is served behind Ray's proxy.
JUDGE_ROUTE = "/judge"
#: The answer header naming the judge replica that answered.
JUDGE_REPLICA_HEADER = "x-eqs-reward-judge-replica"
#: Headers a forwarded answer keeps.
_KEEP = ("content-type",)


def _replica_app() -> Any:
    """Built on each replica: a supervised embedded judge and a forwarder to it."""
    from ray import serve
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from eqs_reward.server import Metrics, embedded_judge
    from eqs_reward.server.ray_local import free_port

    replica = serve.get_replica_context().replica_id.unique_id
    base = Settings()
    settings = base.model_copy(
        update={"embedded_port": free_port(), "data_dir": base.data_dir / f"judge-{replica}"}
    )
    judge = embedded_judge(settings, Metrics())
    upstream = f"http://127.0.0.1:{settings.embedded_port}"
    client = httpx.AsyncClient(base_url=upstream, timeout=settings.judge_timeout_s + 30)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        judge.start()
        # The replica counts as started once its judge answers (about a minute).
        await asyncio.wait_for(judge.ready.wait(), settings.embedded_start_timeout_s)
        try:
            yield
        finally:
            await client.aclose()
            await judge.stop()

    async def forward(request: Request) -> Response:
        # the path below Serve's route prefix, as vLLM serves it
        rest = request.path_params.get("rest")
        path = "/health" if rest is None else "/v1/" + rest
        if not judge.ready.is_set():
            return Response(status_code=503, headers={"retry-after": "5"})
        try:
            answer = await client.request(
                request.method,
                path,
                params=request.query_params,
                content=await request.body(),
                headers={k: v for k, v in request.headers.items() if k in _KEEP},
            )
        except httpx.HTTPError:
            return Response(status_code=502)
        headers = {k: v for k, v in answer.headers.items() if k in _KEEP}
        headers[JUDGE_REPLICA_HEADER] = replica
        return Response(answer.content, status_code=answer.status_code, headers=headers)

    methods = ["GET", "POST"]
    routes = [Route("/health", forward, methods=methods)]
    routes.append(Route("/v1/{rest:path}", forward, methods=methods))
    return Starlette(routes=routes, lifespan=lifespan)


def judge_fleet(replicas: int, max_ongoing: int, num_cpus: float) -> Any:
    """The fleet as a Serve application to run at ``JUDGE_ROUTE``."""
    from ray import serve

    @serve.ingress(_replica_app)
    class EmbeddedJudgeReplica:
        """One embedded judge."""

    deployment = serve.deployment(
        name="judge",
        num_replicas=replicas,
        max_ongoing_requests=max_ongoing,
        ray_actor_options={"num_cpus": num_cpus},
        health_check_period_s=10,
        graceful_shutdown_timeout_s=20,
    )
    return deployment(EmbeddedJudgeReplica).bind()
