"""One Redis client from a URL: a plain one, or one whose primary Redis Sentinel names.

With ``redis+sentinel://``, every new connection asks the sentinels where the primary is,
and a connection to a primary that died or was demoted fails once and is dropped
(redis-py's ``SentinelConnectionPool``): after a failover every command, the hub's
``XREAD`` included, reaches the promoted replica by itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from secstream.config import SENTINEL_SCHEME, SentinelURL
from secstream.errors import LogUnavailable

SENTINEL_TIMEOUT = 1.0
"""Seconds to wait for one sentinel; a dead one must not hold every reconnect for long."""


_DEMOTED = "READONLY You can't write against a read only replica"


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary that drops itself when the primary was demoted.

    redis-py does so on a ``READONLY`` reply, but a write refused inside a Lua script
    (every append and ack here) comes back on Redis 6 as a plain script error that only
    quotes ``-READONLY``: without this, the pooled connection would stay on the demoted
    primary and every write fail. The ConnectionError makes the command retry on a fresh
    connection, which asks the sentinels for the new primary.
    """

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if _DEMOTED not in str(exc) or not self.connection_pool.is_master:
                raise
            await self.disconnect()
            raise RedisConnectionError("the primary was demoted to a replica") from exc


class RedisClient:
    """``redis``: the client to use; ``sentinel``: the sentinels behind it, if any."""

    def __init__(
        self, redis: Redis, sentinel: Sentinel | None = None, target: SentinelURL | None = None
    ) -> None:
        self.redis = redis
        self.sentinel = sentinel
        self.target = target

    async def primary(self) -> str | None:
        """``host:port`` of the primary the sentinels name now; None without Sentinel.

        Raises LogUnavailable when none is named, or no sentinel answers.
        """
        if self.sentinel is None or self.target is None:
            return None
        try:
            host, port = await asyncio.wait_for(
                self.sentinel.discover_master(self.target.master), 2 * SENTINEL_TIMEOUT + 1
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc
        return f"{host}:{port}"

    async def aclose(self) -> None:
        await self.redis.aclose()
        if self.sentinel is not None:
            try:
                await self.sentinel.aclose()
            except (RedisError, OSError):
                pass


def connect(url: str, **kwargs: Any) -> RedisClient:
    """A client for ``url``; ``kwargs`` are redis-py's connection options."""
    if not url.startswith(SENTINEL_SCHEME):
        return RedisClient(Redis.from_url(url, **kwargs))
    target = SentinelURL.parse(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),  # a dead sentinel: ask the next one at once
        },
    )
    redis: Redis = sentinel.master_for(
        target.master,
        db=target.db,
        username=target.username,
        password=target.password,
        connection_class=PrimaryConnection,
        **kwargs,
    )
    return RedisClient(redis, sentinel, target)
