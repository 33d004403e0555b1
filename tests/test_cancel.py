"""``POST /api/v1/tests/{id}/cancel``: permissions, bounds, audit lines, and a request that
reaches a TestRun in another process within a second, Redis restart included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from live import LiveApp
from secstream import Publisher
from secstream.cancel_route import MAX_CANCEL_BODY
from secstream.control import MAX_REASON_CHARS
from secstream.redis_server import RedisServer, die_with_parent

pytestmark = pytest.mark.anyio
LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]
WORKER = Path(__file__).parent / "cancel_worker.py"


async def cancel(app: LiveApp, token: str | None, test_id: str, body: Any = None) -> Any:
    async with app.http(token) as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
        return await http.post(f"/api/v1/tests/{test_id}/cancel", content=content)


@contextlib.asynccontextmanager
async def held_run(
    pub: Publisher, test_id: str, **kwargs: Any
) -> AsyncIterator[asyncio.Task[str]]:
    """A run going on in a task of its own; the task returns the run's final status."""
    entered = asyncio.Event()

    async def body() -> str:
        async with pub.test_run(test_id, **kwargs) as run:
            entered.set()
            await asyncio.sleep(30)
        return run.status

    task = asyncio.ensure_future(body())
    await entered.wait()
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_who_may_cancel(
    live_app: LiveAppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="secstream.audit")
    with anyio.fail_after(30):
        async with live_app() as app:
            url, prefix = app.settings.redis_url, app.settings.key_prefix
            owner = app.token("u-7", ["viewer"])
            other = app.token("u-8", ["analyst"])
            admin = app.token("boss", ["admin"])
            async with Publisher(url, key_prefix=prefix) as pub:
                assert (await cancel(app, None, "t-1")).status_code == 401
                assert (await cancel(app, owner, "t-unknown")).status_code == 404
                async with held_run(pub, "t-1", user_id="u-7") as task:
                    denied = await cancel(app, other, "t-1", {"reason": "mine now"})
                    assert denied.status_code == 403, denied.text
                    ok = await cancel(app, owner, "t-1", {"reason": "wrong target"})
                    assert ok.status_code == 202, ok.text
                    assert ok.json()["test_id"] == "t-1"
                    assert await task == "cancelled"
                finished = await cancel(app, owner, "t-1")
                assert finished.status_code == 409, finished.text
                # the owner of another run, or none at all: only an admin
                async with held_run(pub, "t-2", audience={"groups": ["red"]}) as task:
                    assert (await cancel(app, owner, "t-2")).status_code == 403
                    assert (await cancel(app, admin, "t-2", {})).status_code == 202
                    assert await task == "cancelled"
    records = [r for r in caplog.records if r.name == "secstream.audit"]
    seen = [(r.outcome, r.sub, r.test_id, r.status_code) for r in records]  # type: ignore[attr-defined]
    assert seen == [
        ("denied", None, "t-1", 401),
        ("denied", "u-7", "t-unknown", 404),
        ("denied", "u-8", "t-1", 403),
        ("allowed", "u-7", "t-1", 202),
        ("denied", "u-7", "t-1", 409),
        ("denied", "u-7", "t-2", 403),
        ("allowed", "boss", "t-2", 202),
    ]
    assert all(r.action == "test.cancel" for r in records)  # type: ignore[attr-defined]
    assert all(r.node and r.address == "127.0.0.1" for r in records)  # type: ignore[attr-defined]


