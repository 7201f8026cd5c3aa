"""uvicorn's h11 protocol with a time limit on a request's head.

uvicorn arms its keep-alive timer only after a response, so a client that connects and sends
its headers a byte at a time (or nothing at all) holds a connection, and a slot of the server,
for as long as it likes. Here the head of every request must arrive within ``seconds`` of the
connection, or of the first byte of the next request on a kept-alive connection; else the
connection is closed. (The body has its own limit in ``BodyLimitMiddleware``: 408.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["with_header_timeout"]


def with_header_timeout(seconds: float) -> type[H11Protocol]:
    """The h11 protocol class for ``uvicorn.run(http=...)``."""

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

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
            if self._head_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on a kept-alive connection begins
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the head is in: the request is being served

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _head_expired(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
