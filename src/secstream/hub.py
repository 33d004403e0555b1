"""The live connections of this process and the one reader that feeds them.

One ``XREAD BLOCK`` follows the log for the whole process; each event is
matched through an index keyed by (event type, test id) and, when it names an
audience, through indexes of users, groups and roles, so the work per event
grows with the connections that receive it, not with those that do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol, TypeVar

from secstream.auth import Principal
from secstream.connection import Connection, Subscription, newest
from secstream.entries import START, StreamEntry
from secstream.errors import (
    WS_1001_GOING_AWAY,
    WS_4001_TOKEN_EXPIRED,
    WS_4002_HEARTBEAT_TIMEOUT,
    WS_4009_SLOW_CONSUMER,
    LogUnavailable,
)
from secstream.eventlog import RedisEventLog
from secstream.events import expand
from secstream.protocol import PingFrame, TokenExpiring, encode, parse_offset
from secstream.types import Offset

logger = logging.getLogger(__name__)

IndexKey = tuple[str, str | None]
K = TypeVar("K")
_TAIL_BLOCK_MS = 5000
_ACK_FLUSH_SECONDS = 0.2
_LAG_OVERLOADED = 0.25
_LAG_RECOVERED = 0.05
_SLICE_SECONDS = 0.05
"""Longest run of fan-out before the event loop gets a turn: long enough that each
socket gets its events in a few large frames, short enough for heartbeats and I/O."""
_QUEUED_OVERLOADED = 64
"""Times SECSTREAM_MAX_QUEUE_BYTES queued in all, process-wide."""


class Metrics(Protocol):
    def delivery_latency(self, seconds: float) -> None: ...
    def dispatched(self, entry: StreamEntry, recipients: int) -> None: ...


class Hub:
    def __init__(
        self,
        log: RedisEventLog,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        token_expiry_warning: float,
        max_connections: int,
        max_queue_bytes: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.log = log
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.token_expiry_warning = token_expiry_warning
        self.max_connections = max_connections
        self.max_queue_bytes = max_queue_bytes
        self.metrics = metrics
        self.connections: dict[str, Connection] = {}
        self.last_id: Offset = START
        self.healthy = False
        self.accepting = True
        self.overloaded = False
        self.delivered = 0
        self.loop_lag = 0.0
        self._index: dict[IndexKey, set[Connection]] = {}
        self._by_user: dict[str, set[Connection]] = {}
        self._by_group: dict[str, set[Connection]] = {}
        self._by_role: dict[str, set[Connection]] = {}
        self._pending_acks: dict[tuple[str, str], Offset] = {}
        self._new_events = asyncio.Event()
        self.positioned = asyncio.Event()
        """Set once the tail knows where the log ends; ``start_id`` is that place."""
        self.start_id: Offset = START
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(LogUnavailable):
            self._position(await self.log.last_id())
            self.healthy = True
        self._tasks = [
            asyncio.create_task(self._follow(), name="hub-tail"),
            asyncio.create_task(self._tick(), name="hub-tick"),
            asyncio.create_task(self._flush_acks_forever(), name="hub-acks"),
        ]

    def _position(self, last_id: Offset) -> None:
        self.last_id = self.start_id = last_id
        self.positioned.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(LogUnavailable):
            await self.flush_acks()

    def close_all(self, code: int = WS_1001_GOING_AWAY) -> None:
        """Refuse new connections, close every socket, and answer long-polls now."""
        self.accepting = False
        for conn in list(self.connections.values()):
            conn.close(code)
        self._notify()

    @property
    def full(self) -> bool:
        return len(self.connections) >= self.max_connections

    # -- connections and subscriptions ----------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        conn.next_ping = time.time() + self.heartbeat_interval
        self._index_principal(conn, conn.principal, add=True)

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        for sub in list(conn.subscriptions.values()):
            self.unsubscribe(conn, sub)
        self._index_principal(conn, conn.principal, add=False)

    def replace_principal(self, conn: Connection, principal: Principal) -> None:
        """A refreshed token: the same user, perhaps with other groups and roles."""
        self._index_principal(conn, conn.principal, add=False)
        conn.principal = principal
        self._index_principal(conn, principal, add=True)
        for sub in conn.subscriptions.values():
            self._index_subscription(conn, sub, add=False)
            sub.types = expand(sub.patterns, principal.receivable)
            self._index_subscription(conn, sub, add=True)

    def subscribe(self, conn: Connection, sub: Subscription) -> None:
        conn.subscriptions[sub.id] = sub
        self._index_subscription(conn, sub, add=True)

    def unsubscribe(self, conn: Connection, sub: Subscription) -> None:
        if conn.subscriptions.pop(sub.id, None) is None:
            return
        sub.covers_until = parse_offset(self.last_id)
        conn.past_subscriptions.append(sub)
        self._index_subscription(conn, sub, add=False)

    def _index_principal(self, conn: Connection, p: Principal, *, add: bool) -> None:
        change = _add if add else _discard
        change(self._by_user, p.sub, conn)
        for group in p.groups:
            change(self._by_group, group, conn)
        for role in p.roles:
            change(self._by_role, role, conn)

    def _index_subscription(self, conn: Connection, sub: Subscription, *, add: bool) -> None:
        for key in sub.index_keys:
            count = conn.keys.get(key, 0) + (1 if add else -1)
            if count > 0:
                conn.keys[key] = count
            else:
                conn.keys.pop(key, None)
            if add and count == 1:
                _add(self._index, key, conn)
            elif not add and count == 0:
                _discard(self._index, key, conn)

    # -- acks --------------------------------------------------------------------------

    def ack(self, conn: Connection, offset: Offset) -> Offset:
        assert conn.client_id is not None
        key = (conn.principal.sub, conn.client_id)
        self._pending_acks[key] = newest(self._pending_acks.get(key), offset)
        return self._pending_acks[key]

    def pending_ack(self, sub: str, client_id: str) -> Offset | None:
        return self._pending_acks.get((sub, client_id))

    async def flush_acks(self) -> None:
        if not self._pending_acks:
            return
        batch, self._pending_acks = self._pending_acks, {}
        try:
            await self.log.store_offsets((s, c, o) for (s, c), o in batch.items())
        except LogUnavailable:
            for key, offset in batch.items():
                self._pending_acks[key] = newest(self._pending_acks.get(key), offset)
            raise

    async def _flush_acks_forever(self) -> None:
        while True:
            await asyncio.sleep(_ACK_FLUSH_SECONDS)
            try:
                await self.flush_acks()
            except LogUnavailable:
                logger.warning("could not store acknowledged offsets; will retry", exc_info=True)

    # -- delivery ----------------------------------------------------------------------

    async def dispatch(self, entries: list[StreamEntry]) -> None:
        """Fan entries out in id order, giving the event loop a turn every
        ``_SLICE_SECONDS``, so one large read to many sockets never stalls heartbeats and I/O."""
        now = time.time()
        slice_started = time.monotonic()
        work = 0
        for entry in entries:
            work += self._dispatch_one(entry, now)
            if work >= 1000:  # look at the clock now and then, not per delivery
                work = 0
                if time.monotonic() - slice_started > _SLICE_SECONDS:
                    self._notify()
                    await asyncio.sleep(0)
                    now, slice_started = time.time(), time.monotonic()
        self._notify()

    def _dispatch_one(self, entry: StreamEntry, now: float) -> int:
        self.last_id = entry.id
        if entry.expired(now):
            return 1
        targets = self._targets(entry)
        for conn in targets:
            conn.deliver(entry)
        self.delivered += len(targets)
        if self.metrics is not None:  # issue 8: published count, secstream.deliver span
            self.metrics.dispatched(entry, len(targets))
        if self.metrics is not None and targets:
            self.metrics.delivery_latency(max(0.0, now - entry.published_at))
        return len(targets) + 1

    def _notify(self) -> None:
        self._new_events.set()
        self._new_events = asyncio.Event()

    def _targets(self, entry: StreamEntry) -> set[Connection]:
        by_type = self._index.get((entry.event_type, None))
        by_test = (
            self._index.get((entry.event_type, entry.test_id)) if entry.test_id else None
        )
        if by_test:
            targets = by_type | by_test if by_type else by_test
        elif by_type:
            targets = by_type
        else:
            return set()
        aud = entry.audience
        if aud is None:
            return targets
        admitted: set[Connection] = set()
        for index, names in (
            (self._by_user, aud.users),
            (self._by_group, aud.groups),
            (self._by_role, aud.roles),
        ):
            for name in names:
                admitted |= index.get(name, set())
        return admitted & targets

    async def wait_for_events(self, after: Offset, seconds: float) -> None:
        """Return once the tail has passed ``after``, after ``seconds``, or at shutdown."""
        if not self.accepting or parse_offset(self.last_id) > parse_offset(after):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._new_events.wait(), seconds)

    async def _follow(self) -> None:
        backoff = 0.05
        while True:
            try:
                if not self.positioned.is_set():
                    self._position(await self.log.last_id())
                entries = await self.log.tail(self.last_id, block_ms=_TAIL_BLOCK_MS)
            except LogUnavailable:
                if self.healthy:
                    logger.warning("event log unavailable; retrying", exc_info=True)
                self.healthy = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            except Exception:
                logger.exception("tail failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if not self.healthy:
                logger.info("event log available again")
            self.healthy = True
            backoff = 0.05
            if entries:
                await self.dispatch(entries)

    # -- timers and load ---------------------------------------------------------------

    async def _tick(self) -> None:
        period = max(0.05, min(1.0, self.heartbeat_interval / 4, self.heartbeat_timeout / 4))
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(period)
            self.loop_lag = max(0.0, loop.time() - started - period)
            try:
                self._watch_load()
                self._check_timers(time.time())
            except Exception:
                logger.exception("hub timer failed")

    def _check_timers(self, now: float) -> None:
        ping: str | None = None
        mono = time.monotonic()
        for conn in list(self.connections.values()):
            if conn.stayed_slow(mono):
                conn.close(WS_4009_SLOW_CONSUMER)
                continue
            since = conn.awaiting_pong_since
            if since is not None and now - since > self.heartbeat_timeout:
                conn.close(WS_4002_HEARTBEAT_TIMEOUT)
                continue
            exp = conn.principal.exp
            if now >= exp:
                conn.close(WS_4001_TOKEN_EXPIRED)
                continue
            if conn.warned_for_exp != exp and now >= exp - self.token_expiry_warning:
                conn.warned_for_exp = exp
                conn.send_control(encode(TokenExpiring(expires_in=round(exp - now, 3))))
            if now >= conn.next_ping:
                ping = ping or encode(PingFrame(ts=round(now, 3)))
                conn.send_control(ping)
                conn.next_ping = now + self.heartbeat_interval
                if conn.awaiting_pong_since is None:
                    conn.awaiting_pong_since = now

    def _watch_load(self) -> None:
        queued = sum(c.queued_bytes for c in self.connections.values())
        pressure = (
            self.loop_lag > _LAG_OVERLOADED
            or queued > self.max_queue_bytes * _QUEUED_OVERLOADED
            or len(self.connections) >= self.max_connections * 0.95
        )
        calm = self.loop_lag < _LAG_RECOVERED and len(self.connections) < (
            self.max_connections * 0.9
        )
        if pressure and not self.overloaded:
            logger.warning(
                "overloaded: coalescing progress and refusing connections",
                extra={"lag": self.loop_lag, "queued": queued},
            )
            self.overloaded = True
        elif self.overloaded and calm and queued < self.max_queue_bytes * 4:
            logger.info("load back to normal")
            self.overloaded = False
        for conn in self.connections.values():
            conn.under_load = self.overloaded


def _add(index: dict[K, set[Connection]], key: K, conn: Connection) -> None:
    index.setdefault(key, set()).add(conn)


def _discard(index: dict[K, set[Connection]], key: K, conn: Connection) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(conn)
        if not members:
            del index[key]
