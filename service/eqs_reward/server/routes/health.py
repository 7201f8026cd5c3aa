"""``/health`` (liveness), ``/ready`` (the judge and the stores answer), ``/metrics`` and, for
replicas under Ray Serve, their scrape targets (``/v1/metrics/targets``)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eqs_reward.judge import JudgeError
from eqs_reward.judge.embedded import EmbeddedJudge
from eqs_reward.server._http import json_response
from eqs_reward.server.errors import envelope
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.ray_serve import METRICS_TARGETS
from eqs_reward.server.routes._responses import errors
from eqs_reward.server.scoring import ScoringService

router = APIRouter(tags=["operations"])


@router.get("/health", responses=errors(422))
async def health() -> dict[str, str]:
    """Liveness: 200 while the process serves."""
    return {"status": "ok"}


@router.head("/health", responses=errors(422), operation_id="health_head")
async def health_head() -> Response:
    """Liveness without a body (load balancers' HEAD probes), with the GET's headers."""
    return Response(media_type="application/json")


@router.head("/ready", responses=errors(422, 503), operation_id="ready_head")
async def ready_head(request: Request) -> Response:
    """Readiness without a body: 200 or 503, with the GET's headers."""
    answer = await ready(request)
    return Response(status_code=answer.status_code, media_type="application/json")


@router.get("/ready", responses=errors(422, 503))
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 when the judge and the stores answer, else 503 naming what is missing."""
    state = request.app.state
    metrics: Metrics = state.metrics
    checks: dict[str, str] = {}
    info: dict[str, str] = {}
    embedded: EmbeddedJudge | None = state.embedded
    if embedded is not None and not embedded.ready.is_set():
        checks["judge"] = f"embedded judge {embedded.state}" + (
            f" ({embedded.last_error})" if embedded.last_error else ""
        )
    else:
        try:
            await state.judge.ping()
            checks["judge"] = "ok"
        except JudgeError as exc:
            checks["judge"] = f"unreachable: {exc}"
    try:
        await state.bank.ping()
        active = await state.bank.active()  # an empty store (data lost) is not ready either
        checks["fewshot_bank"] = "ok"
        info["fewshot_version"] = str(active.version)
    except Exception as exc:
        checks["fewshot_bank"] = f"unavailable: {exc}"
    scoring: ScoringService = state.scoring
    if scoring.cache.redis is not None:
        # Informational: without its Redis tier the service still scores (memory only).
        up = await scoring.cache.redis.ping()
        info["redis_cache"] = "ok" if up else "down: scoring on the in-process cache"
    metrics.judge_up.set(1 if checks["judge"] == "ok" else 0)
    missing = {name: text for name, text in checks.items() if text != "ok"}
    if missing:
        message = "not ready: " + "; ".join(f"{k} {v}" for k, v in missing.items())
        return JSONResponse(
            envelope(503, "not_ready", message, checks={**checks, **info}), status_code=503
        )
    return JSONResponse({"status": "ready", "checks": {**checks, **info}})


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/metrics/targets", include_in_schema=False)
async def metrics_targets(request: Request) -> Response:
    """Prometheus HTTP service discovery: the metrics endpoint every replica under Ray Serve
    announced, labelled with its replica (any replica answers for all). Empty for a service
    that is not replicated: scrape its ``/metrics``."""
    client = request.app.state.redis
    if client is None:
        return json_response([])
    prefix = request.app.state.settings.redis_key_prefix + METRICS_TARGETS
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
    values = await client.mget(keys) if keys else []
    return json_response([json.loads(value) for value in values if value])
