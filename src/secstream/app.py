"""create_app(settings): the Starlette application, its routes and its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from secstream import admin, endpoints
from secstream.cancel_route import cancel_test
from secstream.config import Settings
from secstream.middleware import (
    CONTENT_SECURITY_POLICY,
    ForwardedHeader,
    SecurityHeaders,
    content_security_policy,
    networks,
)
from secstream.publish_route import DirectPublish
from secstream.rawsend import DirectWebSocket
from secstream.service import Service
from secstream.websocket import websocket_endpoint

WEB_DIR = Path(__file__).parent / "web"

__all__ = ["Service", "create_app"]


def create_app(settings: Settings, *, redis: Redis | None = None) -> Starlette:
    service = Service(settings, redis)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.drain()
            await service.stop()

    policy = _policy(service)
    middleware = [
        # Publishes skip the layers below, with the same security headers (publish_route).
        Middleware(DirectPublish, service, policy),
        Middleware(SecurityHeaders, policy),
        Middleware(GZipMiddleware, minimum_size=1024),
    ]
    if settings.trusted_proxies:
        middleware.insert(0, Middleware(ForwardedHeader, networks(settings.trusted_proxies)))
    app = App(
        routes=_routes(settings.static_dir or WEB_DIR),
        lifespan=lifespan,
        middleware=middleware,
    )
    # /ws skips Starlette's whole stack; it still has the client address from Forwarded.
    front: ASGIApp = DirectWebSocket(app.starlette, "/ws", websocket_endpoint)
    if settings.trusted_proxies:
        front = ForwardedHeader(front, networks(settings.trusted_proxies))
    app.websockets = front
    app.state.service = service
    return app


class App(Starlette):
    """Starlette, with WebSockets passed to ``websockets`` (``DirectWebSocket``: ``/ws``
    straight to its endpoint) before Starlette's own stack.

    Every coroutine frame between the server and the endpoint is held for the life of
    each socket: Starlette's ``__call__`` and its error middleware (which for a
    WebSocket only passes the call on; an error still reaches the server, which logs
    it) were two of them. Any other WebSocket path goes on through Starlette as before.
    """

    websockets: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope["app"] = self
            return await self.websockets(scope, receive, send)
        return await super().__call__(scope, receive, send)

    async def starlette(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starlette's own ``__call__``: its middleware, router and error handling."""
        await super().__call__(scope, receive, send)


def _policy(service: Service) -> Callable[[], str]:
    """The page's CSP: with an OpenID provider, the dashboard also talks to it."""
    oidc = service.oidc
    if oidc is None:
        return lambda: CONTENT_SECURITY_POLICY
    return lambda: content_security_policy(*oidc.browser_origins())


_NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>secstream</title>
<body style="font-family:system-ui;max-width:40em;margin:4em auto">
<h1>secstream is running</h1><p>The front end has not been built. Run
<code>scripts/demo</code> (or <code>npm ci &amp;&amp; npm run build</code> in
<code>frontend/</code>) and reload.</p>"""


async def _not_built(request: Request) -> Response:
    return HTMLResponse(_NOT_BUILT)


def _routes(web_dir: Path) -> list[BaseRoute]:
    api: list[BaseRoute] = [
        WebSocketRoute("/ws", websocket_endpoint),
        Route("/api/v1/events", endpoints.poll, methods=["GET"]),
        Route("/api/v1/connections", admin.connections, methods=["GET"]),
        Route(
            "/api/v1/connections/{connection_id}", admin.close_connection, methods=["DELETE"]
        ),
        Route("/api/v1/audit", admin.audit, methods=["GET"]),
        Route("/api/v1/tests/{test_id:path}/cancel", cancel_test, methods=["POST"]),
        Route("/api/v1/config", endpoints.client_config, methods=["GET"]),
        Route("/api/v1/dev/token", endpoints.dev_token, methods=["POST"]),
        Route("/api/v1/dev/simulate", endpoints.dev_simulate, methods=["POST"]),
        Route("/health/live", endpoints.health_live, methods=["GET"]),
        Route("/health/ready", endpoints.health_ready, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
    ]
    if (web_dir / "index.html").is_file():
        api.append(Mount("/", StaticFiles(directory=web_dir, html=True)))
    else:
        api.append(Route("/", _not_built, methods=["GET"]))
    return api
