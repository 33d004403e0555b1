"""Group commit of publishes (``appender``): concurrent publishes share one script call,
each keeps its own answer, and none is reported appended that is not in the log."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx
import pytest
from redis.asyncio import Redis

from live import LiveApp
from secstream.appender import GroupAppender, op_size
from secstream.entries import encode
from secstream.errors import LogUnavailable
from secstream.eventlog import AppendOp, RedisEventLog
from secstream.protocol import PublishRequest
from secstream.publish_route import MAX_BODY_BYTES
from secstream.redis_server import RedisServer

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]


def op(n: int = 0, key: str | None = None, sub: str = "s", events: int = 1) -> AppendOp:
    reqs = [PublishRequest("system.status", {"n": n, "i": i}) for i in range(events)]
    return AppendOp([encode(r) for r in reqs], key, sub)


async def logged(log: RedisEventLog) -> dict[str, Any]:
    """Every event in the log: id -> its data."""
    rows = await log.redis.xrange(log.log_key, "-", "+")
    return {rid.decode(): json.loads(fields[b"b"])["data"] for rid, fields in rows}


@pytest.fixture
async def log(shared_redis_url: str, key_prefix: str) -> AsyncIterator[RedisEventLog]:
    redis = Redis.from_url(shared_redis_url)
    yield RedisEventLog(redis, prefix=key_prefix)
    await redis.aclose()


async def test_concurrent_appends_share_calls_and_keep_their_order(log: RedisEventLog) -> None:
    with anyio.fail_after(20):
        appender = GroupAppender(log)
        answers = await asyncio.gather(*(appender.append(op(n)) for n in range(200)))
        ids = [a.ids[0] for a in answers]
        assert len(set(ids)) == 200 and not any(a.seen for a in answers)
        # Submitted in the same turn: one call (the first) or a few, never one per append.
        assert appender.calls < 10 and appender.appended == 200
        stored = await logged(log)
        assert [stored[i]["n"] for i in ids] == list(range(200))  # log order = order asked
        assert sorted(stored, key=lambda i: tuple(map(int, i.split("-")))) == ids


async def test_idempotency_keys_dedupe_inside_a_batch_and_across_batches(
    log: RedisEventLog,
) -> None:
    with anyio.fail_after(20):
        appender = GroupAppender(log)
        first, again, theirs, other = await asyncio.gather(
            appender.append(op(1, "k", events=2)),
            appender.append(op(2, "k")),  # the same key and sub, same batch
            appender.append(op(3, "k", sub="other")),  # another sub: its own key
            appender.append(op(4)),
        )
        assert appender.calls == 1
        assert not first.seen and again.seen and again.ids == first.ids and len(first.ids) == 2
        assert not theirs.seen and theirs.ids != first.ids and not other.seen
        later = await appender.append(op(5, "k"))  # a later batch
        assert later.seen and later.ids == first.ids
        assert sorted(d["n"] for d in (await logged(log)).values()) == [1, 1, 3, 4]
        assert await log.idempotent_ids("k", "s") == first.ids


async def test_a_batch_is_bounded_in_events_and_bytes(log: RedisEventLog) -> None:
    with anyio.fail_after(20):
        with pytest.raises(ValueError, match="at least one"):
            GroupAppender(log, max_events=0)
        by_events = GroupAppender(log, max_events=5)
        answers = await asyncio.gather(*(by_events.append(op(n, events=2)) for n in range(10)))
        assert by_events.calls == 5 and all(len(a.ids) == 2 for a in answers)
        size = op_size(op(0))
        by_bytes = GroupAppender(log, max_bytes=size * 3)
        await asyncio.gather(*(by_bytes.append(op(0)) for _ in range(9)))
        assert by_bytes.calls == 3
        big = GroupAppender(log, max_bytes=1)  # an op over the bound still goes, alone
        await asyncio.gather(*(big.append(op(n)) for n in range(3)))
        assert big.calls == 3


async def test_redis_going_away_fails_the_batch_and_reports_nothing_unlogged(
    redis_server: RedisServer, key_prefix: str
) -> None:
    with anyio.fail_after(60):
        redis = Redis.from_url(redis_server.url, socket_timeout=5)
        log = RedisEventLog(redis, prefix=key_prefix)
        appender = GroupAppender(log)
        accepted: list[str] = []
        failed = 0

        async def publish(n: int) -> None:
            nonlocal failed
            try:
                answer = await appender.append(op(n))
            except LogUnavailable:
                failed += 1
            else:
                accepted.extend(answer.ids)

        async with anyio.create_task_group() as tg:
            for n in range(3000):
                tg.start_soon(publish, n)
                if n == 1500:
                    await asyncio.to_thread(redis_server.stop)  # SIGTERM: the AOF is kept
                if n % 100 == 0:
                    await anyio.sleep(0.005)
        assert accepted and failed and len(accepted) + failed == 3000
        redis_server.start()
        await redis.aclose()
        redis = Redis.from_url(redis_server.url)
        stored = await logged(RedisEventLog(redis, prefix=key_prefix))
        assert set(accepted) <= set(stored)  # every id answered is in the log
        await redis.aclose()


# -- over HTTP -----------------------------------------------------------------------------


async def test_concurrent_http_publishes_share_calls(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app(publish_rate=100_000, publish_burst=100_000) as app:
            async with app.http(app.token("p", ["publisher"])) as http:  # 100 connections
                async def one(n: int) -> str:
                    response = await http.post(
                        "/api/v1/events", json={"event_type": "system.status", "data": {"n": n}}
                    )
                    assert response.status_code == 202, response.text
                    eid: str = response.json()["id"]
                    return eid

                ids = await asyncio.gather(*(one(n) for n in range(300)))
            assert len(set(ids)) == 300
            stored = await logged(app.service.log)
            assert {stored[i]["n"] for i in ids} == set(range(300))
            appender = app.service.appender
            assert appender.appended == 300 and appender.calls < 300


async def test_failing_members_do_not_lose_the_others(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app(publish_rate=100_000, publish_burst=100_000) as app:
            async with app.http(app.token("p", ["publisher"])) as http:
                good = {"event_type": "system.status", "data": {}}
                bodies: list[tuple[str, Any]] = []
                for n in range(60):
                    kind = ("good", "unknown type", "too large")[n % 3]
                    if kind == "good":
                        bodies.append((kind, {**good, "data": {"n": n}}))
                    elif kind == "unknown type":
                        bodies.append((kind, {"event_type": "nope.nope", "data": {}}))
                    else:
                        bodies.append((kind, b"{" + b" " * MAX_BODY_BYTES + b"}"))

                async def send(kind: str, body: Any) -> tuple[str, httpx.Response]:
                    if isinstance(body, bytes):
                        return kind, await http.post("/api/v1/events", content=body)
                    return kind, await http.post("/api/v1/events", json=body)

                answers = await asyncio.gather(*(send(k, b) for k, b in bodies))
            expected = {"good": 202, "unknown type": 422, "too large": 413}
            assert all(r.status_code == expected[k] for k, r in answers)
            ids = [r.json()["id"] for k, r in answers if k == "good"]
            stored = await logged(app.service.log)
            assert sorted(stored) == sorted(ids) and len(ids) == 20


async def test_idempotency_key_over_http_inside_one_burst(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(30):
        async with live_app(publish_rate=100_000, publish_burst=100_000) as app:
            key = uuid.uuid4().hex
            async with app.http(app.token("p", ["publisher"])) as http:
                answers = await asyncio.gather(*(
                    http.post("/api/v1/events", json={"event_type": "system.status",
                                                      "data": {"n": n}},
                              headers={"Idempotency-Key": key})
                    for n in range(20)
                ))
                # A key seen answers with the first id whatever the body, even a bad one.
                bad = await http.post("/api/v1/events", content=b"not json",
                                      headers={"Idempotency-Key": key})
            assert {r.status_code for r in answers} == {202} and bad.status_code == 202
            assert len({r.json()["id"] for r in (*answers, bad)}) == 1
            assert len(await logged(app.service.log)) == 1
