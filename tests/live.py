"""The app in-process under uvicorn on a real socket, and a small WebSocket test client."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import uvicorn
from joserfc import jwt
from joserfc.jwk import OctKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from secstream.app import create_app
from secstream.auth import Authenticator
from secstream.config import Settings
from secstream.protocol import Audience, PublishRequest, parse_offset
from secstream.server import uvicorn_config
from secstream.service import Service

JWT_SECRET = "secstream-tests-hs256-secret-0123456789"
SUBPROTOCOL = "secstream.v1"


def hs256(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    """A token with exactly these claims (expired ones too), signed with ``secret``."""
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret))


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the test owns the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclasses.dataclass
class LiveApp:
    """``create_app(settings)`` served by uvicorn on 127.0.0.1:``port``."""

    settings: Settings
    service: Service
    port: int
    auth: Authenticator

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def token(
        self,
        sub: str = "u-1",
        roles: list[str] | None = None,
        groups: list[str] | None = None,
        expires_in: float = 3600,
    ) -> str:
        roles = ["admin"] if roles is None else roles
        return self.auth.mint(sub, roles, groups, expires_in)[0]

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10)

    async def publish(self, event_type: str, data: dict[str, Any] | None = None, **kw: Any) -> str:
        """Append one event straight to this app's log; its id."""
        if isinstance(kw.get("audience"), dict):
            kw["audience"] = Audience(**kw["audience"])
        event = PublishRequest(event_type=event_type, data=data or {}, **kw)
        (offset,) = await self.service.log.append([event])
        await self.caught_up(offset)
        return offset

    async def caught_up(self, offset: str) -> None:
        """Wait until the hub's tail has dispatched ``offset``: a later subscribe replays it."""
        hub = self.service.hub
        with anyio.fail_after(5):
            while parse_offset(hub.last_id) < parse_offset(offset):
                await hub.wait_for_events(hub.last_id, 1)

    @contextlib.asynccontextmanager
    async def ws(
        self,
        token: str | None = None,
        *,
        client_id: str | None = None,
        via: str = "subprotocol",
    ) -> AsyncIterator[WsClient]:
        """A connected client whose ``welcome`` has been read (``client.welcome``)."""
        token = self.token() if token is None else token
        url = self.ws_url
        params = []
        subprotocols = [SUBPROTOCOL]
        if via == "query":
            params.append(f"token={token}")
        else:
            subprotocols.append(f"bearer.{token}")
        if client_id is not None:
            params.append(f"client_id={client_id}")
        if params:
            url += "?" + "&".join(params)
        async with connect(
            url, subprotocols=subprotocols, open_timeout=5, close_timeout=2  # type: ignore[arg-type]
        ) as conn:
            client = WsClient(conn)
            client.welcome = await client.expect("welcome")
            yield client


@contextlib.asynccontextmanager
async def run_app(settings: Settings) -> AsyncIterator[LiveApp]:
    """Serve ``create_app(settings)`` as a task of this event loop; shut it down cleanly."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The server's own limits (frame size, header guard, proxies), as ``serve`` runs it.
    config = uvicorn_config(
        app,
        settings,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = _QuietServer(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                with anyio.fail_after(10):
                    while not server.started:
                        if server.should_exit:
                            raise RuntimeError("the app did not start")
                        await anyio.sleep(0.01)
                yield LiveApp(
                    settings=settings,
                    service=app.state.service,
                    port=port,
                    auth=app.state.service.auth,
                )
            finally:
                server.should_exit = True
    finally:
        sock.close()


class WsClient:
    """JSON frames over one socket; ``batch`` frames are split into their events."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.welcome: dict[str, Any] = {}
        self._buffer: deque[dict[str, Any]] = deque()

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.conn.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, within: float = 5, *, pings: bool = False) -> dict[str, Any]:
        """The next frame (a ``batch`` counts as its events); ``ping`` skipped unless asked."""
        with anyio.fail_after(within):
            while True:
                if self._buffer:
                    frame = self._buffer.popleft()
                else:
                    frame = json.loads(await self.conn.recv())
                    if frame["type"] == "batch":
                        self._buffer.extend(frame["events"])
                        continue
                if frame["type"] == "ping" and not pings:
                    continue
                return frame

    async def expect(self, type_: str, within: float = 5, **fields: Any) -> dict[str, Any]:
        """The next frame, which must be of ``type_`` with these fields."""
        frame = await self.recv(within, pings=type_ == "ping")
        assert frame["type"] == type_, frame
        for key, value in fields.items():
            assert frame.get(key) == value, (key, frame)
        return frame

    async def event(self, within: float = 5) -> dict[str, Any]:
        return await self.expect("event", within)

    async def events(self, n: int, within: float = 5) -> list[dict[str, Any]]:
        return [await self.event(within) for _ in range(n)]

    async def subscribe(
        self, event_types: list[str], ref: str = "s", **extra: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send ``subscribe``; its ``subscribed`` reply and its ``replayed`` frame.

        Only valid when the subscription replays nothing (events would sit between).
        """
        await self.send({"type": "subscribe", "id": ref, "event_types": event_types, **extra})
        subscribed = await self.expect("subscribed", ref=ref)
        replayed = await self.expect("replayed", ref=ref, subscription=subscribed["subscription"])
        return subscribed, replayed

    async def closed_with(self, within: float = 5) -> int | None:
        """Read until the server closes; its close code."""
        with anyio.fail_after(within):
            try:
                while True:
                    await self.conn.recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd is not None else None
