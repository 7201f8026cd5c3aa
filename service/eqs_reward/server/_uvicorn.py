"""uvicorn's h11 protocol with a time limit on a request's head, and its own 400s in the envelope.

uvicorn arms its keep-alive timer only after a response, so a client that connects and sends
its headers a byte at a time (or nothing at all) holds a connection, and a slot of the server,
for as long as it likes. Here the head of every request must arrive within ``seconds`` of the
connection, or of the first byte of the next request on a kept-alive connection; else the
connection is closed. (The body has its own limit in ``BodyLimitMiddleware``: 408.)

What h11 cannot parse (``Content-Length: -1``, raw non-ASCII bytes in the path or query, a
request line or header block past uvicorn's 16 KiB) never reaches the app: uvicorn answers 400
itself, in plain text. Here that answer is the contract's JSON envelope. What still cannot be
shaped: a client that closes the connection before its head is complete gets no answer at all.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from eqs_reward.server.errors import BadRequestError, envelope

if TYPE_CHECKING:
    from eqs_reward.server.settings import Settings

#: How long a refused connection's further input is read and discarded before it is closed.
LINGER_S = 2.0

#: The body of uvicorn's own 400s: it does not say which rule the request broke, so neither can we.
UNPARSEABLE_REQUEST = json.dumps(
    envelope(
        400,
        BadRequestError.type,
        "the HTTP request could not be parsed: a malformed request line or header (a negative "
        "Content-Length, say), raw non-ASCII bytes in the path or query, or a request head over "
        "16 KiB",
    )
).encode()

__all__ = ["serve", "with_header_timeout"]


def with_header_timeout(seconds: float) -> type[H11Protocol]:
    """The h11 protocol class for ``uvicorn.run(http=...)``."""

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _refused = False

        def _arm(self) -> None:
            self._head_timer = self.loop.call_later(seconds, self._head_expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._head_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on a kept-alive connection begins
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the head is in: the request is being served

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(UNPARSEABLE_REQUEST)).encode()),
                (b"connection", b"close"),
            ]
            for event in (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=UNPARSEABLE_REQUEST),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
            # A lingering close: closing while the client still sends (the rest of a 1 MB
            # header) makes the kernel answer with a reset, and the client loses this answer
            # unread. So: end our side, discard what still arrives, close a moment later.
            self._refused = True
            self._disarm()
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

        def _head_expired(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def serve(settings: Settings) -> None:
    """Run the service in this process until it is stopped: one uvicorn worker with the protocol
    above (scale with replicas: each process keeps its own metrics)."""
    import uvicorn

    from eqs_reward.server._app import build_app

    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=5,
        http=with_header_timeout(settings.http_header_timeout_s),
        h11_max_incomplete_event_size=64 * 1024,
    )
