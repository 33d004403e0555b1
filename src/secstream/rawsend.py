"""The ASGI server's own ``send`` for a WebSocket, kept in its scope.

Starlette wraps ``send`` in a layer per router and exception handler; for
every frame of every socket that is a few coroutine calls of pure overhead.
``RawSend`` (the outermost middleware) records the server's callable in the
scope so the hot path can hand text frames to it directly; the handshake and
the close still go through Starlette.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_KEY = "secstream.raw_send"


class RawSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[_KEY] = send
        await self.app(scope, receive, send)


def raw_send(scope: Scope) -> Send | None:
    send: Send | None = scope.get(_KEY)
    return send
