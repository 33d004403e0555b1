"""Every node's connections in Redis, and closing one wherever it is (contract section 5).

Key layout (``P`` is ``SECSTREAM_KEY_PREFIX``):

    P:nodes              sorted set: node -> last time it wrote its connections
    P:conns:<node>       hash: connection id -> JSON description; expires REGISTRY_TTL
                         after the node's last write, so a dead node's entries go with it
    P:control:<node>     pub/sub channel: {"close": <connection id>, "code": 4003}

Each node updates its hash every ``interval`` seconds, and soon after a connection
opens or closes. ``GET /api/v1/connections`` reads every live node's hash (its own
connections it describes live); ``DELETE`` publishes on the owner's channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from redis.asyncio import Redis

from secstream.audit import UNAVAILABLE
from secstream.entries import now_iso

logger = logging.getLogger(__name__)

REGISTRY_TTL: Final = 15
"""Seconds a node's entries outlive its last write (it writes every ``interval``)."""
NODE_STALE: Final = 20
_DEBOUNCE: Final = 0.3
WRITE_CHUNK: Final = 500
"""Descriptions per ``HSET``: about 200 KB, so Redis never holds much more than its hash."""


class _Principal(Protocol):
    @property
    def sub(self) -> str: ...
    @property
    def roles(self) -> frozenset[str]: ...


class _Subscription(Protocol):
    id: str
    patterns: list[str]
    test_id: str | None


class Described(Protocol):
    """What the registry reads of a connection (``connection.Connection``)."""

    id: str
    client_id: str | None
    connected_at: float
    queued_bytes: int
    sent: int
    received: int

    @property
    def principal(self) -> _Principal: ...
    @property
    def subscriptions(self) -> dict[str, Any]: ...
    @property
    def reading(self) -> bool:
        """Catching up from the log rather than live."""
    @property
    def missed(self) -> int: ...


def describe(conn: Described, node: str, address: str | None) -> dict[str, Any]:
    subs: Iterable[_Subscription] = conn.subscriptions.values()
    return {
        "id": conn.id,
        "node": node,
        "user": conn.principal.sub,
        "roles": sorted(conn.principal.roles),
        "client_id": conn.client_id,
        "subscriptions": [
            {"id": s.id, "event_types": list(s.patterns), "test_id": s.test_id} for s in subs
        ],
        "connected_since": now_iso(conn.connected_at),
        "address": address,
        "state": "catching_up" if conn.reading else "live",
        "behind": conn.missed,
        "queue_bytes": conn.queued_bytes,
        "sent": conn.sent,
        "received": conn.received,
    }


