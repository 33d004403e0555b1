"""One client connection: its state, subscriptions and bounded outbound queue.

Nothing here touches Starlette or Redis: the socket is the small ``Socket``
protocol, and the hub hands in events already encoded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections import deque
from typing import Protocol

import msgspec

from secstream.auth import Principal
from secstream.entries import StreamEntry, now_iso
from secstream.errors import WS_1000_NORMAL_CLOSURE, WS_4009_SLOW_CONSUMER
from secstream.events import UNDROPPABLE
from secstream.protocol import parse_offset
from secstream.types import Offset

SLOW_GRACE_SECONDS = 2.0
"""How long a queue may stay over the limit (after coalescing) before close 4009."""
HARD_CAP_FACTOR = 4
"""Past this many times the limit, close 4009 at once: memory comes first."""
LOAD_LINGER_SECONDS = 0.05
"""Under load, how long a woken sender waits for more events to batch."""
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 256 * 1024
_PAST_SUBSCRIPTIONS = 32


class Socket(Protocol):
    async def send_text(self, data: str) -> None: ...

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the peer has gone."""

    async def close(self, code: int, reason: str = "") -> None: ...


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


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

    def matches(self, entry: StreamEntry) -> bool:
        return entry.event_type in self.types and (
            self.test_id is None or entry.test_id == self.test_id
        )

    def delivered(self, entry: StreamEntry) -> bool:
        return self.covers_from < entry.key <= self.covers_until and self.matches(entry)

    @property
    def index_keys(self) -> list[tuple[str, str | None]]:
        return [(t, self.test_id) for t in self.types]


@dataclasses.dataclass(slots=True)
class _Out:
    text: str
    entry: StreamEntry | None
    """None for a control frame (reply, ping): never coalesced or batched."""
    coalesced: int = 0
    """For a connection.info notice: how many progress events it stands for."""


class _InfoData(msgspec.Struct):
    reason: str
    test_id: str
    skipped: int


class _Info(msgspec.Struct, tag_field="type", tag="event", omit_defaults=False):
    id: str
    event_type: str
    timestamp: str
    priority: str
    data: _InfoData
    user_id: str | None = None
    correlation_id: str | None = None


_INFO_ENCODER = msgspec.json.Encoder()


