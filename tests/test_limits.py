"""Limits beyond one connection: the alert to admins when a source keeps being
limited, handshakes per client address, and the load watch that refuses new
connections while the process is overloaded and recovers by itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from live import LiveApp
from secstream.limits import ALERT_AFTER

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]


def _metric(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not in /metrics")


async def _eventually(check: Callable[[], bool], within: float = 5) -> None:
    """The hub's load flag has no event to wait on: look every 10 ms."""
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_a_publisher_that_keeps_being_limited_raises_one_alert_for_admins_only(
    live_app: LiveAppFactory,
) -> None:
    async with live_app(publish_rate=1, publish_burst=1) as app:
        async with app.ws(app.token("root", ["admin"])) as admin, app.ws(
            app.token("ana", ["analyst"])
        ) as analyst:
            await admin.subscribe(["system.alert"])
            await analyst.subscribe(["system.alert"])
            body = {"event_type": "system.status", "data": {"status": "ok"}}
            async with app.http(app.token("noisy", ["publisher"])) as http:
                codes = [(await http.post("/api/v1/events", json=body)).status_code
                         for _ in range(ALERT_AFTER + 20)]
                metrics = (await http.get("/metrics")).text
            assert codes[0] == 202
            assert codes.count(429) >= ALERT_AFTER
            assert _metric(metrics, "secstream_rate_limited_total", 'kind="publish"') >= ALERT_AFTER

            alert = await admin.event(within=5)
            assert alert["event_type"] == "system.alert"
            assert alert["priority"] == "high"
            assert alert["data"]["kind"] == "publish"
            assert alert["data"]["source"] == "noisy"

            # One alert per source and kind: the next thing the admin sees is a marker;
            # the analyst (not in the audience) sees only the marker.
            marker = await app.publish("system.alert", {"title": "marker"})
            assert (await admin.event())["id"] == marker
            assert (await analyst.event())["id"] == marker


async def test_refused_handshakes_per_client_address_are_limited_with_429(
    live_app: LiveAppFactory,
) -> None:
    async with live_app(handshake_rate=1) as app:  # a burst of 2 refusals, then 1 per second
        valid = f"{app.ws_url}?token={app.token('u-1', ['viewer'])}"
        # valid handshakes are never limited by address, however many
        for _ in range(10):
            async with connect(valid, open_timeout=5):
                pass
        statuses = []
        for _ in range(4):
            try:
                async with connect(f"{app.ws_url}?token=forged", open_timeout=5):
                    statuses.append(101)
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)
                if exc.response.status_code == 429:
                    assert exc.response.headers["Retry-After"] == "1"
        assert statuses == [401, 401, 429, 429]
        # once the address is limited, its valid handshakes wait too, until it drains
        with pytest.raises(InvalidStatus) as limited:
            async with connect(valid, open_timeout=5):
                pass
        assert limited.value.response.status_code == 429
        await anyio.sleep(1.2)
        async with connect(valid, open_timeout=5):
            pass
        async with httpx.AsyncClient(base_url=app.base_url) as http:
            metrics = (await http.get("/metrics")).text
        assert _metric(metrics, "secstream_rate_limited_total", 'kind="handshake"') >= 1


async def test_an_overloaded_process_refuses_new_connections_and_recovers_by_itself(
    live_app: LiveAppFactory,
) -> None:
    # Heartbeat values set the load watch's tick: every 0.05 s here.
    async with live_app(heartbeat_interval=0.2, heartbeat_timeout=5) as app:
        hub = app.service.hub
        async with app.ws(app.token("u-1", ["viewer"])) as client:
            await client.subscribe(["test.*"])
            time.sleep(0.6)  # block the event loop: a lag the watch must notice  # noqa: ASYNC251
            await _eventually(lambda: hub.overloaded)
            assert len(hub.connections) == 1
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{app.ws_url}?token={app.token('u-2', ['viewer'])}"):
                    pass
            assert refused.value.response.status_code == 503
            await _eventually(lambda: not hub.overloaded)
            assert len(hub.connections) == 1
            async with app.ws(app.token("u-3", ["viewer"])) as late:
                assert late.welcome["user_id"] == "u-3"
