"""The HTTP service, built as vLLM's OpenAI server is: ``build_app(settings)`` makes the FastAPI
app (routes, middlewares, error handlers); its lifespan runs ``init_app_state``, which opens the
judge client, Redis, the bank store, the scoring and bank services and (with no judge URL) the
embedded vLLM judge, and puts them on ``app.state`` for the routes.

Every non-2xx answer uses one envelope, ``{"error": {"message", "type", "code"}}``, produced by
the exception handlers below. ``/health`` is liveness; ``/ready`` checks the judge and the stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pydantic
import redis.asyncio
import redis.exceptions
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from eqs_reward._version import __version__
from eqs_reward.catalog import open_catalog
from eqs_reward.judge import JudgeClient, JudgePrompt
from eqs_reward.judge.cases import load_seed_examples
from eqs_reward.judge.embedded import EmbeddedJudge
from eqs_reward.server._http import Admission, check_admin_token, reject_unknown_query_params
from eqs_reward.server._middleware import (
    AdminFirstMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
)
from eqs_reward.server.bank import BankService, BankStore, BankUnavailableError, open_store
from eqs_reward.server.cache import RedisTier
from eqs_reward.server.console import ConsoleAuth
from eqs_reward.server.console import router as console_router
from eqs_reward.server.errors import ServiceError, envelope
from eqs_reward.server.heads import HeadUnavailableError
from eqs_reward.server.metrics import Metrics
from eqs_reward.server.refit import Refitter
from eqs_reward.server.review import open_review
from eqs_reward.server.routes import (
    fewshot_router,
    health_router,
    openrlhf_router,
    require_admin,
    review_router,
    score_router,
    slime_router,
)
from eqs_reward.server.scoring import ScoringService
from eqs_reward.server.settings import Settings

__all__ = ["build_app", "init_app_state"]

log = logging.getLogger("eqs_reward.app")


def embedded_judge(settings: Settings, metrics: Metrics) -> EmbeddedJudge:
    """The supervised vLLM child serving the judge when no judge URL is configured."""
    return EmbeddedJudge(
        settings.data_dir,
        settings.judge_model,
        settings.embedded_port,
        settings.models_dir,
        kvcache_gib=settings.embedded_kvcache_gib,
        max_model_len=settings.embedded_max_model_len,
        dtype=settings.embedded_dtype,
        start_timeout_s=settings.embedded_start_timeout_s,
        restart_backoff_max_s=settings.embedded_restart_backoff_max_s,
        on_restart=metrics.embedded_restarts.inc,
    )


async def init_app_state(app: FastAPI, stack: AsyncExitStack) -> None:
    """Open everything the routes use and register its closing on ``stack`` (in reverse)."""
    state = app.state
    settings: Settings = state.settings
    metrics: Metrics = state.metrics
    state.embedded = None
    if settings.embedded:
        embedded = embedded_judge(settings, metrics)
        embedded.start()
        stack.push_async_callback(embedded.stop)
        state.embedded = embedded
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
        transport=state.judge_transport,
    )
    stack.push_async_callback(judge.aclose)
    redis_client = None
    if settings.redis_url:
        redis_client = redis.asyncio.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=1.0
        )
        stack.push_async_callback(redis_client.aclose)
    state.redis = redis_client
    bank: BankStore = state.bank or open_store(settings, redis_client)
    stack.push_async_callback(bank.close)
    await bank.init(load_seed_examples(settings.fewshot_seed_path))
    prompt = JudgePrompt.load(settings.prompts_path, settings.prompt_version)
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
        stack.push_async_callback(redis_tier.close)
    catalog = None
    if settings.catalog_backend != "none":
        catalog = open_catalog(
            settings.catalog_backend, settings.data_dir, settings.catalog_postgres_url
        )
        stack.push_async_callback(catalog.close)
    scoring = ScoringService(settings, judge, bank, prompt, metrics, redis_tier, catalog=catalog)
    stack.push_async_callback(scoring.pool.inflight.drain)
    active = await bank.active()
    metrics.fewshot_version.set(active.version)
    if scoring.heads.taught in scoring.resolve_recipe(None).computed:
        # Load (or fit, about a second) the active version's taught model now, not on the first
        # request; a failure here is the head's 503 later, not a failed start.
        try:
            await scoring.heads.taught.head_version(active)
        except HeadUnavailableError as exc:
            log.warning("%s", exc)
    metrics.build.info(
        {
            "version": __version__,
            "judge_model": settings.judge_model,
            "prompt_version": prompt.version,
            "embedded_judge": str(settings.embedded).lower(),
        }
    )
    state.judge = judge
    state.bank = bank
    state.scoring = scoring
    state.admission = Admission(settings, scoring, metrics)
    state.bank_service = BankService(bank, scoring, settings, metrics)
    if settings.review_enabled:
        state.review = scoring.review = open_review(settings, redis_client, metrics)
        stack.push_async_callback(state.review.close)
    refitter = Refitter(scoring)
    stale = refitter.report()
    if settings.recipe_refit == "background" and stale:
        refit = asyncio.create_task(refitter.run(stale), name="eqs-reward-recipe-refit")
        stack.push_async_callback(_cancelled, refit)
    log.info(
        "eqs-reward %s serving; judge %s (%s), prompt %s, few-shot version %d",
        __version__,
        settings.effective_judge_url,
        settings.judge_model,
        prompt.version,
        active.version,
    )


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        await init_app_state(app, stack)
        yield


def build_app(
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
        dependencies=[Depends(reject_unknown_query_params)],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.judge_transport = judge_transport
    app.state.bank = bank
    app.state.embedded = None
    app.state.redis = None
    app.state.review = None
    app.state.console_auth = ConsoleAuth(settings)
    _install_error_handlers(app)
    routers = (score_router, openrlhf_router, slime_router, fewshot_router, review_router)
    for router in (*routers, health_router, console_router):
        app.include_router(router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.http_body_timeout_s,
    )
    # Outside the body limit: an admin route's token is checked before its body is read.
    app.add_middleware(
        AdminFirstMiddleware,
        is_admin=_admin_routes(app),
        check=lambda header: check_admin_token(settings, header),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _admin_routes(app: FastAPI) -> Any:
    """Whether a request's scope is for a route that depends on ``require_admin``."""
    routes = [
        route
        for route in app.router.routes
        if isinstance(route, APIRoute)
        and any(d.dependency is require_admin for d in route.dependencies)
    ]

    def is_admin(scope: Any) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in routes)

    return is_admin


