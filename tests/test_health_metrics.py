"""/health/ready while draining or full, and metrics that count what really happened."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import pytest

from live import LiveApp
from secstream.publisher import Publisher

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]
pytestmark = pytest.mark.anyio


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


async def test_ready_is_503_when_full_and_says_why(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app(max_connections=1) as app, app.http() as http:
            ready = await http.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["reasons"] == []
            async with app.ws():
                ready = await http.get("/health/ready")
                assert ready.status_code == 503
                assert ready.json()["reasons"] == ["overloaded"] and ready.json()["redis"]
            with anyio.fail_after(5):
                while True:
                    if (await http.get("/health/ready")).status_code == 200:
                        break
                    await anyio.sleep(0.05)


async def test_ready_is_503_while_draining(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app() as app, app.http() as http:
            await app.service.drain()
            ready = await http.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["draining"] is True
            assert "draining" in ready.json()["reasons"]


async def test_published_counts_publisher_appends_and_http_once(
    live_app: LiveAppFactory, shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(40):
        async with live_app() as app, app.http(app.token()) as http:
            async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
                async with pub.test_run("t-m", module="m") as run:
                    for i in range(88):
                        await run.progress(i)
            # 90 from the Publisher (started, 88 progress, completed), 2 over HTTP.
            batch = {"events": [{"event_type": "system.status", "data": {}}] * 2}
            assert (await http.post("/api/v1/events/batch", json=batch)).status_code == 202
            with anyio.fail_after(5):
                while True:
                    text = (await http.get("/metrics")).text
                    if sample(text, "secstream_events_published_total") >= 92:
                        break
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)
            text = (await http.get("/metrics")).text
            assert sample(text, "secstream_events_published_total") == 92
            assert "secstream_events_coalesced" not in text


async def test_connection_duration_is_recorded_at_close(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app() as app, app.http() as http:
            text = (await http.get("/metrics")).text
            assert sample(text, "secstream_connection_duration_seconds_count") == 0
            async with app.ws():
                await anyio.sleep(1.1)
            with anyio.fail_after(5):
                while sample(text, "secstream_connection_duration_seconds_count") < 1:
                    await anyio.sleep(0.05)
                    text = (await http.get("/metrics")).text
            assert sample(text, 'secstream_connection_duration_seconds_bucket{le="1.0"}') == 0
            assert sample(text, 'secstream_connection_duration_seconds_bucket{le="10.0"}') == 1
