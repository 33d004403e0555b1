"""RedisEventLog on a real Redis: append, replay, pages, trims, offsets, idempotency, epochs."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from secstream import replay
from secstream.entries import StreamEntry
from secstream.eventlog import RedisEventLog
from secstream.protocol import Audience, PublishRequest, parse_offset

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class _Replay:
    entries: list[StreamEntry]
    truncated: bool


async def _replay(log: RedisEventLog, since: str, upto: str, match: Any, **kw: Any) -> _Replay:
    """A whole replay (a connection reads it page by page)."""
    return _Replay(*await replay.collect(log, since, upto, match, **kw))


def everything(entry: StreamEntry) -> bool:
    return True


def event(event_type: str = "system.status", **kw: Any) -> PublishRequest:
    data = kw.pop("data", {})
    return PublishRequest(event_type=event_type, data=data, **kw)


@pytest.fixture
async def redis(shared_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(shared_redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def log(redis: Redis, key_prefix: str) -> RedisEventLog:
    return RedisEventLog(redis, prefix=key_prefix)


async def next_millisecond(redis: Redis, offset: str) -> None:
    """Let Redis's clock pass ``offset``: ids are times, and a log lost and begun again
    within the same millisecond would reuse them."""
    while True:
        seconds, micros = await redis.time()
        if seconds * 1000 + micros // 1000 > parse_offset(offset)[0]:
            return
        await anyio.sleep(0.001)


async def append_n(log: RedisEventLog, n: int, **kw: Any) -> list[str]:
    return [(await log.append([event(data={"n": i}, **kw)]))[0] for i in range(n)]


async def test_append_gives_increasing_ids_and_ready_frames(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        ids = await log.append(
            [
                event("test.progress", data={"test_id": "t", "progress": 1}, priority="high",
                      user_id="u", correlation_id="c"),
                event(),
                event("user.notification", data={}, audience=Audience(users=["u"])),
            ]
        )
        assert len(ids) == 3
        assert sorted(ids, key=parse_offset) == ids and len(set(ids)) == 3
        assert await log.last_id() == ids[-1]
        page = await log.read_page("0", everything, limit=10)
        assert [e.id for e in page.entries] == ids
        first = json.loads(page.entries[0].frame)
        assert first["type"] == "event" and first["id"] == ids[0]
        assert first["event_type"] == "test.progress" and first["priority"] == "high"
        assert first["data"] == {"test_id": "t", "progress": 1}
        assert first["user_id"] == "u" and first["correlation_id"] == "c"
        assert page.entries[0].test_id == "t"
        assert page.entries[2].audience is not None
        assert page.entries[2].audience.users == frozenset({"u"})
        assert page.entries[1].audience is None


async def test_replay_is_the_range_after_since_up_to_upto(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        ids = await append_n(log, 5)
        replay = await _replay(log, ids[0], ids[3], everything, limit=100)
        assert [e.id for e in replay.entries] == ids[1:4] and not replay.truncated
        replay = await _replay(log, "0", ids[4], everything, limit=100)
        assert [e.id for e in replay.entries] == ids and not replay.truncated
        replay = await _replay(log, ids[4], ids[4], everything, limit=100)
        assert replay.entries == [] and not replay.truncated
        odd = await _replay(log, "0", ids[4], lambda e: json.loads(e.frame)["data"]["n"] % 2 == 1,
                               limit=100)
        assert [e.id for e in odd.entries] == [ids[1], ids[3]]


async def test_replay_over_the_limit_keeps_newest_and_critical(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        (c1,) = await log.append([event("system.alert", priority="critical")])
        normal = await append_n(log, 4)
        (c2,) = await log.append([event("system.alert", priority="critical")])
        last = await append_n(log, 1)
        replay = await _replay(log, "0", last[0], everything, limit=4)
        assert [e.id for e in replay.entries] == [c1, normal[3], c2, last[0]]
        assert replay.truncated
        only_critical = await _replay(log, "0", last[0], everything, limit=1)
        assert [e.id for e in only_critical.entries] == [c2] and only_critical.truncated


async def test_replay_by_test_id(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        a = await log.append([event("test.started", data={"test_id": "a"})])
        await log.append([event("test.started", data={"test_id": "b"})])
        a2 = await log.append([event("test.progress", data={"test_id": "a", "progress": 5})])
        upto = await log.last_id()
        replay = await _replay(log, "0", upto, everything, limit=10, test_id="a")
        assert [e.id for e in replay.entries] == a + a2


async def test_read_page_limit_and_next(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        ids = await append_n(log, 5)
        page = await log.read_page("0", everything, limit=2)
        assert [e.id for e in page.entries] == ids[:2] and page.next == ids[1]
        page = await log.read_page(page.next, everything, limit=10)
        assert [e.id for e in page.entries] == ids[2:] and page.next == ids[4]
        assert not page.truncated
        empty = await log.read_page(ids[4], everything, limit=10)
        assert empty.entries == [] and empty.next == ids[4]


async def test_expired_events_are_skipped(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        (short,) = await log.append([event(ttl=60)])
        (long_,) = await log.append([event(ttl=3600)])
        (forever,) = await log.append([event()])
        later = time.time() + 120
        page = await log.read_page("0", everything, limit=10, now=later)
        assert [e.id for e in page.entries] == [long_, forever]
        replay = await _replay(log, "0", forever, everything, limit=10, now=later)
        assert [e.id for e in replay.entries] == [long_, forever]
        now_page = await log.read_page("0", everything, limit=10)
        assert [e.id for e in now_page.entries] == [short, long_, forever]


async def test_tail_returns_entries_after_an_id(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        ids = await append_n(log, 3)
        entries = await log.tail(ids[0], block_ms=100)
        assert [e.id for e in entries] == ids[1:]
        assert await log.tail(ids[2], block_ms=50) == []


async def test_offsets_store_the_max_per_user_and_client(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        ids = await append_n(log, 3)
        assert await log.stored_offset("u", "c") is None
        await log.store_offsets([("u", "c", ids[1])])
        assert await log.stored_offset("u", "c") == ids[1]
        await log.store_offsets([("u", "c", ids[0]), ("u", "d", ids[0])])
        assert await log.stored_offset("u", "c") == ids[1]
        assert await log.stored_offset("u", "d") == ids[0]
        await log.store_offsets([("u", "c", ids[2])])
        assert await log.stored_offset("u", "c") == ids[2]
        assert await log.stored_offset("v", "c") is None
        # ms-only ids compare as ms-0, and a higher sequence wins within a millisecond
        await log.store_offsets([("u", "e", "100-5"), ("u", "e", "100"), ("u", "e", "99-9")])
        assert await log.stored_offset("u", "e") == "100-5"


async def test_idempotency_key_returns_the_first_ids(log: RedisEventLog, redis: Redis) -> None:
    with anyio.fail_after(10):
        first = await log.append([event(), event()], idempotency_key="k")
        again = await log.append([event("system.alert")], idempotency_key="k")
        assert again == first
        assert await redis.xlen(log.log_key) == 2
        other = await log.append([event()], idempotency_key="other")
        assert other != first and await redis.xlen(log.log_key) == 3
        ttl = await redis.ttl(f"{log.prefix}:idem:0::k")
        assert 86_000 < ttl <= 86_400
        # another sub's key of the same name is another key
        theirs = await log.append([event()], idempotency_key="k", sub="u-2")
        assert theirs != first and await redis.xlen(log.log_key) == 4
        assert await log.idempotent_ids("k", "u-2") == theirs
        assert await log.idempotent_ids("k") == first


async def test_client_ids_per_sub_are_capped_dropping_the_least_recently_acked(
    log: RedisEventLog, redis: Redis
) -> None:
    """Row 14: 60 throwaway client_ids leave 50 offsets; another sub's are untouched."""
    with anyio.fail_after(20):
        (offset,) = await log.append([event()])
        await log.store_offsets([("other", "keep", offset)])
        await log.store_offsets([("u", "first", offset)])
        for i in range(59):
            await log.store_offsets([("u", f"tmp-{i}", offset)])
            if i == 30:  # acked again: now among the most recent, so it stays
                await log.store_offsets([("u", "first", offset)])
        stored = [k async for k in redis.scan_iter(match=f"{log.prefix}:offset:u:*", count=500)]
        assert len(stored) == 50 == await redis.zcard(log.clients_key("u"))
        assert await log.stored_offset("u", "first") == offset
        for i in range(10):  # the least recently acked ten are gone
            assert await log.stored_offset("u", f"tmp-{i}") is None
        assert await log.stored_offset("u", "tmp-10") == offset
        assert await log.stored_offset("other", "keep") == offset
        ttl = await redis.ttl(log.clients_key("u"))
        assert 0 < ttl <= 30 * 86_400
        # many acks of one batch in one pipeline keep the bound too
        await log.store_offsets([("u", f"batch-{i}", offset) for i in range(80)])
        assert await redis.zcard(log.clients_key("u")) == 50
        assert await log.stored_offset("u", "batch-79") == offset
        assert await log.stored_offset("u", "first") is None


