"""WebSockets at ``/ws`` straight to their endpoint, and frames straight to the socket.

Starlette wraps each connection in a layer per middleware, router and exception
handler: a few coroutine frames held for the life of every socket, and a few
calls per frame sent. ``DirectWebSocket`` (the outermost middleware) hands a
WebSocket at ``path`` to its endpoint itself, and records the server's ``send``
in the scope so the hot path can give text frames to it directly (``raw_send``).
Nothing else changes: no middleware here acts on WebSocket traffic, and an
error in the endpoint reaches the server as it would through Starlette.

One step further, for uvicorn's ``websockets-sansio`` connections only
(``direct_socket``): a server's text frame without permessage-deflate is the
same bytes for every recipient (no mask, no compression), so an event's frame
is built once (``text_frame_of``) and written to each connection's transport
(``write_now``), instead of each send encoding the text, framing it through
``websockets`` and joining its output. ``write_now`` writes only when the
server's own ``send`` would write at once; otherwise (flow control paused,
closing, closed) it declines and the caller uses the ASGI ``send``, which
waits or fails exactly as before. Any other server, or a connection that
negotiated compression, gets no direct socket and uses ``send`` always.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from secstream.leanws import LeanWebSocketProtocol

_KEY = "secstream.raw_send"


class DirectWebSocket:
    def __init__(
        self, app: ASGIApp, path: str, endpoint: Callable[[WebSocket], Awaitable[None]]
    ) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        scope[_KEY] = send
        if scope["path"].removeprefix(scope.get("root_path", "")) == self.path:
            scope.setdefault("path_params", {})
            return await self.endpoint(WebSocket(scope, receive, send))
        return await self.app(scope, receive, send)


def raw_send(scope: Scope) -> Send | None:
    send: Send | None = scope.get(_KEY)
    return send


# -- frames straight to the transport ------------------------------------------------


def _server_connection(scope: Scope) -> WebSocketsSansIOProtocol | None:
    proto: Any = getattr(raw_send(scope), "__self__", None)
    return proto if isinstance(proto, WebSocketsSansIOProtocol) else None


def direct_socket(scope: Scope) -> WebSocketsSansIOProtocol | None:
    """The server's connection object, when frames may be written to it directly: uvicorn's
    websockets-sansio connection, accepted, without extensions (permessage-deflate)."""
    proto = _server_connection(scope)
    if (
        proto is None
        or not proto.handshake_complete
        or proto.initial_response is not None
        or proto.conn.extensions
    ):
        return None
    return proto


def release_handshake(websocket: WebSocket) -> None:
    """After ``accept``: let go of the handshake's headers, read before ``accept`` and
    never again. The ASGI scope's list (and Starlette's copy of it) go, and for uvicorn's
    websockets-sansio connection its request and response, which it keeps for its whole
    life; the request's headers are emptied in place, since ``websockets``' parser still
    holds that request (a local of its generator) for the connection's life. Our own
    protocol class then gets its ``__dict__`` made to size (``compact``)."""
    websocket.scope["headers"] = []
    websocket.scope["subprotocols"] = []  # the token rides in one (bearer.<jwt>)
    websocket.__dict__.pop("_headers", None)
    proto = _server_connection(websocket.scope)
    if proto is not None and proto.handshake_complete:
        if proto.request is not None:
            proto.request.headers.clear()
        proto.request = proto.response = None  # type: ignore[assignment]
        if isinstance(proto, LeanWebSocketProtocol):
            proto.compact()


def write_now(proto: WebSocketsSansIOProtocol, frame: bytes) -> bool:
    """Write a ready frame if the server's ``send`` would write now without waiting;
    False (nothing written) when it would wait (the transport is above its high-water
    mark) or fail (closing, closed): the caller then uses ``send``."""
    if (
        proto.close_sent
        or proto.disconnected
        or not proto.writable.is_set()
        or proto.transport.is_closing()
        or proto.conn.state is not State.OPEN
    ):
        return False
    proto.transport.write(frame)
    return True


def text_frame(payload: bytes) -> bytes:
    """A server's text frame (RFC 6455 section 5.2): final, unmasked, uncompressed."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class _LastFrame:
    """The last text framed, and its frame: a writer pass sends one event to each of
    its recipients in turn, so all but the first reuse the frame built for the first.
    Matched by identity (the very same ``str``, as queued for each), never by value."""

    __slots__ = ("frame", "text")

    def __init__(self) -> None:
        self.text = ""
        self.frame = text_frame(b"")


_last = _LastFrame()


def text_frame_of(text: str) -> bytes:
    """``text``'s frame; built once while the same string is sent to socket after socket."""
    if _last.text is not text:
        _last.frame = text_frame(text.encode())
        _last.text = text
    return _last.frame
