"""Pure ASGI middlewares (cheap on the hot path): the admin token checked before a body is read,
request bodies bounded in size and in time and held to UTF-8, and request metrics by route
template."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from eqs_reward.server.errors import BadRequestError, ServiceError, envelope
from eqs_reward.server.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "AdminFirstMiddleware",
    "BodyLimitMiddleware",
    "MetricsMiddleware",
    "ResponseHeaderMiddleware",
]


async def _no_receive() -> Message:  # pragma: no cover - JSONResponse never reads
    return {"type": "http.disconnect"}


async def _answer(
    send: Send, status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> None:
    response = JSONResponse(envelope(status, type_, message), status_code=status, headers=headers)
    await response({"type": "http"}, _no_receive, send)


class AdminFirstMiddleware:
    """Check the admin token of a request to an admin route before its body is read or parsed.

    FastAPI parses a route's body before it runs the route's dependencies, so an anonymous write
    with a malformed body got 400 and learned how the endpoint parses. Here it gets 401 (no
    token) or 403 (a wrong one, or writes disabled) first. ``is_admin`` tells an admin route from
    the scope; ``check`` raises the ``ServiceError`` to answer with.
    """

    def __init__(
        self,
        app: ASGIApp,
        is_admin: Callable[[Scope], bool],
        check: Callable[[str | None], None],
    ) -> None:
        self.app = app
        self.is_admin = is_admin
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.is_admin(scope):
            header = dict(scope["headers"]).get(b"authorization")
            try:
                self.check(header.decode("latin-1") if header is not None else None)
            except ServiceError as exc:
                await _answer(send, exc.status, exc.type, exc.message, exc.headers)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Read the whole body before anything parses it: 413 past ``max_bytes``, 408 when it does
    not arrive within ``timeout_s`` (a slow client must not hold a connection forever), 400 when
    it is not UTF-8 (JSON's only encoding, RFC 8259; Python's ``json`` would also take UTF-16 and
    UTF-32, which the contract refuses)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

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
        try:
            async with asyncio.timeout(self.timeout_s):
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
        except TimeoutError:
            await _answer(
                send,
                408,
                "request_timeout",
                f"the request body did not arrive within {self.timeout_s:g} s",
            )
            return
        body = b"".join(chunks)
        if body and not _is_utf8(body):
            await _answer(
                send,
                400,
                BadRequestError.type,
                "the body is not UTF-8: JSON is exchanged in UTF-8 only (RFC 8259)",
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _answer(
            send,
            413,
            "payload_too_large",
            f"request body exceeds the limit of {self.max_bytes} bytes; split the batch",
        )


def _is_utf8(body: bytes) -> bool:
    """UTF-8 (a BOM allowed), and not UTF-16 or UTF-32 text that happens to decode as UTF-8
    (``{\\x00"\\x00`` does: its NULs are valid UTF-8, which is how ``json`` tells them apart)."""
    if json.detect_encoding(body) not in ("utf-8", "utf-8-sig"):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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


class ResponseHeaderMiddleware:
    """One fixed header on every HTTP answer (under Ray Serve: the replica that answered).
    Pure ASGI, so a streamed answer stays streamed."""

    def __init__(self, app: ASGIApp, name: str, value: str) -> None:
        self.app = app
        self.header = (name.lower().encode("latin-1"), value.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, with_header)
