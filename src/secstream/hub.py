"""The live connections of this process and the one reader that feeds them.

One ``XREAD BLOCK`` follows the log for the whole process; each event is
matched through an index keyed by (event type, test id) and, when it names an
audience, through indexes of users, groups and roles, so the work per event
grows with the connections that receive it, not with those that do not. A
connection that is reading the log (see ``reader``) is skipped: it finds the
event in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol, TypeVar

from secstream.auth import Principal
from secstream.connection import Connection, Counters, Subscription, Writer
from secstream.entries import START, StreamEntry
from secstream.errors import WS_1001_GOING_AWAY, LogUnavailable
from secstream.events import expand
from secstream.logapi import EventLog
from secstream.protocol import parse_offset
from secstream.tasks import cancel_all
from secstream.timers import LoadWatch, Timers
from secstream.types import Offset

logger = logging.getLogger(__name__)

IndexKey = tuple[str, str | None]
K = TypeVar("K")
_TAIL_BLOCK_MS = 5000
_SLICE_SECONDS = 0.05
"""Longest run of fan-out before the event loop gets a turn: long enough that each
socket gets its events in a few large frames, short enough for heartbeats and I/O."""
_CONCURRENT_READS = 16
"""Log reads by connections that are replaying or catching up, at once, process-wide."""


class Metrics(Protocol):
    def delivery_latency(self, seconds: float) -> None: ...
    def dispatched(self, entry: StreamEntry, recipients: int) -> None: ...


class Hub:
    def __init__(
        self,
        log: EventLog,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        token_expiry_warning: float,
        max_connections: int,
        max_queue_bytes: int,
        stall_timeout: float = 30.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.log = log
        self.heartbeat_interval = heartbeat_interval
        self.max_connections = max_connections
        self.max_queue_bytes = max_queue_bytes
        self.metrics = metrics
        self.connections: dict[str, Connection] = {}
        self.last_id: Offset = START
        self.healthy = False
        self.accepting = True
        # Delivery latency is timed at the send (sampled), not here at the queue.
        self.counters = Counters(metrics.delivery_latency if metrics is not None else None)
        self.writer = Writer()
        self.load = LoadWatch(max_connections=max_connections, max_queue_bytes=max_queue_bytes)
        self.timers = Timers(
            lambda: list(self.connections.values()),
            self.load,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            token_expiry_warning=token_expiry_warning,
            stall_timeout=stall_timeout,
        )
        self.reads = asyncio.Semaphore(_CONCURRENT_READS)
        self._index: dict[IndexKey, set[Connection]] = {}
        self._by_user: dict[str, set[Connection]] = {}
        self._by_group: dict[str, set[Connection]] = {}
        self._by_role: dict[str, set[Connection]] = {}
        self._new_events = asyncio.Event()
        self.positioned = asyncio.Event()
        """Set once the tail knows where the log ends; ``start_id`` is that place."""
        self.start_id: Offset = START
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def delivered(self) -> int:
        return self.counters.delivered

    @property
    def overloaded(self) -> bool:
        return self.load.overloaded

    @property
    def loop_lag(self) -> float:
        return self.load.loop_lag

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(LogUnavailable):
            self._position(await self.log.last_id())
            self.healthy = True
        self._tasks = [
            asyncio.create_task(self._follow(), name="hub-tail"),
            asyncio.create_task(self.timers.run(), name="hub-timers"),
        ]

    def _position(self, last_id: Offset) -> None:
        self.last_id = self.start_id = last_id
        self.positioned.set()

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []

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
        conn.schedule_ping(time.time() + self.heartbeat_interval)
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
        conn.replace_principal(principal)
        self._index_principal(conn, principal, add=True)
        for sub in conn.subscriptions.values():
            self._index_subscription(conn, sub, add=False)
            sub.types = expand(sub.patterns, principal.receivable)
            self._index_subscription(conn, sub, add=True)

    @property
    def position(self) -> Offset | None:
        """The id the tail has dispatched up to; None before it knows where the log ends."""
        return self.last_id if self.positioned.is_set() else None

    def subscribe(self, conn: Connection, sub: Subscription) -> None:
        conn.add_subscription(sub)
        self._index_subscription(conn, sub, add=True)

    def unsubscribe(self, conn: Connection, sub: Subscription) -> None:
        until = conn.current_position(self.last_id)
        if conn.end_subscription(sub, parse_offset(until or START)):
            self._index_subscription(conn, sub, add=False)

    def _index_principal(self, conn: Connection, p: Principal, *, add: bool) -> None:
        change = _add if add else _discard
        change(self._by_user, p.sub, conn)
        for group in p.groups:
            change(self._by_group, group, conn)
        for role in p.roles:
            change(self._by_role, role, conn)

    def _index_subscription(self, conn: Connection, sub: Subscription, *, add: bool) -> None:
        """Index ``conn`` under ``sub``'s keys, or take it out of each that no other current
        subscription of it has: a connection is indexed under a key while any of its
        subscriptions has it (worked out when one changes, not counted per connection:
        a count per key was about 0.8 KB held by every idle connection)."""
        for key in sub.index_keys:
            if add:
                _add(self._index, key, conn)
            elif not any(
                other is not sub and other.indexed_under(key)
                for other in conn.subscriptions.values()
            ):
                _discard(self._index, key, conn)

    # -- delivery ----------------------------------------------------------------------

    async def dispatch(self, entries: list[StreamEntry]) -> None:
        """Fan entries out in id order, giving the event loop a turn every
        ``_SLICE_SECONDS``, so one large read to many sockets never stalls heartbeats and I/O."""
        now = time.time()
        slice_started = time.monotonic()
        work = 0
        # One event, and a writer that is not widening frames: it goes to each
        # recipient's socket now. More than one: queued, so each socket gets them
        # in one frame on the writer's pass.
        at_once = len(entries) == 1 and not self.load.overloaded and self.writer.writes_at_once()
        for entry in entries:
            work += self._dispatch_one(entry, now, at_once)
            if work >= 1000:  # look at the clock now and then, not per delivery
                work = 0
                if time.monotonic() - slice_started > _SLICE_SECONDS:
                    self._notify()
                    await asyncio.sleep(0)
                    now, slice_started = time.time(), time.monotonic()
        self._notify()

    def _dispatch_one(self, entry: StreamEntry, now: float, at_once: bool) -> int:
        before, self.last_id = self.last_id, entry.id
        if entry.expired(now):
            return 1
        targets = self._targets(entry)
        if at_once:
            self.writer.write_at_once(entry, targets, before, self.counters)
        else:
            for conn in targets:
                conn.deliver(entry, before)
        if self.metrics is not None:  # the published count, the secstream.deliver span
            self.metrics.dispatched(entry, len(targets))
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


def _add(index: dict[K, set[Connection]], key: K, conn: Connection) -> None:
    index.setdefault(key, set()).add(conn)


def _discard(index: dict[K, set[Connection]], key: K, conn: Connection) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(conn)
        if not members:
            del index[key]