async def test_cancelled_event_says_who_and_why(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app() as app, app.ws(app.token("u-7", ["viewer"])) as ws:
            await ws.subscribe(["test.*"])
            url, prefix = app.settings.redis_url, app.settings.key_prefix
            async with Publisher(url, key_prefix=prefix) as pub:
                async with held_run(pub, "t-w", user_id="u-7", metadata={"target": "h"}) as task:
                    started = await ws.event()
                    assert started["data"]["metadata"] == {"target": "h"}
                    response = await cancel(
                        app, app.token("u-7", ["viewer"]), "t-w", {"reason": "stop it"}
                    )
                    assert response.status_code == 202
                    await task
            ended = await ws.event()
            assert ended["event_type"] == "test.cancelled"
            assert ended["data"]["cancelled_by"] == "u-7"
            assert ended["data"]["reason"] == "stop it"
            assert set(ended["data"]["summary"]) >= {"findings", "duration_seconds", "lines"}


async def test_bad_requests_are_bounded(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app() as app:
            admin = app.token()
            url, prefix = app.settings.redis_url, app.settings.key_prefix
            async with Publisher(url, key_prefix=prefix) as pub, held_run(pub, "t-b") as task:
                big = b'{"reason": "' + b"x" * MAX_CANCEL_BODY + b'"}'
                assert (await cancel(app, admin, "t-b", big)).status_code == 413
                long = {"reason": "x" * (MAX_REASON_CHARS + 1)}
                response = await cancel(app, admin, "t-b", long)
                assert response.status_code == 422 and response.json()["field"] == "reason"
                for body in (b"[1]", b"{", b'{"reason": 5}', b'{"why": "x"}'):
                    assert (await cancel(app, admin, "t-b", body)).status_code == 422, body
                assert (await cancel(app, admin, "x" * 300)).status_code == 404
                async with held_run(pub, "scan/1 é") as odd:
                    assert (await cancel(app, admin, "scan/1%20%C3%A9")).status_code == 202
                    assert await odd == "cancelled"
                assert not task.done()  # none of these reached the run
                ok = await cancel(app, admin, "t-b", {"reason": "x" * MAX_REASON_CHARS})
                assert ok.status_code == 202
                assert await task == "cancelled"


@contextlib.asynccontextmanager
async def worker(url: str, prefix: str, test_id: str, user: str) -> AsyncIterator[Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), url, prefix, test_id, user,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        assert proc.stdout is not None
        with anyio.fail_after(15):
            assert (await proc.stdout.readline()).strip() == b"started"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def result_of(proc: Any) -> dict[str, Any]:
    with anyio.fail_after(10):
        line = await proc.stdout.readline()
    assert line, "the worker ended without reporting"
    result: dict[str, Any] = json.loads(line)
    assert await proc.wait() == 0
    return result


async def cancel_and_time(app: LiveApp, test_id: str) -> tuple[float, Any]:
    """Send the request (retrying while Redis comes back); when it was answered 202."""
    admin = app.token("boss", ["admin"])
    with anyio.fail_after(15):
        while True:
            response = await cancel(app, admin, test_id, {"reason": "wrong host"})
            if response.status_code != 503:
                break
            await asyncio.sleep(0.05)
    assert response.status_code == 202, response.text
    return time.time(), response


async def test_cancel_reaches_a_run_in_another_process_within_a_second(
    live_app: LiveAppFactory, redis_server: RedisServer, key_prefix: str
) -> None:
    async with live_app(redis_url=redis_server.url) as app:
        async with worker(redis_server.url, key_prefix, "t-x", "u-7") as proc:
            await asyncio.sleep(0.7)  # the worker's read is blocking by now
            sent = time.time()
            await cancel_and_time(app, "t-x")
            result = await result_of(proc)
        took = result["seen_at"] - sent
        print(f"cancel reached the other process in {took * 1000:.1f} ms")
        assert took < 1.0
        assert result["by"] == "boss" and result["reason"] == "wrong host"
        assert result["status"] == "cancelled"
        async with app.http(app.token()) as http:
            page = (await http.get("/api/v1/events", params={"since": "0", "test_id": "t-x"}))
        last = page.json()["events"][-1]
        assert last["event_type"] == "test.cancelled" and last["data"]["cancelled_by"] == "boss"


async def test_cancel_reaches_the_run_after_a_redis_restart(
    live_app: LiveAppFactory, redis_server: RedisServer, key_prefix: str
) -> None:
    async with live_app(redis_url=redis_server.url) as app:
        async with worker(redis_server.url, key_prefix, "t-y", "u-7") as proc:
            redis_server.stop()
            await asyncio.sleep(1.5)  # the worker's read fails and retries meanwhile
            redis_server.start()
            back = time.time()
            sent = time.time()
            answered, _ = await cancel_and_time(app, "t-y")
            result = await result_of(proc)
        took = result["seen_at"] - sent
        print(
            f"after the restart: request answered {(answered - back) * 1000:.0f} ms after Redis "
            f"was back; reached the other process {took * 1000:.1f} ms after it was sent"
        )
        assert took < 1.0
        assert result["by"] == "boss" and result["status"] == "cancelled"


async def test_the_demo_simulator_honours_cancel(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app(demo=True) as app:
            starter = app.token("ana", ["viewer"])
            async with app.ws(starter) as mine, app.ws(app.token("bob", ["viewer"])) as other:
                await mine.subscribe(["test.*"])
                await other.subscribe(["test.*"])
                async with app.http(starter) as http:
                    started = await http.post("/api/v1/dev/simulate", content=b"{}")
                assert started.status_code == 202
                test_id = started.json()["test_id"]
                first = await mine.event()
                assert first["event_type"] == "test.started" and first["user_id"] == "ana"
                metadata = first["data"]["metadata"]
                assert metadata["started_by"] == "ana" and metadata["target"]
                assert metadata["profile"]
                await mine.event()  # a line of output
                response = await cancel(app, starter, test_id, {"reason": "enough"})
                assert response.status_code == 202
                while (event := await mine.event())["event_type"] != "test.cancelled":
                    assert event["event_type"] == "test.progress"
                assert event["data"]["cancelled_by"] == "ana"
                assert event["data"]["reason"] == "enough"
                assert event["data"]["summary"]["target"] == metadata["target"]
                assert (await cancel(app, starter, test_id)).status_code == 409
                # the run's audience is its starter (and admins): another viewer saw nothing
                marker = await app.publish("test.progress", {"test_id": "marker"})
                while (seen := await other.event())["id"] != marker:
                    assert seen["data"]["test_id"] != test_id  # a background test may show


async def test_cancel_requests_are_rate_limited(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app(publish_rate=0.5, publish_burst=2) as app:
            token = app.token("u-9", ["viewer"])
            assert (await cancel(app, token, "t-none")).status_code == 404
            assert (await cancel(app, token, "t-none")).status_code == 404
            limited = await cancel(app, token, "t-none")
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
