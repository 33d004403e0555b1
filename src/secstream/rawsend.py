"""WebSockets at ``/ws`` straight to their endpoint, with the server's own ``send``.

Starlette wraps each connection in a layer per middleware, router and exception
handler: a few coroutine frames held for the life of every socket, and a few
calls per frame sent. ``DirectWebSocket`` (the outermost middleware) hands a
WebSocket at ``path`` to its endpoint itself, and records the server's ``send``
in the scope so the hot path can give text frames to it directly (``raw_send``).
Nothing else changes: no middleware here acts on WebSocket traffic, and an
error in the endpoint reaches the server as it would through Starlette.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

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