class Registry:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        node: str,
        connections: Callable[[], dict[str, Any]],
        close: Callable[[str, int], bool],
        interval: float = 5.0,
    ) -> None:
        """``connections()``: this node's live connections by id; ``close(id, code)``:
        close one of them, False when it is not here."""
        self.redis = redis
        self.prefix = prefix
        self.node = node
        self.nodes_key = f"{prefix}:nodes"
        self.key = self.conns_key(node)
        self.interval = interval
        self._connections = connections
        self._close = close
        self._addresses: dict[str, str | None] = {}
        self._gone: set[str] = set()
        """Closed since the last write: their fields are deleted at the next."""
        self._stale = False
        """A write failed: the next deletes the hash first."""
        self._changed = asyncio.Event()

    def conns_key(self, node: str) -> str:
        return f"{self.prefix}:conns:{node}"

    def channel(self, node: str) -> str:
        return f"{self.prefix}:control:{node}"

    # -- this node --------------------------------------------------------------------

    def opened(self, conn_id: str, address: str | None) -> None:
        self._addresses[conn_id] = address
        self._changed.set()

    def closed(self, conn_id: str) -> None:
        self._addresses.pop(conn_id, None)
        if not self._stale:  # a stale hash is deleted whole: nothing to remember
            self._gone.add(conn_id)
        self._changed.set()

    def local(self) -> list[dict[str, Any]]:
        return [
            describe(c, self.node, self._addresses.get(cid))
            for cid, c in list(self._connections().items())
        ]

    async def write(self) -> None:
        """Update this node's hash in place: the closed connections' fields deleted, the
        others' set, ``WRITE_CHUNK`` to a command, one command at a time.

        Not the whole hash deleted and written again in one transaction: Redis would
        hold the queued copy of every description beside the hash, and its allocator
        keeps that peak as its RSS (10,000 connections: ≈1 KB each, measured in
        docs/benchmarks.md). A reader between two commands sees some descriptions a
        write older than others, as it would a node that wrote a moment earlier."""
        now = time.time()
        try:
            if self._stale:  # after a failed write: the hash may hold anything
                await self.redis.delete(self.key)
                self._gone.clear()
                self._stale = False
            gone = list(self._gone)
            if gone:
                await self.redis.hdel(self.key, *gone)
                self._gone.difference_update(gone)
            conns = list(self._connections().values())
            for start in range(0, len(conns), WRITE_CHUNK):
                rows = {
                    c.id: json.dumps(
                        describe(c, self.node, self._addresses.get(c.id)), separators=(",", ":")
                    )
                    for c in conns[start : start + WRITE_CHUNK]
                }
                await self.redis.hset(self.key, mapping=rows)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.expire(self.key, REGISTRY_TTL)
                pipe.zadd(self.nodes_key, {self.node: now})
                pipe.zremrangebyscore(self.nodes_key, "-inf", now - NODE_STALE)
                await pipe.execute()
        except BaseException:
            self._stale = True  # the next write starts from an empty hash
            self._gone.clear()
            raise

    async def run(self) -> None:
        """Write now, then every ``interval`` and soon after a change; obey the channel."""
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                try:
                    await self.write()
                except UNAVAILABLE:
                    logger.warning("connection registry not written: Redis unavailable")
                except Exception:
                    logger.exception("connection registry write failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.interval)
                    # Coalesce a burst of opens and closes (a fleet reconnecting): the
                    # more connections, the longer between rewrites, up to ``interval``.
                    gap = min(self.interval, _DEBOUNCE + len(self._addresses) / 2000)
                    await asyncio.sleep(gap)
                self._changed.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def leave(self) -> None:
        """Remove this node's entries (a clean shutdown)."""
        with contextlib.suppress(*UNAVAILABLE, TimeoutError):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key)
                pipe.zrem(self.nodes_key, self.node)
                await asyncio.wait_for(pipe.execute(), 2)

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel(self.node))
                delay = 0.2
                while True:
                    # A short read timeout: an idle channel is not an error (the client's
                    # socket timeout would be), and cancellation never waits on a read.
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=1.0
                    )
                    if message is not None:
                        self._obey(message.get("data"))
            except UNAVAILABLE:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1)  # type: ignore[no-untyped-call]

    def _obey(self, data: Any) -> None:
        try:
            order = json.loads(data)
            conn_id, code = str(order["close"]), int(order["code"])
        except (TypeError, ValueError, KeyError):
            logger.warning("ignored a malformed control message")
            return
        self._close(conn_id, code)

    # -- every node -------------------------------------------------------------------

    async def nodes(self) -> list[str]:
        raw = await self.redis.zrangebyscore(self.nodes_key, time.time() - NODE_STALE, "+inf")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in raw]

    async def all(self) -> list[dict[str, Any]]:
        """Every live node's connections; this node's described now."""
        others = [n for n in await self.nodes() if n != self.node]
        found = self.local()
        if others:
            async with self.redis.pipeline(transaction=False) as pipe:
                for node in others:
                    pipe.hvals(self.conns_key(node))
                replies = await pipe.execute()
            for values in replies:
                for raw in values:
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(raw))
        found.sort(key=lambda d: (str(d.get("node")), str(d.get("connected_since"))))
        return found

    async def close(self, conn_id: str, code: int) -> bool:
        """Close ``conn_id`` wherever it is; False when no live node holds it."""
        if self._close(conn_id, code):
            return True
        for node in await self.nodes():
            if node == self.node:
                continue
            if await self.redis.hexists(self.conns_key(node), conn_id):
                order = json.dumps({"close": conn_id, "code": code})
                await self.redis.publish(self.channel(node), order)
                return True
        return False
