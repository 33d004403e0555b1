"""WebSockets at ``/ws`` straight to their endpoint, and frames straight to the socket.

Starlette wraps each connection in a layer per middleware, router and exception
handler: a few coroutine frames held for the life of every socket, and a few
calls per frame sent. ``DirectWebSocket`` (the outermost middleware) hands a
WebSocket at ``path`` to its endpoint itself, and records the server's ``send``
in the scope so the hot path can give text frames to it directly (``raw_send``).
Nothing else changes: no middleware here acts on WebSocket traffic, and an
error in the endpoint reaches the server as it would through Starlette.

One step further, for connections of our own WebSocket protocol without extensions
(``direct_socket``; see ``leanws``): a server's text frame without permessage-deflate is the
same bytes for every recipient (no mask, no compression), so an event's frame
is built once (``text_frame_of``) and written to each connection's transport
(``write_now``), instead of each send encoding the text, framing it through
the protocol object and joining its output. ``write_now`` writes only when the
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

from secstream.leanws import OPEN, LeanWebSocketProtocol, text_frame

_KEY = "secstream.raw_send"


class DirectWebSocket:
    def __init__(
        self, app: ASGIApp, path: str, endpoint: Callable[[WebSocket], Awaitable[None]]
    ) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The awaitable to run, returned rather than awaited here: this call's frame is
        then not held for the life of every socket."""
        if scope["type"] != "websocket":
            return self.app(scope, receive, send)
        scope[_KEY] = send
        if scope["path"].removeprefix(scope.get("root_path", "")) == self.path:
            scope.setdefault("path_params", {})
            return self.endpoint(WebSocket(scope, receive, send))
        return self.app(scope, receive, send)


def raw_send(scope: Scope) -> Send | None:
    send: Send | None = scope.get(_KEY)
    return send


# -- frames straight to the transport ------------------------------------------------


def _server_connection(scope: Scope) -> LeanWebSocketProtocol | None:
    proto: Any = getattr(raw_send(scope), "__self__", None)
    return proto if isinstance(proto, LeanWebSocketProtocol) else None


def direct_socket(scope: Scope) -> LeanWebSocketProtocol | None:
    """The server's connection object, when frames may be written to it directly: our
    protocol's connection, accepted, without extensions (permessage-deflate)."""
    proto = _server_connection(scope)
    return proto if proto is not None and proto.lean else None


def release_handshake(websocket: WebSocket) -> None:
    """After ``accept``: let go of the handshake's headers, read before ``accept`` and
    never again: the ASGI scope's list and Starlette's copy of it. (The protocol let go
    of its request and response itself, at accept.)"""
    websocket.scope["headers"] = []
    websocket.scope["subprotocols"] = []  # the token rides in one (bearer.<jwt>)
    websocket.__dict__.pop("_headers", None)


def write_now(proto: LeanWebSocketProtocol, frame: bytes) -> bool:
    """Write a ready frame if the server's ``send`` would write now without waiting;
    False (nothing written) when it would wait (the transport is above its high-water
    mark) or fail (closing, closed): the caller then uses ``send``."""
    transport = proto.transport
    if proto.state != OPEN or not proto.writable or transport.is_closing():
        return False
    transport.write(frame)
    return True


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
