"""The HTTP service: ``create_app(settings)`` builds a FastAPI app whose lifespan owns the pooled
judge client, the few-shot bank, the scorer and (with no judge URL) the embedded vLLM judge.

Every non-2xx answer uses one envelope, ``{"error": {"message", "type", "code"}}``, produced by
the exception handlers below. ``/health`` is liveness; ``/ready`` checks the judge and the stores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import redis.asyncio
import redis.exceptions
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.api_fewshot import router as fewshot_router
from service.api_openrlhf import router as openrlhf_router
from service.bank import BankStore, BankUnavailableError, open_store
from service.cache import RedisTier
from service.deps import get_scorer
from service.embedded import EmbeddedJudge
from service.errors import ServiceError, envelope
from service.fewshot import load_seed_examples
from service.judge import JudgeClient, JudgeError
from service.metrics import Metrics
from service.prompts import JudgePrompt
from service.schemas import ErrorBody, ScoreRequest, ScoreResponse
from service.scoring import Scorer
from service.settings import Settings

log = logging.getLogger("eqs_reward.app")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (413, "a size limit was exceeded"),
        (429, "the judge queue is full: retry after Retry-After seconds"),
        (422, "the request breaks the contract"),
        (503, "the service cannot score now (embedded judge starting)"),
    )
}


class BodyLimitMiddleware:
    """Answer 413 for bodies over the limit before anything parses them (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        response = JSONResponse(
            envelope(
                413,
                "payload_too_large",
                f"request body exceeds the limit of {self.max_bytes} bytes; split the batch",
            ),
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - JSONResponse never reads
    return {"type": "http.disconnect"}


class MetricsMiddleware:
    """Count requests by route template and status, time them, track requests in flight."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.http_in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.http_latency.labels(template).observe(time.perf_counter() - started)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    embedded: EmbeddedJudge | None = None
    if settings.embedded:
        embedded = EmbeddedJudge.from_settings(settings, on_restart=metrics.embedded_restarts.inc)
        embedded.start()
    judge = JudgeClient(
        base_url=settings.effective_judge_url,
        model=settings.judge_model,
        api_key=settings.judge_api_key,
        timeout_s=settings.judge_timeout_s,
        connect_timeout_s=settings.judge_connect_timeout_s,
        max_connections=settings.judge_concurrency + 8,
        max_tokens=settings.judge_max_tokens,
        top_logprobs=settings.judge_top_logprobs,
        output_constraint=settings.judge_output_constraint,
        chat_template_kwargs=settings.judge_chat_template_kwargs,
        transport=app.state.judge_transport,
    )
    redis_client = (
        redis.asyncio.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=1.0
        )
        if settings.redis_url
        else None
    )
    app.state.redis = redis_client
    bank: BankStore = app.state.bank or open_store(settings, redis_client)
    await bank.init(load_seed_examples(settings.fewshot_dir))
    prompt = JudgePrompt.load(settings.prompts_dir, settings.prompt_version)
    redis_tier = None
    if redis_client is not None:
        redis_tier = RedisTier(
            redis_client,
            prefix=settings.redis_key_prefix,
            ttl_s=settings.redis_ttl_s,
            timeout_s=settings.redis_timeout_s,
            on_error=lambda op, _: metrics.cache_errors.labels(op).inc(),
            on_state=lambda up: metrics.redis_up.set(1 if up else 0),
        )
        metrics.redis_up.set(1)
    scorer = Scorer(settings, judge, bank, prompt, metrics, redis_tier)
    active = await bank.active()
    metrics.fewshot_version.set(active.version)
    metrics.build.info(
        {
            "version": __version__,
            "judge_model": settings.judge_model,
            "prompt_version": prompt.version,
            "embedded_judge": str(settings.embedded).lower(),
        }
    )
    app.state.judge = judge
    app.state.bank = bank
    app.state.scorer = scorer
    app.state.embedded = embedded
    log.info(
        "eqs-reward %s serving; judge %s (%s), prompt %s, few-shot version %d",
        __version__,
        settings.effective_judge_url,
        settings.judge_model,
        prompt.version,
        active.version,
    )
    try:
        yield
    finally:
        await scorer.inflight.drain()
        if redis_tier is not None:
            await redis_tier.close()
        await judge.aclose()
        await bank.close()
        if redis_client is not None:
            await redis_client.aclose()
        if embedded is not None:
            await embedded.stop()


def create_app(
    settings: Settings,
    *,
    judge_transport: httpx.AsyncBaseTransport | None = None,
    bank: BankStore | None = None,
) -> FastAPI:
    """Build the service. ``judge_transport`` and ``bank`` are injectable for tests."""
    metrics = Metrics()
    app = FastAPI(
        title="eqs-reward",
        version=__version__,
        description="QualEQS reward service for RL of e-commerce query suggestion. "
        "Contract: answerability x factuality x information gain per suggestion, format "
        "reward, set reward and group disagreement.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.judge_transport = judge_transport
    app.state.bank = bank
    app.state.embedded = None
    _install_error_handlers(app)

    @app.post("/v1/score", response_model=ScoreResponse, responses=ERROR_RESPONSES)
    async def score(body: ScoreRequest, scorer: Scorer = Depends(get_scorer)) -> Response:  # noqa: B008
        """Score groups of suggestions: per-suggestion dimensions and rewards, format reward,
        set reward and disagreement. Judge failures come back as ``failed`` suggestions."""
        result = await scorer.score(body)
        # Built by our own code, so serialised once here rather than validated again.
        return Response(result.model_dump_json(), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: 200 while the process serves."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorBody}})
    async def ready(request: Request) -> JSONResponse:
        """Readiness: 200 when the judge and the stores answer, else 503 naming what is missing."""
        checks: dict[str, str] = {}
        info: dict[str, str] = {}
        state = request.app.state
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
            checks["fewshot_bank"] = "ok"
        except Exception as exc:
            checks["fewshot_bank"] = f"unavailable: {exc}"
        scorer_now: Scorer = state.scorer
        if scorer_now.redis is not None:
            # Informational: without its Redis tier the service still scores (memory only).
            up = await scorer_now.redis.ping()
            info["redis_cache"] = "ok" if up else "down: scoring on the in-process cache"
        metrics.judge_up.set(1 if checks["judge"] == "ok" else 0)
        missing = {name: text for name, text in checks.items() if text != "ok"}
        if missing:
            message = "not ready: " + "; ".join(f"{k} {v}" for k, v in missing.items())
            return JSONResponse(
                envelope(503, "not_ready", message, checks={**checks, **info}), status_code=503
            )
        return JSONResponse({"status": "ready", "checks": {**checks, **info}})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(fewshot_router)
    app.include_router(openrlhf_router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BankUnavailableError)
    @app.exception_handler(redis.exceptions.RedisError)
    async def _store_down(_: Request, exc: Exception) -> JSONResponse:
        message = f"a store the service needs is unavailable: {exc}"
        return JSONResponse(
            envelope(503, "unavailable", message), status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            envelope(exc.status, exc.type, exc.message, **exc.extra),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{location or 'body'}: {error.get('msg')}")
        message = "invalid request: " + "; ".join(problems[:10])
        if len(problems) > 10:
            message += f"; and {len(problems) - 10} more"
        return JSONResponse(
            envelope(422, "invalid_request", message, details=problems[:50]), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            envelope(exc.status_code, kind, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse(
            envelope(500, "internal_error", "internal error; see the service log"),
            status_code=500,
        )
