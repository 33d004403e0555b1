"""The service's own system.status and threshold alerts (contract section 8)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from live import LiveApp, WsClient
from secstream.redis_server import RedisServer

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]
pytestmark = pytest.mark.anyio


async def alerts_until(
    ws: WsClient, want: list[tuple[str, str]], within: float = 15
) -> list[dict[str, Any]]:
    """system.alert events (source secstream) until ``want`` (alert, state) have been seen."""
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(within):
        while not all(any((a["alert"], a["state"]) == w for a in seen) for w in want):
            frame = await ws.event(within)
            if frame["event_type"] == "system.alert" and frame["data"].get("source") == "secstream":
                seen.append(frame["data"])
    return seen


async def test_status_every_interval_with_the_service_figures(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(20):
        async with live_app(status_interval=0.5) as app, app.ws() as ws:
            await ws.subscribe(["system.status"])
            statuses = []
            while len(statuses) < 2:
                frame = await ws.event(5)
                if frame["data"].get("source") == "secstream":
                    statuses.append(frame["data"])
            data = statuses[-1]
            assert data["nodes"] == 1 and data["connections"] == 1
            assert isinstance(data["redis_memory_bytes"], int) and data["redis_memory_bytes"] > 0
            assert data["events_per_second"] >= 0
            assert data["reported_by"] == app.service.node_id
            assert data["slowest_node_lag_seconds"] < 5 and data["max_event_loop_lag_seconds"] < 5
            assert data["slowest_node"] == app.service.node_id and "delivery_p99_seconds" in data


async def test_no_status_when_the_interval_is_zero(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(20):
        async with live_app(status_interval=0) as app, app.ws() as ws:
            await ws.subscribe(["system.status"])
            await app.service.status.check()
            with pytest.raises(TimeoutError):
                await ws.event(1.0)


async def test_shared_alert_fires_once_and_clears_once_across_two_nodes(
    live_app: LiveAppFactory, shared_redis_url: str, key_prefix: str
) -> None:
    settings = {"status_interval": 0.3, "retention_seconds": 3600}
    with anyio.fail_after(30):
        async with live_app(**settings) as a, live_app(**settings) as b, a.ws() as ws:
            await ws.subscribe(["system.alert"])
            redis = Redis.from_url(shared_redis_url)
            try:
                # The length cap trimmed an entry a minute old: younger than the retention.
                await redis.set(f"{key_prefix}:trimmed", f"{int((time.time() - 60) * 1000)}-0")
                seen = await alerts_until(ws, [("retention_cap", "firing")])
                await anyio.sleep(1.5)  # several checks on both nodes
                await redis.set(f"{key_prefix}:trimmed", f"{int((time.time() - 7200) * 1000)}-0")
                seen += await alerts_until(ws, [("retention_cap", "cleared")])
                await anyio.sleep(1.5)
                await a.service.status.check()
                await b.service.status.check()
                with anyio.move_on_after(1.5):
                    while True:
                        extra = await ws.event(5)
                        seen.append(extra["data"])
            finally:
                await redis.aclose()
            states = [d["state"] for d in seen if d["alert"] == "retention_cap"]
            assert states == ["firing", "cleared"], seen


async def test_per_node_connections_alert(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app(status_interval=0.3, max_connections=3) as app, app.ws() as admin:
            await admin.subscribe(["system.alert"])
            async with app.ws(), app.ws():
                seen = await alerts_until(admin, [("connections_high", "firing")])
            seen += await alerts_until(admin, [("connections_high", "cleared")])
            mine = [d for d in seen if d["alert"] == "connections_high"]
            assert [d["state"] for d in mine] == ["firing", "cleared"]
            assert mine[0]["node"] == app.service.node_id and mine[0]["value"] == 3


async def test_redis_outage_is_alerted_once_it_is_back(
    live_app: LiveAppFactory, redis_server: RedisServer
) -> None:
    with anyio.fail_after(60):
        async with live_app(redis_url=redis_server.url, status_interval=0.3) as app, \
                app.ws() as ws:
            await ws.subscribe(["system.alert"])
            redis_server.stop()
            await anyio.sleep(2.0)
            assert app.service.status._down_since is not None
            redis_server.start()
            seen = await alerts_until(ws, [("redis_unreachable", "cleared")], within=30)
            mine = [d for d in seen if d["alert"] == "redis_unreachable"]
            assert [d["state"] for d in mine] == ["firing", "cleared"]
            assert mine[0]["seconds"] >= 1.0 and mine[0]["since"].endswith("Z")