def _allowed_methods(app: FastAPI, scope: Any) -> list[str]:
    """The methods the schema documents for the resource of the request: its literal path's if it
    has one (``/v1/fewshot/calibration``), else the templates' (``/v1/fewshot/{example_id}``)."""
    paths: dict[str, Any] = app.openapi()["paths"]
    matching = [
        template
        for route in app.router.routes
        if isinstance(template := getattr(route, "path", None), str)
        and template in paths
        and route.matches(scope)[0] is not Match.NONE
    ]
    literal = [t for t in matching if "{" not in t]
    return sorted({m.upper() for t in (literal or matching) for m in paths[t]})


# pydantic names the branch of a union in an error's location (items.0.suggestions.list[str].0):
# noise for the caller, who sent a field, not a branch.
_BRANCH = re.compile(r"^(list|dict|str|int|float|bool|none|literal|function-\w+)(\[.*\])?$")


def _problems(errors: list[Any]) -> list[str]:
    problems = []
    for error in errors:
        parts = [p for p in error.get("loc", ()) if p != "body" and not _BRANCH.match(str(p))]
        location = ".".join(str(part) for part in parts)
        problems.append(f"{location or 'body'}: {error.get('msg')}")
    return problems


def _invalid(problems: list[str]) -> JSONResponse:
    message = "invalid request: " + "; ".join(problems[:10])
    if len(problems) > 10:
        message += f"; and {len(problems) - 10} more"
    return JSONResponse(
        envelope(422, "invalid_request", message, details=problems[:50]), status_code=422
    )


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
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = next(e for e in errors if e.get("type") == "json_invalid")
            return JSONResponse(
                envelope(
                    400,
                    "bad_request",
                    f"the body is not valid JSON (or not UTF-8): {detail.get('msg')}",
                ),
                status_code=400,
            )
        return _invalid(_problems(errors))

    @app.exception_handler(pydantic.ValidationError)
    async def _derived_validation_error(_: Request, exc: pydantic.ValidationError) -> JSONResponse:
        # A request whose parts passed but whose derived score request does not (/get_reward).
        return _invalid(_problems(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
        }.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only; a path served
            # by several routes (GET and HEAD /ready) allows all of theirs.
            headers["Allow"] = ", ".join(_allowed_methods(request.app, request.scope))
        return JSONResponse(
            envelope(exc.status_code, kind, str(exc.detail)),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse(
            envelope(500, "internal_error", "internal error; see the service log"),
            status_code=500,
        )
