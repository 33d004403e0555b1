"""Administration across nodes (contract section 5): two ``serve`` processes on one Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from live import JWT_SECRET, hs256
from support import ServeProcess

pytestmark = pytest.mark.slow

ENV = {"SECSTREAM_JWT_SECRET": JWT_SECRET}


def token(sub: str, roles: list[str]) -> str:
    return hs256({"sub": sub, "roles": roles, "exp": time.time() + 3600})


async def listed(http: httpx.AsyncClient, **match: Any) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/connections")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["connections"]
    return [c for c in found if all(c.get(k) == v for k, v in match.items())]


async def until(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {within} s: {what}")


def test_list_and_close_connections_on_another_node(
    redis_url: str, serve: Callable[..., ServeProcess]
) -> None:
    a = serve(redis_url, env=ENV)
    b = serve(redis_url, env=ENV)
    admin = {"Authorization": f"Bearer {token('root', ['admin'])}"}

    async def scenario() -> None:
        protocols = ["secstream.v1", f"bearer.{token('v-b', ['viewer'])}"]
        async with connect(b.ws_url + "?client_id=cb", subprotocols=protocols) as ws, \
                httpx.AsyncClient(base_url=a.base_url, headers=admin) as http:
            welcome = await ws.recv()
            conn_id = json.loads(welcome)["connection_id"]
            await ws.send('{"type":"subscribe","id":"s","event_types":["test.*"]}')
            entries = await until(
                lambda: listed(http, id=conn_id, state="live"), 10, "B's connection listed on A"
            )
            (entry,) = entries
            assert entry["user"] == "v-b" and entry["roles"] == ["viewer"]
            assert entry["node"] != (await http.get("/api/v1/connections")).json()["node"]
            assert entry["address"] == "127.0.0.1" and entry["client_id"] == "cb"
            for field in ("subscriptions", "connected_since", "queue_bytes", "sent", "received"):
                assert field in entry, field
            assert (await http.delete("/api/v1/connections/nope-123")).status_code == 404
            assert (await http.delete(f"/api/v1/connections/{conn_id}")).status_code == 204
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 4003
            await until(lambda: _gone(http, conn_id), 5, "closed connection unlisted")
            # The audit trail on either node names who closed what.
            records = (await http.get("/api/v1/audit", params={"action": "admin.close"})).json()
            (closed,) = [r for r in records["records"] if r["outcome"] == "allowed"]
            assert closed["sub"] == "root" and closed["connection_id"] == conn_id

    asyncio.run(scenario())


async def _gone(http: httpx.AsyncClient, conn_id: str) -> bool:
    return not await listed(http, id=conn_id)


def test_a_dead_nodes_connections_leave_the_list_within_30_seconds(
    redis_url: str, serve: Callable[..., ServeProcess]
) -> None:
    a = serve(redis_url, env=ENV)
    b = serve(redis_url, env=ENV)
    admin = {"Authorization": f"Bearer {token('root', ['admin'])}"}

    async def scenario() -> None:
        protocols = ["secstream.v1", f"bearer.{token('v-dead', ['viewer'])}"]
        async with connect(b.ws_url, subprotocols=protocols) as ws, \
                httpx.AsyncClient(base_url=a.base_url, headers=admin) as http:
            await ws.recv()
            await until(lambda: listed(http, user="v-dead"), 10, "listed")
            b.kill()
            started = time.monotonic()
            await until(lambda: _none(http, "v-dead"), 35, "dead node's entries gone")
            assert time.monotonic() - started <= 31

    asyncio.run(scenario())


async def _none(http: httpx.AsyncClient, user: str) -> bool:
    return not await listed(http, user=user)