class Connection:
    def __init__(
        self,
        socket: Socket,
        principal: Principal,
        *,
        connection_id: str,
        client_id: str | None,
        max_queue_bytes: int,
    ) -> None:
        self.socket = socket
        self.principal = principal
        self.id = connection_id
        self.client_id = client_id
        self.max_queue_bytes = max_queue_bytes
        self.state = State.OPEN
        self.close_code: int = WS_1000_NORMAL_CLOSURE
        self.connected_at = time.time()
        self.subscriptions: dict[str, Subscription] = {}
        self.past_subscriptions: deque[Subscription] = deque(maxlen=_PAST_SUBSCRIPTIONS)
        self.keys: dict[tuple[str, str | None], int] = {}
        self.sent = 0
        self.received = 0
        self.queued_bytes = 0
        self.coalesced = 0
        self.replaying = 0
        self.held: list[StreamEntry] = []
        self.held_bytes = 0
        self.over_since: float | None = None
        """When the queue went over the limit after coalescing (monotonic), if it is."""
        self.next_ping = 0.0
        self.awaiting_pong_since: float | None = None
        self.warned_for_exp: float | None = None
        """The ``exp`` a ``token.expiring`` was sent for: one warning per token expiry."""
        self.under_load = False
        """Set by the hub while the process is overloaded: wait LOAD_LINGER_SECONDS
        after waking so more events share a frame, and coalesce progress before sends."""
        self._outbox: deque[_Out] = deque()
        self._wakeup = asyncio.Event()
        self.closed = asyncio.Event()
        self._next_sub = 0

    # -- subscriptions -----------------------------------------------------------

    def new_subscription_id(self) -> str:
        self._next_sub += 1
        return f"s{self._next_sub}"

    def already_delivered(self, entry: StreamEntry, excluding: Subscription) -> bool:
        for sub in (*self.subscriptions.values(), *self.past_subscriptions):
            if sub is not excluding and sub.delivered(entry):
                return True
        return False

    # -- outbound ----------------------------------------------------------------

    def deliver(self, entry: StreamEntry) -> None:
        """A live event for this connection, from the hub's tail, in id order."""
        if self.state is not State.OPEN:
            return
        if self.replaying:
            self.held.append(entry)
            self.held_bytes += len(entry.frame)
            if self.held_bytes > self.max_queue_bytes * HARD_CAP_FACTOR:
                self.close(WS_4009_SLOW_CONSUMER)
            return
        self.send_event(entry)

    def release_held(self) -> None:
        held, self.held, self.held_bytes = self.held, [], 0
        for entry in held:
            self.send_event(entry)

    def send_event(self, entry: StreamEntry) -> None:
        self._push(_Out(entry.frame, entry))
        if self.queued_bytes > self.max_queue_bytes:
            self.coalesce()
            if self.queued_bytes > self.max_queue_bytes * HARD_CAP_FACTOR:
                self.close(WS_4009_SLOW_CONSUMER)
            elif self.queued_bytes > self.max_queue_bytes and self.over_since is None:
                # One burst (a whole tail read) may pass the limit before the sender
                # runs; only a queue that *stays* over it is a slow consumer.
                self.over_since = time.monotonic()
        elif entry.priority in UNDROPPABLE and self.queued_bytes > self.max_queue_bytes // 8:
            # An alert behind a backlog of progress goes out now, not after it.
            self.coalesce()

    def send_control(self, text: str) -> None:
        if self.state is State.OPEN:
            self._push(_Out(text, None))

    def _push(self, item: _Out) -> None:
        self._outbox.append(item)
        self.queued_bytes += len(item.text)
        self._wakeup.set()

    def coalesce(self) -> int:
        """Keep only the newest queued ``test.progress`` per test; returns how many went.

        Each test that lost events gets a ``connection.info`` notice saying how
        many, in the place (and with the id) of the newest event it dropped, so
        ids stay unique and increasing on this connection.
        """
        groups: dict[str, list[_Out]] = {}
        for item in self._outbox:
            e = item.entry
            if e is not None and (item.coalesced or _coalescible(e)):
                groups.setdefault(e.test_id or "", []).append(item)
        drop: set[int] = set()
        replace: dict[int, _Out] = {}
        removed = 0
        for test_id, items in groups.items():
            older = items[:-1]
            fresh = sum(1 for i in older if not i.coalesced)
            if not fresh:
                continue
            removed += fresh
            drop.update(id(i) for i in older[:-1])
            last = older[-1]
            assert last.entry is not None
            total = sum(i.coalesced or 1 for i in older)
            replace[id(last)] = self._notice(test_id, total, last.entry)
        if not removed:
            return 0
        kept: deque[_Out] = deque()
        for item in self._outbox:
            if id(item) not in drop:
                kept.append(replace.get(id(item), item))
        self._outbox = kept
        self.queued_bytes = sum(len(i.text) for i in kept)
        self.coalesced += removed
        return removed

    def _notice(self, test_id: str, skipped: int, stands_for: StreamEntry) -> _Out:
        info = _Info(
            id=stands_for.id,
            event_type="connection.info",
            timestamp=now_iso(),
            priority="low",
            data=_InfoData(reason="coalesced", test_id=test_id, skipped=skipped),
        )
        text = _INFO_ENCODER.encode(info).decode()
        entry = dataclasses.replace(
            stands_for, event_type="connection.info", priority="low", frame=text
        )
        return _Out(text, entry, coalesced=skipped)

    def _take(self) -> tuple[str, int]:
        """The next frame to send: a control frame, one event, or a batch of events."""
        first = self._outbox.popleft()
        self.queued_bytes -= len(first.text)
        if first.entry is None or not self._outbox or self._outbox[0].entry is None:
            return first.text, 0 if first.entry is None else 1
        parts = [first.text]
        size = len(first.text)
        while (
            self._outbox
            and self._outbox[0].entry is not None
            and len(parts) < MAX_BATCH_EVENTS
            and size < MAX_BATCH_BYTES
        ):
            item = self._outbox.popleft()
            self.queued_bytes -= len(item.text)
            size += len(item.text)
            parts.append(item.text)
        return '{"type":"batch","events":[' + ",".join(parts) + "]}", len(parts)

    async def run_sender(self) -> None:
        while self.state is State.OPEN:
            await self._wakeup.wait()
            if self.under_load:
                await asyncio.sleep(LOAD_LINGER_SECONDS)  # wider batches, fewer frames
            self._wakeup.clear()
            while self._outbox and self.state is State.OPEN:
                if self.under_load:
                    self.coalesce()
                text, events = self._take()
                await self.socket.send_text(text)
                self.sent += events
                if self.over_since is not None and self.queued_bytes <= self.max_queue_bytes:
                    self.over_since = None

    def close(self, code: int) -> None:
        """Begin closing with ``code``; the session closes the socket."""
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self.close_code = code
        # Events go; replies and errors already queued (the rate_limited ones
        # before a 4008) are still sent by flush_control, except to a slow consumer.
        keep = () if code == WS_4009_SLOW_CONSUMER else (i for i in self._outbox if i.entry is None)
        self._outbox = deque(keep)
        self.queued_bytes = sum(len(i.text) for i in self._outbox)
        self._wakeup.set()
        self.closed.set()

    async def flush_control(self) -> None:
        """Send what ``close`` kept, before the close frame."""
        while self._outbox:
            item = self._outbox.popleft()
            self.queued_bytes -= len(item.text)
            await self.socket.send_text(item.text)

    def stayed_slow(self, now_monotonic: float) -> bool:
        since = self.over_since
        return since is not None and now_monotonic - since > SLOW_GRACE_SECONDS

    @property
    def queue_depth(self) -> int:
        return len(self._outbox)


def _coalescible(entry: StreamEntry) -> bool:
    return entry.event_type == "test.progress" and entry.priority not in UNDROPPABLE


def newest(a: Offset | None, b: Offset) -> Offset:
    return b if a is None or parse_offset(b) > parse_offset(a) else a
