"""The Python publisher of contract section 6, against a real Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from secstream import Publisher
from secstream.entries import StreamEntry
from secstream.errors import EventInvalid
from secstream.eventlog import RedisEventLog

pytestmark = pytest.mark.anyio


def everything(entry: StreamEntry) -> bool:
    return True


async def read_all(url: str, prefix: str) -> list[dict[str, Any]]:
    async with Redis.from_url(url) as redis:
        log = RedisEventLog(redis, prefix=prefix)
        page = await log.read_page("0", everything, limit=1000)
    return [json.loads(e.frame) for e in page.entries]


async def audiences(url: str, prefix: str) -> list[Any]:
    async with Redis.from_url(url) as redis:
        log = RedisEventLog(redis, prefix=prefix)
        page = await log.read_page("0", everything, limit=1000)
    return [e.audience for e in page.entries]


async def test_publish_appends_to_the_log(shared_redis_url: str, key_prefix: str) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            first = await pub.publish(
                "system.alert", {"title": "Open port 23"}, priority="critical"
            )
            second = await pub.publish(
                "user.notification", {"title": "hi"}, audience={"users": ["u-7"]},
                user_id="u-1", correlation_id="req-1",
            )
            with pytest.raises(EventInvalid) as info:
                await pub.publish("test.progress", {"progress": 1})
            assert info.value.field == "data.test_id"
            with pytest.raises(EventInvalid):
                await pub.publish("no.such", {})
        events = await read_all(shared_redis_url, key_prefix)
        assert [e["id"] for e in events] == [first, second]
        assert events[0]["event_type"] == "system.alert" and events[0]["priority"] == "critical"
        assert events[0]["data"] == {"title": "Open port 23"}
        assert events[1]["user_id"] == "u-1" and events[1]["correlation_id"] == "req-1"
        assert events[1]["priority"] == "normal"
        aud = (await audiences(shared_redis_url, key_prefix))[1]
        assert aud is not None and aud.users == frozenset({"u-7"})


async def test_test_run_publishes_started_progress_completed(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            async with pub.test_run(
                "t-42", module="network_recon", user_id="u-7", audience={"groups": ["red"]}
            ) as run:
                await run.progress(45, "Running port scan on 192.168.1.1...")
        events = await read_all(shared_redis_url, key_prefix)
        assert [e["event_type"] for e in events] == [
            "test.started", "test.progress", "test.completed"
        ]
        for e in events:
            assert e["data"]["test_id"] == "t-42"
            assert e["data"]["module"] == "network_recon"
            assert e["user_id"] == "u-7"
        assert events[1]["data"]["progress"] == 45
        assert events[1]["data"]["output"] == "Running port scan on 192.168.1.1..."
        for aud in await audiences(shared_redis_url, key_prefix):
            assert aud is not None and aud.groups == frozenset({"red"})


async def test_test_run_exception_publishes_error_and_reraises(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            with pytest.raises(RuntimeError, match="scanner crashed"):
                async with pub.test_run("t-1", module="web") as run:
                    await run.progress(10)
                    raise RuntimeError("scanner crashed")
        events = await read_all(shared_redis_url, key_prefix)
        assert [e["event_type"] for e in events] == ["test.started", "test.progress", "test.error"]
        error = events[-1]
        assert error["data"]["test_id"] == "t-1" and error["data"]["module"] == "web"
        assert error["data"]["error"] == {"type": "RuntimeError", "message": "scanner crashed"}
        assert error["user_id"] is None


async def test_test_run_cancellation_publishes_cancelled(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            entered = asyncio.Event()

            async def run_forever() -> None:
                async with pub.test_run("t-c", module="m", user_id="u") as run:
                    await run.progress(5)
                    entered.set()
                    await asyncio.Event().wait()

            task = asyncio.ensure_future(run_forever())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        events = await read_all(shared_redis_url, key_prefix)
        assert [e["event_type"] for e in events] == [
            "test.started", "test.progress", "test.cancelled"
        ]
        assert events[-1]["data"]["test_id"] == "t-c" and events[-1]["user_id"] == "u"


async def test_key_prefix_comes_from_the_environment(
    shared_redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with anyio.fail_after(10):
        monkeypatch.setenv("SECSTREAM_KEY_PREFIX", key_prefix)
        async with Publisher(shared_redis_url) as pub:
            assert pub.log.prefix == key_prefix
            eid = await pub.publish("system.status", {})
        assert [e["id"] for e in await read_all(shared_redis_url, key_prefix)] == [eid]
        explicit = f"{key_prefix}-x"
        async with Publisher(shared_redis_url, key_prefix=explicit) as pub:
            assert pub.log.prefix == explicit
        monkeypatch.delenv("SECSTREAM_KEY_PREFIX")
        async with Publisher(shared_redis_url) as pub:
            assert pub.log.prefix == "secstream"


async def test_published_events_reach_a_socket(live_app: Any) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            await ws.subscribe(["test.*"])
            async with Publisher(app.settings.redis_url, key_prefix=app.settings.key_prefix) as pub:
                async with pub.test_run("t-9", module="m") as run:
                    await run.progress(50, "half")
            got = await ws.events(3)
            assert [e["event_type"] for e in got] == [
                "test.started", "test.progress", "test.completed"
            ]


async def test_concurrent_publishes_share_round_trips(shared_redis_url: str,
                                                      key_prefix: str) -> None:
    with anyio.fail_after(20):
        async with Publisher(shared_redis_url, key_prefix=key_prefix, sub="svc") as pub:
            ids = await asyncio.gather(*(
                pub.publish("system.status", {"n": n}) for n in range(100)
            ), pub.publish("system.alert", {"title": "once"}, idempotency_key="k"),
               pub.publish("system.alert", {"title": "twice"}, idempotency_key="k"))
            calls = pub._appender.calls
        assert calls < 10 and len(set(ids[:100])) == 100 and ids[100] == ids[101]
        events = await read_all(shared_redis_url, key_prefix)
        assert [e["id"] for e in events] == ids[:101]  # in the order they were asked
        assert [e["data"].get("n") for e in events[:100]] == list(range(100))
        assert events[100]["data"] == {"title": "once"}