async def test_maxlen_trims_and_replay_reports_truncated(redis: Redis, key_prefix: str) -> None:
    with anyio.fail_after(20):
        log = RedisEventLog(redis, prefix=key_prefix, maxlen=10)
        ids = [
            (await log.append([event(data={"n": i}) for _ in range(1)]))[0] for i in range(115)
        ]
        assert await redis.xlen(log.log_key) <= 110
        retained = await log.read_page("0", everything, limit=1000)
        assert retained.truncated
        assert retained.entries[-1].id == ids[-1]
        replay = await _replay(log, ids[0], ids[-1], everything, limit=1000)
        assert replay.truncated
        assert [e.id for e in replay.entries] == [e.id for e in retained.entries]
        recent = await _replay(log, ids[-3], ids[-1], everything, limit=1000)
        assert [e.id for e in recent.entries] == ids[-2:] and not recent.truncated


async def test_age_trim_keeps_critical_events_longer(redis: Redis, key_prefix: str) -> None:
    with anyio.fail_after(10):
        log = RedisEventLog(
            redis, prefix=key_prefix, retention_seconds=60, critical_retention_seconds=3600
        )
        (old_normal,) = await log.append([event()])
        (old_critical,) = await log.append([event("system.alert", priority="critical")])
        upto = await log.last_id()
        removed = await log.trim(now=time.time() + 120)
        assert removed == 2
        assert await redis.xlen(log.log_key) == 0
        replay = await _replay(log, "0", upto, everything, limit=100)
        assert [e.id for e in replay.entries] == [old_critical]
        assert replay.truncated
        assert (await _replay(log, old_normal, upto, everything, limit=100)).truncated
        # past the critical retention too, the critical event goes
        await log.trim(now=time.time() + 7200)
        replay = await _replay(log, "0", upto, everything, limit=100)
        assert replay.entries == [] and replay.truncated


