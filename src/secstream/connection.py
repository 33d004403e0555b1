"""One client connection: its state, subscriptions and bounded outbound queue.

A connection is ``LIVE`` (the hub queues each matching event for it) or
``READING`` (the hub leaves it alone and a ``LogReader`` reads the log for it
from ``position``, at the pace its socket takes bytes). It reads while a
subscription's replay runs and after it fell more than ``max_queue_bytes``
behind; it returns to live once its position reaches the hub's. Either way
the queue holds at most about ``max_queue_bytes``, and nothing is dropped.

Nothing here touches Starlette or Redis: the socket is the small ``Socket``
protocol, and events arrive already encoded. Other modules change a
connection's state only through its methods; an illegal move raises
``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import operator
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from secstream import eager
from secstream.auth import Principal
from secstream.entries import StreamEntry
from secstream.errors import (
    WS_1000_NORMAL_CLOSURE,
    WS_1011_INTERNAL_ERROR,
    WS_4009_SLOW_CONSUMER,
)
from secstream.protocol import ConnectionInfo, Ref, TokenExpiring, encode, parse_offset
from secstream.types import Offset

logger = logging.getLogger(__name__)

LOAD_LINGER_SECONDS = 0.05
"""Under load, a writer's pass at most this often, so that queued frames take in more
events."""
BUSY_LINGER_SECONDS = 0.02
"""While the writer is busy, a pass at most this often, so that events close together
share a frame: one socket write per frame is most of the CPU a delivery costs. Counted
from the previous pass, not from the event: an event waits this long at most, half of
it on average, and each socket still gets one frame per period."""
BUSY_WINDOW_SECONDS = 0.25
"""The writer counts the frames queued over windows this long; it is busy in the next
window when the last one queued ``BUSY_DELIVERIES_PER_SECOND`` or more with a pass to
``BUSY_CONNECTIONS`` or more, and no longer after a window without, or two windows
without a pass."""
BUSY_DELIVERIES_PER_SECOND = 100_000
"""At this rate one write per frame per socket takes most of a core here: sending at once
would queue (the latency is then queueing), and wider frames cut the CPU a delivery costs
by about a fifth at no cost in latency. Below it every frame leaves on the next turn."""
BUSY_CONNECTIONS = 256
"""... and only fanning out wide: to a few sockets, events that arrive together already
share frames, and a publisher that waits for its events (closed loop) would only be
slowed by the wait."""
WRITER_SLICE_SECONDS = 0.005
"""Longest run of sends before the event loop gets a turn. Short: a publish takes a few
turns (its request read, its append's reply, its answer), and under a busy fan-out each
turn waits for the slice running; 20 ms slices put up to 60 ms into a publish at 200
events/s to 1,000 sockets (docs/benchmarks.md). The rest of the pass resumes on the
next turn."""
_CLOCK_EVERY = 64
"""Sends between looks at the clock."""
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 256 * 1024
_PAST_SUBSCRIPTIONS = 32


class Socket(Protocol):
    def write_now(self, data: str) -> bool:
        """Send a text frame at once, if this socket can without waiting (else False,
        nothing sent: use ``send_text``)."""

    async def send_text(self, data: str) -> None: ...

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the peer has gone."""

    async def close(self, code: int, reason: str = "") -> None: ...


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Mode(enum.Enum):
    LIVE = "live"
    READING = "catching_up"


class Load(Protocol):
    @property
    def overloaded(self) -> bool: ...


class Writer:
    """One pass that sends what every connection has queued, run on the next turn of the
    event loop after frames were queued; while it is busy (``BUSY_DELIVERIES_PER_SECOND``)
    at most one pass every ``BUSY_LINGER_SECONDS``, and under load every
    ``LOAD_LINGER_SECONDS``, so frames are fewer and wider: at a moderate rate every
    event leaves at once (one event alone is not even queued: ``write_at_once``), and
    only a writer that would fall behind trades a few milliseconds for fewer writes. A
    send the socket takes at once needs no task; only a socket that pushes back gets
    one, until it has taken its queue."""

    __slots__ = (
        "_armed", "_busy", "_last_pass", "_later", "_later_linger", "_queued", "_resuming",
        "_wide", "_window_start", "frames_queued",
    )

    def __init__(self) -> None:
        self._queued: list[Connection] = []
        self._armed = False
        self._busy = False
        self._window_start = self._last_pass = time.monotonic()
        """When the last pass began (a pass resumed after a slice is the same pass)."""
        self._resuming = False
        """A pass gave the event loop a turn and goes on at the next."""
        self._later: list[Connection] = []
        """Connections that asked while a pass was resuming: they go in the next pass, so
        one already sent to in this pass does not get a second frame from it."""
        self._later_linger = False
        self._wide = False
        """A pass in this window went to ``BUSY_CONNECTIONS`` or more."""
        self.frames_queued = 0
        """Frames queued by the connections since ``_window_start`` (they add to it)."""

    @property
    def busy(self) -> bool:
        return self._busy

    def writes_at_once(self) -> bool:
        """Whether a live event may go to its recipients' sockets on this turn
        (``write_at_once``): the writer is not widening frames."""
        return not self._busy or self._quiet(time.monotonic())

    def write_at_once(
        self, entry: StreamEntry, conns: Iterable[Connection], before: Offset, counters: Counters
    ) -> int:
        """One live event to ``conns``, on this turn: its frame is written to each socket
        that has nothing queued before it, with no queue and no pass (the usual case
        below load: one frame per event, and at a moderate rate most of a delivery's
        cost was the Python around the write). Queued (``deliver``) for the others, and
        for every one left once this has run ``WRITER_SLICE_SECONDS``: the pass that
        sends those gives the event loop its turns. How many were written now."""
        started = time.monotonic()
        written = n = 0
        late = False
        for conn in conns:
            if not late and conn.write_live(entry):
                written += 1
            else:
                conn.deliver(entry, before)
            n += 1
            if n % _CLOCK_EVERY == 0 and not late:
                late = time.monotonic() - started > WRITER_SLICE_SECONDS
        if written:
            self.frames_queued += written
            counters.frames_sent(written, entry)
        if n >= BUSY_CONNECTIONS:
            self._wide = True
        self._account(time.monotonic())
        return written

    def want(self, conn: Connection, linger: bool) -> None:
        if self._resuming:
            self._later.append(conn)
            self._later_linger = self._later_linger or linger
            return
        self._queued.append(conn)
        if not self._armed:
            self._arm(linger)

    def _arm(self, linger: bool) -> None:
        self._armed = True
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if linger:
            period = LOAD_LINGER_SECONDS
        elif self._busy and not self._quiet(now):
            period = BUSY_LINGER_SECONDS
        else:
            period = 0.0
        wait = self._last_pass + period - now
        if wait > 0:
            loop.call_later(wait, self.run)
        else:
            loop.call_soon(self.run)

    def run(self) -> None:
        self._armed = False
        queued, self._queued = self._queued, []
        started = time.monotonic()
        if not self._resuming:
            self._last_pass = started
        self._resuming = False
        if len(queued) >= BUSY_CONNECTIONS:
            self._wide = True
        try:
            for i, conn in enumerate(queued):
                if (
                    i % _CLOCK_EVERY == _CLOCK_EVERY - 1
                    and time.monotonic() - started > WRITER_SLICE_SECONDS
                ):
                    # The event loop gets a turn (requests, replies, heartbeats); the
                    # rest of this pass goes first on the next.
                    self._queued = queued[i:] + self._queued
                    self._armed = self._resuming = True
                    asyncio.get_running_loop().call_soon(self.run)
                    return
                try:
                    conn.flush()
                except Exception:
                    logger.exception("sending to a connection failed")
                    conn.close(WS_1011_INTERNAL_ERROR)
        finally:
            self._account(time.monotonic())
        if self._later:  # the pass is over: the next, a period after this one began
            self._queued += self._later
            self._later = []
            linger, self._later_linger = self._later_linger, False
            if not self._armed:
                self._arm(linger)

    def _quiet(self, now: float) -> bool:
        """Two windows without a pass: busy no more (a lone event after a quiet spell
        leaves at once)."""
        if now - self._window_start < 2 * BUSY_WINDOW_SECONDS:
            return False
        self._busy = self._wide = False
        self._window_start, self.frames_queued = now, 0
        return True

    def _account(self, now: float) -> None:
        elapsed = now - self._window_start
        if elapsed >= BUSY_WINDOW_SECONDS:
            self._busy = self._wide and (
                self.frames_queued / elapsed >= BUSY_DELIVERIES_PER_SECOND
            )
            self._window_start, self.frames_queued, self._wide = now, 0, False


class Counters:
    """Process-wide totals the connections add to (read by metrics)."""

    __slots__ = ("_frames", "delivered", "latency")

    LATENCY_EVERY = 16
    """Delivery latency is sampled: one frame in this many is timed, at its send."""

    def __init__(self, latency: Callable[[float], None] | None = None) -> None:
        self.delivered = 0
        self.latency = latency
        """Seconds from append to send, of the oldest event in a frame just sent."""
        self._frames = 0

    def frame_sent(self, events: int, oldest: StreamEntry) -> None:
        self.delivered += events
        self._frames += 1
        if self.latency is not None and self._frames % self.LATENCY_EVERY == 0:
            self.latency(max(0.0, time.time() - oldest.published_at))

    def frames_sent(self, frames: int, entry: StreamEntry) -> None:
        """``entry`` went to ``frames`` sockets in one run (``Writer.write_at_once``):
        timed once, after the last of them, when the run passes a multiple of
        ``LATENCY_EVERY`` frames (so at most once per event)."""
        before = self._frames
        self.delivered += frames
        self._frames += frames
        every = self.LATENCY_EVERY
        if self.latency is not None and self._frames // every != before // every:
            self.latency(max(0.0, time.time() - entry.published_at))


Key = tuple[int, int]
_NEVER: Key = (2**63, 0)


@dataclasses.dataclass(slots=True)
class Subscription:
    id: str
    patterns: list[str]
    types: frozenset[str]
    test_id: str | None
    covers_from: Key
    """Events after this id that match have been (or are being) delivered through it."""
    covers_until: Key = _NEVER
    latest: bool = False
    """``latest: true``: a waiting ``test.progress`` may be replaced by a newer one."""

    def matches(self, entry: StreamEntry) -> bool:
        return entry.event_type in self.types and (
            self.test_id is None or entry.test_id == self.test_id
        )

    def delivered(self, entry: StreamEntry) -> bool:
        return self.covers_from < entry.key <= self.covers_until and self.matches(entry)

    @property
    def index_keys(self) -> list[tuple[str, str | None]]:
        return [(t, self.test_id) for t in self.types]

    def indexed_under(self, key: tuple[str, str | None]) -> bool:
        return key[1] == self.test_id and key[0] in self.types


@dataclasses.dataclass(slots=True)
class ReplayJob:
    """A subscription's replay: matching events in (since, upto], then ``replayed``."""

    sub: Subscription
    since: Offset | None
    """None: from the client_id's stored offset, if any."""
    upto: Offset | None
    """None until the hub knows where the log ends."""
    ref: Ref | None


@dataclasses.dataclass(slots=True)
class _Out:
    text: str
    entry: StreamEntry | None
    """None for a control frame (reply, ping, notice): never batched or replaced."""
    gone: bool = False
    """Replaced by a newer ``test.progress`` (``latest`` subscriptions only)."""


class Connection:
    # Thousands of these live at once: no per-instance dict.
    __slots__ = ("_counters", "_flush_wanted", "_full", "_latest", "_latest_subs", "_load",
        "_next_sub", "_on_end", "_on_reading", "_outbox", "_room", "_sending", "_waiting_since",
        "_writer", "awaiting_pong_since", "behind_notified", "client_id", "close_code",
        "connected_at", "ended", "id", "max_queue_bytes", "missed", "mode", "next_ping",
        "past_subscriptions", "position", "principal", "queued_bytes", "received", "replays",
        "sent", "socket", "state", "subscriptions", "warned_for_exp")

    def __init__(
        self,
        socket: Socket,
        principal: Principal,
        *,
        connection_id: str,
        client_id: str | None,
        max_queue_bytes: int,
        load: Load | None = None,
        counters: Counters | None = None,
        writer: Writer | None = None,
    ) -> None:
        self.socket = socket
        self.principal = principal
        self.id = connection_id
        self.client_id = client_id
        self.max_queue_bytes = max_queue_bytes
        self._load = load
        self._counters = counters or Counters()
        self._writer = writer or Writer()
        self._on_reading: Callable[[], None] | None = None
        self.state = State.OPEN
        self.mode = Mode.LIVE
        self.position: Offset | None = None
        """While reading: every log entry up to here has been considered."""
        self.behind_notified = False
        """A ``catching_up`` notice went out and its ``live`` has not yet."""
        self.close_code: int = WS_1000_NORMAL_CLOSURE
        self.connected_at = time.time()
        self.subscriptions: dict[str, Subscription] = {}
        """Changed only through ``add_subscription`` and ``end_subscription``."""
        self._latest_subs = 0
        self.past_subscriptions: list[Subscription] = []
        """The newest ``_PAST_SUBSCRIPTIONS`` ended ones."""
        self.replays: list[ReplayJob] = []
        self.missed = 0
        """Events the hub skipped while this connection was reading (they are in the log)."""
        self.sent = 0
        self.received = 0
        self.queued_bytes = 0
        self.next_ping = 0.0
        self.awaiting_pong_since: float | None = None
        self.warned_for_exp: float | None = None
        """The ``exp`` a ``token.expiring`` was sent for: one warning per token expiry."""
        self._waiting_since: float | None = None
        """Since when (monotonic) frames have waited with no byte accepted, if they do."""
        self._flush_wanted = False
        self._sending: asyncio.Task[None] | None = None
        """The task finishing a send the socket did not take at once, if one is."""
        self._outbox: deque[_Out] | None = None
        """What waits to be sent; None while nothing does (an empty deque is 760 bytes,
        held by every idle connection)."""
        self._latest: dict[str, _Out] = {}
        self._full = False
        """The queue reached half its limit; a reader waits for room (``wait_for_room``)."""
        self._room: asyncio.Future[None] | None = None
        self.ended = False
        """``close`` was called, or the socket failed."""
        self._on_end: Callable[[], object] | None = None
        self._next_sub = 0

    # -- subscriptions -----------------------------------------------------------

    def new_subscription_id(self) -> str:
        self._next_sub += 1
        return f"s{self._next_sub}"

    def add_subscription(self, sub: Subscription) -> None:
        if sub.id in self.subscriptions:
            raise RuntimeError(f"subscription {sub.id} exists")
        self.subscriptions[sub.id] = sub
        self._latest_subs += sub.latest

    def end_subscription(self, sub: Subscription, until: Key) -> bool:
        """Stop ``sub``; it covered events up to ``until``. Whether it was current."""
        if self.subscriptions.pop(sub.id, None) is None:
            return False
        self._latest_subs -= sub.latest
        sub.covers_until = until
        self.past_subscriptions.append(sub)
        if len(self.past_subscriptions) > _PAST_SUBSCRIPTIONS:
            del self.past_subscriptions[0]
        return True

    def replace_principal(self, principal: Principal) -> None:
        """A refreshed token: it must name the same user."""
        if principal.sub != self.principal.sub:
            raise RuntimeError("a refreshed token must carry the same sub")
        self.principal = principal

    def already_delivered(self, entry: StreamEntry, excluding: Subscription) -> bool:
        for sub in (*self.subscriptions.values(), *self.past_subscriptions):
            if sub is not excluding and sub.delivered(entry):
                return True
        return False

    def admits(self, entry: StreamEntry) -> bool:
        """The event names no audience, or one this connection's principal is in."""
        aud = entry.audience
        p = self.principal
        return aud is None or aud.admits(p.sub, p.groups, p.roles)

    def wants(self, entry: StreamEntry) -> bool:
        """The live rule, for reading the log: a current subscription matches and the
        audience admits this connection."""
        return self.admits(entry) and any(s.matches(entry) for s in self.subscriptions.values())

    @property
    def single_test_id(self) -> str | None:
        """The test every subscription is limited to, when they share one."""
        ids = {sub.test_id for sub in self.subscriptions.values()}
        return ids.pop() if len(ids) == 1 else None

    # -- live and reading -----------------------------------------------------------

    def when_reading(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever this connection starts reading the log."""
        self._on_reading = callback

    @property
    def reading(self) -> bool:
        return self.mode is Mode.READING

    def deliver(self, entry: StreamEntry, before: Offset) -> None:
        """A live event from the hub's tail, in id order; ``before`` is the id the hub
        dispatched just before it. Past the queue limit, read from ``before`` on."""
        if self.state is not State.OPEN:
            return
        if self.mode is not Mode.LIVE:
            self.missed += 1
            return
        if self.queued_bytes + len(entry.frame) > self.max_queue_bytes and self._outbox:
            self._start_reading(before)
            self.missed = 1
            self.behind_notified = True
            waiting = self.queue_depth + 1
            # First in the queue: the client learns at once, not after the backlog.
            notice = encode(ConnectionInfo(state="catching_up", behind=waiting))
            self._outbox.appendleft(_Out(notice, None))  # not empty: see above
            self.queued_bytes += len(notice)
            self._want_flush()
            return
        if self._latest_subs:
            self.push(entry)
        else:
            self._push(_Out(entry.frame, entry))

    def write_live(self, entry: StreamEntry) -> bool:
        """Write a live event now, when nothing waits before it and the socket takes the
        frame at once (``Writer.write_at_once``, which counts it); False, nothing done,
        otherwise: then ``deliver`` it."""
        if (
            self._outbox is not None
            or self._sending is not None
            or self.mode is not Mode.LIVE
            or self.state is not State.OPEN
        ):
            return False
        try:
            if not self.socket.write_now(entry.frame):
                return False
        except Exception:
            self._lost()  # the socket failed: the session ends; the other recipients go on
            return False
        self.sent += 1
        return True

    def request_replay(self, job: ReplayJob, position: Offset | None) -> None:
        """Queue a subscription's replay; live events wait until it is done.

        ``position`` is the hub's (None before it knows where the log ends); a
        connection that is already reading keeps its own."""
        self.replays.append(job)
        if self.mode is Mode.LIVE:
            self._start_reading(position)
        elif self._on_reading is not None:
            self._on_reading()

    def _start_reading(self, position: Offset | None) -> None:
        if self.mode is not Mode.LIVE:
            raise RuntimeError(f"cannot start reading in mode {self.mode.name}")
        self.mode = Mode.READING
        self.position = position
        if self._on_reading is not None:
            self._on_reading()

    def advance(self, position: Offset) -> None:
        if self.mode is not Mode.READING:
            raise RuntimeError("only a reading connection advances its position")
        self.position = position

    def go_live(self) -> None:
        """Back to live delivery: call in the same step that saw ``position`` reach the
        hub's, so the next event the hub dispatches is the next one this connection needs."""
        if self.mode is not Mode.READING or self.replays:
            raise RuntimeError("go_live needs a reading connection with no replay pending")
        self.mode = Mode.LIVE
        self.position = None
        self.missed = 0
        if self.behind_notified:
            self.behind_notified = False
            self.send_control(encode(ConnectionInfo(state="live")))

    def current_position(self, hub_position: Offset | None) -> Offset | None:
        """Where this connection's event stream stands: its own while reading."""
        return self.position if self.mode is Mode.READING else hub_position

    # -- outbound ----------------------------------------------------------------

    @property
    def has_room(self) -> bool:
        return self.queued_bytes < self.max_queue_bytes

    def push(self, entry: StreamEntry) -> None:
        """Queue one event (the caller decided it belongs to this connection)."""
        if self.state is not State.OPEN:
            return
        item = _Out(entry.frame, entry)
        if (
            self._latest_subs
            and entry.event_type == "test.progress"
            and entry.test_id
            and self._latest_only(entry)
        ):
            older = self._latest.get(entry.test_id)
            if older is not None and not older.gone:
                older.gone = True
                self.queued_bytes -= len(older.text)
            self._latest[entry.test_id] = item
        self._push(item)

    def _latest_only(self, entry: StreamEntry) -> bool:
        subs = [s for s in self.subscriptions.values() if s.matches(entry)]
        return bool(subs) and all(s.latest for s in subs)

    def send_control(self, text: str) -> None:
        if self.state is State.OPEN:
            self._push(_Out(text, None))

    def _push(self, item: _Out) -> None:
        if not self._outbox and self._sending is None:
            self._waiting_since = time.monotonic()
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(item)
        self.queued_bytes += len(item.text)
        self._writer.frames_queued += 1
        if self.queued_bytes >= self.max_queue_bytes // 2:
            self._full = True
        self._want_flush()

    def _want_flush(self) -> None:
        if not self._flush_wanted and self._sending is None:
            self._flush_wanted = True
            self._writer.want(self, self._load is not None and self._load.overloaded)

    async def wait_for_room(self) -> None:
        """Until the queue is below half the limit: the socket took the previous page."""
        while self.state is State.OPEN and self._full:
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room)

    def _made_room(self) -> None:
        self._full = False
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    def _drop_replaced(self) -> bool:
        """Drop replaced items at the head of the queue; whether anything is left."""
        while self._outbox and self._outbox[0].gone:
            self._outbox.popleft()
        if not self._outbox:
            self._outbox = None
            return False
        return True

    def _pop(self) -> _Out:
        assert self._outbox is not None
        item = self._outbox.popleft()
        self.queued_bytes -= len(item.text)
        entry = item.entry
        if self._latest and entry is not None and entry.test_id:
            if self._latest.get(entry.test_id) is item:
                del self._latest[entry.test_id]
        return item

    def _take(self) -> tuple[str, int, StreamEntry | None]:
        """The next frame to send: a control frame, one event, or a batch of events;
        how many events it holds, and its oldest event. The head of the queue is not
        a replaced item."""
        first = self._pop()
        oldest = first.entry
        if oldest is None:
            return first.text, 0, None
        if not self._outbox:  # the usual case below load: one event, one frame
            return first.text, 1, oldest
        parts = [first.text]
        size = len(first.text)
        while len(parts) < MAX_BATCH_EVENTS and size < MAX_BATCH_BYTES and self._drop_replaced():
            if self._outbox[0].entry is None:
                break
            item = self._pop()
            size += len(item.text)
            parts.append(item.text)
        if len(parts) == 1:
            return first.text, 1, oldest
        return _batch(parts), len(parts), oldest

    def flush(self) -> None:
        """Send what is queued, as far as the socket takes it at once (the writer's pass)."""
        self._flush_wanted = False
        while self.state is State.OPEN and self._sending is None and self._drop_replaced():
            text, events, oldest = self._take()
            try:
                if self.socket.write_now(text):
                    self._sent(events, oldest)
                    continue
                rest = eager.start(self.socket.send_text(text))
            except Exception:
                self._lost()
                return
            if rest is not None:
                self._sending = asyncio.create_task(self._finish(rest, events, oldest))
                return
            self._sent(events, oldest)
        self._sent_all()

    async def _finish(
        self, rest: eager.Rest, events: int, oldest: StreamEntry | None
    ) -> None:
        """The socket pushed back: finish that send, then send the rest of the queue here."""
        try:
            await rest
            if self.state is not State.OPEN:
                return  # finished while closing: not counted as delivered
            self._sent(events, oldest)
            while self.state is State.OPEN and self._drop_replaced():
                text, events, oldest = self._take()
                if not self.socket.write_now(text):
                    await self.socket.send_text(text)
                if self.state is not State.OPEN:
                    return
                self._sent(events, oldest)
            self._sent_all()
        except Exception:
            self._lost()
        finally:
            self._sending = None

    def _sent(self, events: int, oldest: StreamEntry | None) -> None:
        self.sent += events
        if oldest is not None:
            self._counters.frame_sent(events, oldest)
        self._waiting_since = time.monotonic() if self._outbox else None
        if self._full and self.queued_bytes < self.max_queue_bytes // 2:
            self._made_room()

    def _sent_all(self) -> None:
        self._waiting_since = None
        if self._full:
            self._made_room()

    def _lost(self) -> None:
        """A send failed: the client has gone. The session ends and finishes us."""
        self._end()

    def when_ended(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once, when ``close`` is called or the socket fails."""
        self._on_end = callback

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            if self._on_end is not None:
                self._on_end()

    # -- heartbeats and token expiry ---------------------------------------------------

    def schedule_ping(self, at: float) -> None:
        self.next_ping = at

    def ping_due(self, now: float) -> bool:
        return now >= self.next_ping

    def ping(self, frame: str, now: float, interval: float) -> None:
        self.send_control(frame)
        self.next_ping = now + interval
        if self.awaiting_pong_since is None:
            self.awaiting_pong_since = now

    def pong(self) -> None:
        self.awaiting_pong_since = None

    def heartbeat_missed(self, now: float, timeout: float) -> bool:
        since = self.awaiting_pong_since
        return since is not None and now - since > timeout

    def warn_expiry(self, now: float, warning: float) -> None:
        """One ``token.expiring`` per token expiry, ``warning`` seconds before it."""
        exp = self.principal.exp
        if self.warned_for_exp != exp and now >= exp - warning:
            self.warned_for_exp = exp
            self.send_control(encode(TokenExpiring(expires_in=round(exp - now, 3))))

    def stalled(self, now_monotonic: float, timeout: float) -> bool:
        """Frames have waited ``timeout`` seconds with no byte accepted by the socket."""
        since = self._waiting_since
        return since is not None and now_monotonic - since > timeout

    def close(self, code: int) -> None:
        """Begin closing with ``code``; the session closes the socket."""
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self.close_code = code
        # Events go; replies and errors already queued (the rate_limited ones
        # before a 4008) are still sent by flush_control, except to a stalled one.
        outbox = self._outbox or ()
        keep = [] if code == WS_4009_SLOW_CONSUMER else [i for i in outbox if i.entry is None]
        self._outbox = deque(keep) if keep else None
        self._latest.clear()
        self.replays.clear()
        self.queued_bytes = sum(len(i.text) for i in keep)
        if self._sending is not None:
            self._sending.cancel()
        self._made_room()
        self._end()

    def finish(self) -> None:
        """The socket is gone: nothing more is queued or sent."""
        if self.state is State.CLOSED:
            raise RuntimeError("connection already finished")
        if self.state is State.OPEN:
            self.close(WS_1000_NORMAL_CLOSURE)
        self.state = State.CLOSED

    async def flush_control(self) -> None:
        """Send what ``close`` kept, before the close frame."""
        while self._outbox:
            item = self._outbox.popleft()
            self.queued_bytes -= len(item.text)
            await self.socket.send_text(item.text)

    @property
    def queue_depth(self) -> int:
        return sum(1 for i in self._outbox or () if not i.gone)


class _LastBatch:
    """The last batch frame's events and text. A pass to many sockets that fell behind
    together finds the same events waiting on each: all but the first reuse the text
    (and so the frame ``rawsend`` built for it) instead of joining and encoding their own.
    Matched by identity of every event's text, never by value."""

    __slots__ = ("parts", "text")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.text = ""


_last_batch = _LastBatch()


def _batch(parts: list[str]) -> str:
    last = _last_batch
    if len(parts) == len(last.parts) and all(map(operator.is_, parts, last.parts)):
        return last.text
    last.parts = parts
    last.text = '{"type":"batch","events":[' + ",".join(parts) + "]}"
    return last.text


def newest(a: Offset | None, b: Offset) -> Offset:
    return b if a is None or parse_offset(b) > parse_offset(a) else a
