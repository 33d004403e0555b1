"""The uvicorn configuration ``serve`` runs with, and the guard on connections that have
not finished sending a request's headers (uvicorn has no header timeout of its own).

Every limit on what reaches the app before it can say no lives here: frames over
``MAX_FRAME_BYTES`` are closed 1009 by the WebSocket layer without reaching the app,
``X-Forwarded-For`` counts only from ``SECSTREAM_TRUSTED_PROXIES``, and a request's
headers must arrive within ``SECSTREAM_HEADER_TIMEOUT`` seconds and
``MAX_HEADER_BYTES`` bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from secstream.config import Settings
from secstream.leanws import LeanWebSocketProtocol
from secstream.protocol import MAX_FRAME_BYTES

MAX_HEADER_BYTES = 64 * 1024
"""Request line and headers; a JWT in the query fits many times over."""
DRAIN_SECONDS = 5

_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"connection: close\r\ncontent-length: 0\r\n\r\n"
)


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The server's limits, from ``settings``; ``overrides`` for tests and logging."""
    trusted = list(settings.trusted_proxies)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "lifespan": "on",
        "timeout_graceful_shutdown": DRAIN_SECONDS,
        "http": guarded_http(
            settings.header_timeout, settings.max_pending_connections, settings.body_timeout
        ),
        # Our own protocol (leanws): websockets for the handshake and for permessage-deflate,
        # our frames otherwise; the least memory per idle socket (docs/benchmarks.md).
        "ws": LeanWebSocketProtocol,
        "ws_max_size": MAX_FRAME_BYTES,  # larger frames: closed 1009, never decoded
        "ws_per_message_deflate": True,
        "ws_ping_interval": None,  # the hub sends the protocol's own pings
        "ws_ping_timeout": None,
        # Nothing trusted by default: from anyone else, X-Forwarded-For is ignored
        # (uvicorn's default would trust it from loopback).
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted,
        "timeout_keep_alive": 5,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def guarded_http(
    header_timeout: float, max_pending: int, body_timeout: float = 60.0
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, plus: each request's headers within ``header_timeout``
    seconds (408, closed) and ``MAX_HEADER_BYTES`` (431, closed); at most ``max_pending``
    connections sending headers at once: past it the one that has been at it longest is
    closed, so a slow-header flood cannot keep new clients out; and each request's body
    in full within ``body_timeout`` seconds of its headers (closed), whether or not the
    app reads it; and what a client sends after a WebSocket upgrade request in the same
    read reaches the WebSocket protocol (uvicorn's drops it)."""
    pending: dict[GuardedHttp, asyncio.TimerHandle] = {}  # oldest first

    class GuardedHttp(HttpToolsProtocol):
        _header_bytes = 0
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._body_done()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._feed(data)
            if self in pending:  # still no end of headers after this chunk
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES:
                    self._refuse(_TOO_LARGE)

        def _feed(self, data: bytes) -> None:
            """uvicorn's ``data_received``, except that the bytes after an upgrade request
            in the same read go on to the WebSocket protocol: a client that sends its
            first frame before the 101 loses nothing."""
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
            except httptools.HttpParserUpgrade as upgrade:
                if not self._should_upgrade():
                    self._unsupported_upgrade_warning()
                    return
                self.handle_websocket_upgrade()
                rest = data[upgrade.args[0]:] if upgrade.args else b""
                if rest:
                    self.transport.get_protocol().data_received(rest)  # type: ignore[attr-defined]

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # a keep-alive connection's next request

        def on_headers_complete(self) -> None:
            self._disarm()
            previous = self.cycle
            super().on_headers_complete()
            # An upgrade hands the socket to the WebSocket protocol: no body to time.
            if not (self.parser.should_upgrade() and self._should_upgrade()):
                self._body_timer = self.loop.call_later(body_timeout, self.transport.close)
                if self.cycle is not previous and self.scope["method"] != "HEAD":
                    self.cycle.transport = OneWrite(self.transport, self.cycle)  # type: ignore[assignment]

        def on_message_complete(self) -> None:
            self._body_done()
            super().on_message_complete()

        def _body_done(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _arm(self) -> None:
            if self in pending or self.transport.is_closing():
                return
            while len(pending) >= max_pending:
                next(iter(pending))._refuse(_TIMEOUT)
            self._header_bytes = 0
            pending[self] = self.loop.call_later(header_timeout, self._refuse, _TIMEOUT)

        def _disarm(self) -> None:
            timer = pending.pop(self, None)
            if timer is not None:
                timer.cancel()

        def _refuse(self, response: bytes) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

    return GuardedHttp


class OneWrite:
    """The transport of one response: its status line and headers wait for the first
    body write and leave with it, so a small response is one write (one segment, one
    wake-up of the client) instead of two.

    uvicorn writes the head and the body of a response separately. A HEAD response has
    no body write: it is not wrapped. Closing writes a held head first.
    """

    __slots__ = ("_cycle", "_head", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif self._cycle is not None and self._cycle.response_started:
            self._head, self._cycle = data, None  # the head: hold it; later writes pass
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()