async def test_nothing_trimmed_means_not_truncated(log: RedisEventLog) -> None:
    with anyio.fail_after(10):
        ids = await append_n(log, 3)
        assert await log.trim() == 0
        replay = await _replay(log, "0", ids[-1], everything, limit=100)
        assert len(replay.entries) == 3 and not replay.truncated


async def test_a_lost_log_is_detected_by_its_epoch(redis_url: str) -> None:
    with anyio.fail_after(10):
        async with Redis.from_url(redis_url) as redis:
            log = RedisEventLog(redis, prefix="p")
            before = await log.append([event(), event()])
            await next_millisecond(redis, before[-1])
            await redis.flushall()
            after = await log.append([event()])
            replay = await _replay(log, before[0], after[0], everything, limit=100)
            assert [e.id for e in replay.entries] == after
            assert replay.truncated
            page = await log.read_page(before[1], everything, limit=100)
            assert [e.id for e in page.entries] == after and page.truncated
            # a client that resumes from within this incarnation loses nothing
            fresh = await _replay(log, after[0], after[0], everything, limit=100)
            assert not fresh.truncated
            assert not (await log.read_page("0", everything, limit=100)).truncated


async def test_a_lost_log_is_detected_before_any_new_append(redis_url: str) -> None:
    with anyio.fail_after(10):
        async with Redis.from_url(redis_url) as redis:
            log = RedisEventLog(redis, prefix="p")
            before = await log.append([event()])
            await next_millisecond(redis, before[-1])
            await redis.flushall()
            page = await log.read_page(before[0], everything, limit=100)
            assert page.entries == [] and page.truncated
