"""TestRun against a real Redis: metadata, findings, summary, error data, default audience,
and cancel requests delivered through the control stream (contract section 6)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from secstream import Publisher
from secstream.control import FINISHED_TTL, RUNNING_TTL, RunRecords
from secstream.control_reader import ControlReader
from secstream.entries import StreamEntry
from secstream.eventlog import RedisEventLog
from secstream.testrun import MAX_ERROR_MESSAGE

pytestmark = pytest.mark.anyio


def everything(entry: StreamEntry) -> bool:
    return True


async def entries(url: str, prefix: str) -> list[StreamEntry]:
    async with Redis.from_url(url) as redis:
        page = await RedisEventLog(redis, prefix=prefix).read_page("0", everything, limit=1000)
    return page.entries


async def events(url: str, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(e.frame) for e in await entries(url, prefix)]


async def test_metadata_findings_and_summary(shared_redis_url: str, key_prefix: str) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            meta = {"target": "10.0.0.5", "profile": "full", "started_by": "u-7", "ports": [22]}
            async with pub.test_run("t-1", module="recon", user_id="u-7", metadata=meta) as run:
                await run.progress(10, "scanning 10.0.0.5")
                await run.progress(20)  # no output: not a line
                await run.finding("critical", "Telnet exposed", message="port 23", port=23)
                await run.finding("medium", "Old TLS")
                await run.finding("medium", "Weak cipher")
                await run.finding("info", "Banner")
                await run.progress(90, "done scanning")
                run.summary["hosts"] = 1
                run.summary["lines"] = -1  # the run's own count wins
                with pytest.raises(ValueError, match="severity"):
                    await run.finding("severe", "nope")  # type: ignore[arg-type]
                await asyncio.sleep(0.2)
        got = await events(shared_redis_url, key_prefix)
    types = [e["event_type"] for e in got]
    assert types == [
        "test.started", "test.progress", "test.progress", "system.alert", "system.alert",
        "system.alert", "system.alert", "test.progress", "test.completed",
    ]
    started, completed = got[0], got[-1]
    assert started["data"]["metadata"] == meta
    assert "metadata" not in completed["data"]
    alerts = [e for e in got if e["event_type"] == "system.alert"]
    assert [a["priority"] for a in alerts] == ["critical", "normal", "normal", "low"]
    assert alerts[0]["data"] == {
        "test_id": "t-1", "title": "Telnet exposed", "severity": "critical",
        "message": "port 23", "port": 23, "module": "recon",
    }
    assert all(a["user_id"] == "u-7" for a in alerts)
    summary = completed["data"]["summary"]
    assert summary["findings"] == {"critical": 1, "high": 0, "medium": 2, "low": 0, "info": 1}
    assert summary["lines"] == 2
    assert summary["hosts"] == 1
    assert 0.2 <= summary["duration_seconds"] < 5
    assert completed["data"]["status"] == "completed" and completed["data"]["progress"] == 100


async def test_default_audience_is_the_user_and_admins(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            async with pub.test_run("t-own", user_id="u-7") as run:
                await run.finding("high", "x")
            async with pub.test_run("t-grp", user_id="u-7", audience={"groups": ["red"]}):
                pass
            async with pub.test_run("t-all"):
                pass
        got = await entries(shared_redis_url, key_prefix)
    own = [e for e in got if e.test_id == "t-own"]
    assert len(own) == 3  # started, alert, completed
    for e in own:
        assert e.audience is not None
        assert e.audience.users == frozenset({"u-7"}) and e.audience.roles == frozenset({"admin"})
        assert not e.audience.groups
    grp = [e for e in got if e.test_id == "t-grp"]
    assert all(e.audience is not None and e.audience.groups == {"red"} for e in grp)
    assert all(e.audience is not None and not e.audience.users for e in grp)
    assert all(e.audience is None for e in got if e.test_id == "t-all")


async def test_error_carries_type_and_message_never_a_traceback(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            with pytest.raises(KeyError):
                async with pub.test_run("t-e", module="m") as run:
                    await run.finding("low", "minor")

                    def deep() -> None:
                        raise KeyError("x" * 5000)

                    deep()
        got = await events(shared_redis_url, key_prefix)
    error = got[-1]
    assert error["event_type"] == "test.error" and error["priority"] == "high"
    assert error["data"]["error"]["type"] == "KeyError"
    message = error["data"]["error"]["message"]
    assert len(message) == MAX_ERROR_MESSAGE and message.startswith("'xxx")
    assert "Traceback" not in json.dumps(error) and "deep" not in json.dumps(error)
    assert error["data"]["summary"]["findings"]["low"] == 1


async def test_run_record_lives_while_running_and_is_remembered_after(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            records = RunRecords(pub.log.redis, prefix=key_prefix)
            assert await records.lookup("t-r") is None
            async with pub.test_run("t-r", user_id="u-1"):
                running = await records.lookup("t-r")
                assert running is not None and running.state == "running"
                assert running.users == frozenset({"u-1"})
                ttl = await pub.log.redis.ttl(records.run_key("t-r"))
                assert 0 < ttl <= RUNNING_TTL
            finished = await records.lookup("t-r")
            assert finished is not None and finished.state == "finished"
            assert finished.status == "completed"
            ttl = await pub.log.redis.ttl(records.run_key("t-r"))
            assert RUNNING_TTL < ttl <= FINISHED_TTL
            outcome, _ = await records.request_cancel("t-r", by="u-1", reason=None)
            assert outcome == "finished"
            assert (await records.request_cancel("t-none", by="u-1", reason=None))[0] == "unknown"


async def test_a_cancel_request_cancels_the_block_and_says_who(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            records = RunRecords(pub.log.redis, prefix=key_prefix)
            after_block = []
            async with pub.test_run("t-c", module="m", user_id="u-1") as run:
                await run.progress(30, "working")
                await run.finding("high", "found one")
                sent = time.monotonic()
                outcome, _ = await records.request_cancel("t-c", by="admin-1", reason="wrong host")
                assert outcome == "requested"
                await asyncio.sleep(30)  # cancelled here
                after_block.append("not reached")
            took = time.monotonic() - sent
            # the block ended without an exception; the task is not left cancelling
            assert after_block == [] and run.cancel_requested.is_set()
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
            await asyncio.sleep(0)  # no stray cancellation either
            assert run.cancelled_by == "admin-1" and run.cancel_reason == "wrong host"
            assert run.status == "cancelled"
        got = await events(shared_redis_url, key_prefix)
    assert took < 1.0
    last = got[-1]
    assert last["event_type"] == "test.cancelled"
    assert last["data"]["cancelled_by"] == "admin-1" and last["data"]["reason"] == "wrong host"
    assert last["data"]["progress"] == 30
    assert last["data"]["summary"]["findings"]["high"] == 1


async def test_handle_cancel_leaves_stopping_to_the_module(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            records = RunRecords(pub.log.redis, prefix=key_prefix)
            async with pub.test_run("t-h", handle_cancel=True) as run:
                await records.request_cancel("t-h", by="u-2", reason=None)
                await run.cancel_requested.wait()
                await asyncio.sleep(0.2)  # not cancelled: the module decides
                await run.progress(50, "cleaning up before stopping")
            # a second request, after the end, is refused
            assert (await records.request_cancel("t-h", by="u-2", reason=None))[0] == "finished"
        got = await events(shared_redis_url, key_prefix)
    assert [e["event_type"] for e in got] == ["test.started", "test.progress", "test.cancelled"]
    assert got[-1]["data"]["cancelled_by"] == "u-2" and got[-1]["data"]["reason"] is None


async def test_an_outside_cancellation_still_propagates(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(10):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            entered = asyncio.Event()

            async def body() -> None:
                async with pub.test_run("t-o"):
                    entered.set()
                    await asyncio.sleep(30)

            task = asyncio.ensure_future(body())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        got = await events(shared_redis_url, key_prefix)
    assert got[-1]["event_type"] == "test.cancelled"
    assert "cancelled_by" not in got[-1]["data"]


async def test_one_reader_serves_many_runs(shared_redis_url: str, key_prefix: str) -> None:
    """Twenty concurrent runs, one control read task; each cancel reaches only its run."""
    with anyio.fail_after(20):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            records = RunRecords(pub.log.redis, prefix=key_prefix)
            ready = asyncio.Event()
            count = 20

            async def one(i: int) -> str:
                async with pub.test_run(f"t-{i}") as run:
                    if len(pub.control.watched) == count:
                        ready.set()
                    await asyncio.sleep(3)
                return run.status

            tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
            await ready.wait()
            readers = [t for t in asyncio.all_tasks() if t.get_name() == "secstream-control-reader"]
            assert len(readers) == 1
            for i in range(0, count, 2):
                await records.request_cancel(f"t-{i}", by="admin", reason=None)
            statuses = await asyncio.gather(*tasks)
        assert statuses == ["cancelled" if i % 2 == 0 else "completed" for i in range(count)]


async def test_the_reader_keeps_records_alive_and_idles_without_runs(
    shared_redis_url: str, key_prefix: str
) -> None:
    with anyio.fail_after(15):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            pub.control = ControlReader(pub.runs, refresh_every=0.2)
            redis = pub.log.redis
            async with pub.test_run("t-alive"):
                key = pub.runs.run_key("t-alive")
                await redis.expire(key, 3)
                await asyncio.sleep(1.0)
                assert await redis.ttl(key) > 3  # refreshed to RUNNING_TTL
                with pytest.raises(RuntimeError, match="already going"):
                    async with pub.test_run("t-alive"):
                        pass
            await asyncio.sleep(0.7)  # the read under way at the end finishes
            reads = pub.control.reads
            await asyncio.sleep(1.5)
            assert pub.control.reads == reads  # no run, no reads
            async with pub.test_run("t-again"):
                await asyncio.sleep(0.8)
            assert pub.control.reads > reads


async def test_a_cancel_stops_a_block_that_publishes_without_pause(
    shared_redis_url: str, key_prefix: str
) -> None:
    """redis-py sends through asyncio.wait_for, which on Python 3.11 can swallow a
    cancellation that lands as the send completes; the run must stop all the same."""
    with anyio.fail_after(60):
        async with Publisher(shared_redis_url, key_prefix=key_prefix) as pub:
            records = RunRecords(pub.log.redis, prefix=key_prefix)
            for i in range(10):
                going = asyncio.Event()

                async def busy(test_id: str, going: asyncio.Event) -> str:
                    async with pub.test_run(test_id) as run:
                        for n in itertools.count():
                            await run.progress(1, "x" * 100)
                            if n == 20:
                                going.set()
                    return run.status

                task = asyncio.ensure_future(busy(f"t-busy-{i}", going))
                await going.wait()
                await records.request_cancel(f"t-busy-{i}", by="admin", reason=None)
                done, _ = await asyncio.wait([task], timeout=3)
                assert done, f"run {i} kept going after the cancel request"
                assert task.result() == "cancelled"
