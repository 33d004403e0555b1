"""The connection registry's hash in Redis: updated in place, chunk by chunk, exact after
closes and after a write that failed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from secstream.redis_server import free_port
from secstream.registry import REGISTRY_TTL, WRITE_CHUNK, Registry, describe

pytestmark = pytest.mark.anyio


@dataclass
class _Principal:
    sub: str
    roles: frozenset[str] = frozenset({"viewer"})


@dataclass
class _Conn:
    id: str
    principal: _Principal
    client_id: str | None = None
    connected_at: float = field(default_factory=time.time)
    queued_bytes: int = 0
    sent: int = 0
    received: int = 0
    subscriptions: dict[str, Any] = field(default_factory=dict)
    reading: bool = False
    missed: int = 0


def _registry(redis: Redis, conns: dict[str, _Conn]) -> Registry:
    return Registry(
        redis, prefix="reg", node="n1", connections=lambda: conns, close=lambda *_: False
    )


async def _stored(redis: Redis, registry: Registry) -> dict[str, Any]:
    raw = await redis.hgetall(registry.key)  # type: ignore[misc]
    return {k.decode(): json.loads(v) for k, v in raw.items()}


async def test_writes_in_chunks_and_deletes_only_what_closed(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    conns: dict[str, _Conn] = {}
    registry = _registry(redis, conns)
    count = 2 * WRITE_CHUNK + 7  # three HSETs
    for i in range(count):
        conns[f"c{i}"] = _Conn(f"c{i}", _Principal(f"user-{i}"))
        registry.opened(f"c{i}", "10.0.0.1")
    await registry.write()
    stored = await _stored(redis, registry)
    assert len(stored) == count
    assert stored["c5"] == describe(conns["c5"], "n1", "10.0.0.1")
    assert 0 < await redis.ttl(registry.key) <= REGISTRY_TTL

    for i in range(0, count, 2):
        del conns[f"c{i}"]
        registry.closed(f"c{i}")
    conns["c1"].sent = 42
    await registry.write()
    stored = await _stored(redis, registry)
    assert sorted(stored) == sorted(conns)
    assert stored["c1"]["sent"] == 42
    await redis.aclose()


async def test_a_failed_write_is_followed_by_a_whole_rewrite(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    conns = {f"c{i}": _Conn(f"c{i}", _Principal(f"user-{i}")) for i in range(3)}
    registry = _registry(redis, conns)
    await registry.write()

    registry.redis = Redis(port=free_port(), socket_connect_timeout=0.5)  # Redis away
    with pytest.raises(RedisConnectionError):
        await registry.write()
    del conns["c0"]
    registry.closed("c0")  # closed while the write could not reach Redis
    await registry.redis.aclose()

    registry.redis = redis
    await registry.write()
    assert sorted(await _stored(redis, registry)) == ["c1", "c2"]
    await redis.aclose()
