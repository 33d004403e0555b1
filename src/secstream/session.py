"""The WebSocket protocol of one connection: client frames in, replies out.

The seam between replay and live: a subscription joins the hub's index and
notes the connection's position ``T`` (the hub's, when it is live) in the same
step of the event loop, and the connection starts reading the log. Its reader
replays matching events up to ``T``, sends ``replayed``, then catches up from
``T`` with every subscription and goes live where the hub stands, so nothing
is lost or doubled at the seam, and nothing is held in memory meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractContextManager
from typing import Protocol

from aiolimiter import AsyncLimiter

from secstream.acks import AckWriter
from secstream.auth import Authenticator
from secstream.connection import Connection, ReplayJob, State, Subscription, newest
from secstream.entries import START
from secstream.errors import WS_1011_INTERNAL_ERROR, WS_4008_RATE_LIMITED, AuthError
from secstream.events import expand, is_valid_pattern
from secstream.hub import Hub
from secstream.protocol import (
    Ack,
    Acked,
    Error,
    FrameError,
    Ping,
    Pong,
    PongReply,
    Ref,
    Refresh,
    Refreshed,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    decode_client_frame,
    encode,
    is_offset,
    parse_offset,
    ref_of,
)
from secstream.reader import LogReader
from secstream.types import Offset

logger = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 64
MAX_TEST_ID = 256
_VIOLATION_WINDOW = 10.0


class SessionHooks(Protocol):
    """What a session tells the service about its connection (``websocket._Hooks``)."""

    def rate_limited(self) -> None: ...
    def replayed(self, count: int) -> None: ...
    def audit(self, action: str, outcome: str, reason: str | None) -> None: ...
    def replay_span(self, subscription: str) -> AbstractContextManager[object]: ...


class Session:
    """Slotted, with the frame limit's bucket in two of its slots and the service's
    callbacks in one object: every idle connection holds one."""

    __slots__ = (
        "_burst", "_cancelled", "_hooks", "_last", "_level", "_rate", "_reader", "_reading",
        "_stopping", "_task", "_violations", "acks", "auth", "conn", "hub",
    )

    def __init__(
        self,
        conn: Connection,
        hub: Hub,
        auth: Authenticator,
        acks: AckWriter,
        hooks: SessionHooks,
        *,
        client_rate: float,
        client_burst: int,
        replay_limit: int,
    ) -> None:
        self.conn = conn
        self.hub = hub
        self.auth = auth
        self.acks = acks
        self._hooks = hooks
        self._rate = client_rate
        self._burst = client_burst
        self._level = 0.0
        """Frames in the bucket; ``client_burst`` deep, leaking ``client_rate`` a second."""
        self._last = 0.0
        self._violations: AsyncLimiter | None = None
        """Made at the first refused frame: a burst's worth per window, then close 4008."""
        self._reader = LogReader(
            conn,
            hub.log,
            hub,
            replay_limit=replay_limit,
            gate=hub.reads,
            stored_offset=self._stored_offset,
            on_replayed=hooks.replayed,
            replay_span=hooks.replay_span,
        )
        self._reading: asyncio.Task[None] | None = None
        self._task: asyncio.Task[object] | None = None
        """The task in ``run``, while it runs."""
        self._stopping = False
        self._cancelled = False
        conn.when_reading(self.start_reader)

    def _take_frame(self) -> bool:
        """A leaky bucket (aiolimiter's arithmetic, without its waiting): False when a
        frame now would overflow it."""
        now = asyncio.get_running_loop().time()
        level = max(self._level - (now - self._last) * self._rate, 0.0)
        self._last = now
        if level + 1 > self._burst:
            self._level = level
            return False
        self._level = level + 1
        return True

    def start_reader(self) -> None:
        """The connection started reading the log: run its reader, if it is not running."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        try:
            await self._reader.run()
        except Exception:
            logger.exception("reading the log for a connection failed")
            self.conn.close(WS_1011_INTERNAL_ERROR)
        finally:
            if self._reading is asyncio.current_task():
                self._reading = None  # a live connection holds no finished task

    async def run(self) -> None:
        """Read frames until the peer goes or the connection closes.

        In the caller's task, not a task of its own (a task and its frames per idle
        connection): the connection's end (closed, or its socket failed) cancels this
        task while it reads (``_stop``), and that cancellation ends here."""
        conn = self.conn
        self._task = asyncio.current_task()
        conn.when_ended(self._stop)
        try:
            if not conn.ended:
                await self._read()
        except asyncio.CancelledError:
            task = self._task
            if not self._cancelled or task is None or task.uncancel() > 0:
                raise  # this task itself is being cancelled, from outside
        except (OSError, ConnectionError):
            pass
        except Exception:
            logger.exception("connection task failed")
        finally:
            self._task = None  # a cancel still to come (``_cancel``) has nothing to cancel
            reader = self._reading
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    def _stop(self) -> None:
        """The connection ended: stop reading. Ended from this very task (a close, a
        failed send, while handling a frame), the cancellation waits for its next
        ``await``, as it would have in a task of its own, or for ``run`` to end first."""
        if self._stopping:
            return
        self._stopping = True
        if self._task is asyncio.current_task():
            asyncio.get_running_loop().call_soon(self._cancel)
        else:
            self._cancel()

    def _cancel(self) -> None:
        if self._task is not None:
            self._cancelled = True
            self._task.cancel()

    async def _read(self) -> None:
        while self.conn.state is State.OPEN and not self._stopping:
            raw = await self.conn.socket.receive()
            if raw is None:
                return
            self.conn.received += 1
            await self.handle(raw)

    # -- frames ----------------------------------------------------------------------

    async def handle(self, raw: str | bytes) -> None:
        if not self._take_frame():
            self._hooks.rate_limited()
            self._error("rate_limited", "too many frames; slow down", ref_of(raw))
            if self._violations is None:
                self._violations = AsyncLimiter(self._burst, _VIOLATION_WINDOW)
            if not self._violations.has_capacity():
                self.conn.close(WS_4008_RATE_LIMITED)
            else:
                await self._violations.acquire()
            return
        try:
            msg = decode_client_frame(raw)
        except FrameError as exc:
            self._error("bad_request", str(exc), exc.ref)
            return
        match msg:
            case Subscribe():
                self._subscribe(msg)
            case Unsubscribe(subscription=sid, id=ref):
                sub = self.conn.subscriptions.get(sid)
                if sub is None:
                    self._error("not_found", f"no subscription {sid!r}", ref)
                else:
                    self.hub.unsubscribe(self.conn, sub)
                    self._reply(Unsubscribed(subscription=sid, ref=ref), ref)
            case Ack(offset=offset, id=ref):
                self._ack(offset, ref)
            case Pong():
                self.conn.pong()
            case Ping(id=ref):
                self.conn.send_control(encode(PongReply(ref=ref)))
            case Refresh(token=token, id=ref):
                await self._refresh(token, ref)

    def _reply(
        self, message: Subscribed | Unsubscribed | Acked | Refreshed, ref: Ref | None
    ) -> None:
        if ref is not None:
            self.conn.send_control(encode(message))

    def _error(self, code: str, message: str, ref: Ref | None) -> None:
        self.conn.send_control(encode(Error(code=code, message=message, ref=ref)))

    def _subscribe(self, msg: Subscribe) -> None:
        conn, ref = self.conn, msg.id
        if not msg.event_types:
            return self._error("bad_request", "event_types must not be empty", ref)
        bad = [p for p in msg.event_types if not is_valid_pattern(p)]
        if bad:
            return self._error("bad_request", f"unknown event type or pattern {bad[0]!r}", ref)
        allowed = conn.principal.receivable
        refused = [p for p in msg.event_types if "*" not in p and p not in allowed]
        if refused:
            self._hooks.audit("subscribe.forbidden", "denied", f"may not receive {refused[0]!r}")
            return self._error("forbidden", f"your roles may not receive {refused[0]!r}", ref)
        if msg.since is not None and not is_offset(msg.since):
            return self._error("bad_request", "since must be an event id or \"0\"", ref)
        if msg.test_id is not None and not 0 < len(msg.test_id) <= MAX_TEST_ID:
            return self._error("bad_request", "test_id must be 1 to 256 characters", ref)
        if len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
            return self._error("bad_request", f"at most {MAX_SUBSCRIPTIONS} subscriptions", ref)
        position = conn.current_position(self.hub.position)
        sub = Subscription(
            id=conn.new_subscription_id(),
            patterns=list(msg.event_types),
            types=expand(msg.event_types, allowed),
            test_id=msg.test_id,
            covers_from=parse_offset(position or START),
            latest=msg.latest,
        )
        # One step of the event loop: index and position together (the seam).
        self.hub.subscribe(conn, sub)
        conn.send_control(
            encode(Subscribed(subscription=sub.id, event_types=sub.patterns, ref=ref))
        )
        conn.request_replay(ReplayJob(sub, msg.since, position, ref), position)
        return None

    async def _stored_offset(self) -> Offset | None:
        conn = self.conn
        assert conn.client_id is not None
        stored = await self.hub.log.stored_offset(conn.principal.sub, conn.client_id)
        pending = self.acks.pending(conn.principal.sub, conn.client_id)
        return newest(stored, pending) if pending is not None else stored

    def _ack(self, offset: str, ref: Ref | None) -> None:
        client_id = self.conn.client_id
        if client_id is None:
            return self._error("no_client_id", "ack needs a connection with a client_id", ref)
        if not is_offset(offset) or offset == "0":
            return self._error("bad_request", "offset must be an event id", ref)
        conn = self.conn

        def stored(value: Offset) -> None:
            if ref is not None:
                conn.send_control(encode(Acked(offset=value, ref=ref)))

        self.acks.submit(conn.principal.sub, client_id, offset, stored)
        return None

    async def _refresh(self, token: str, ref: Ref | None) -> None:
        conn = self.conn
        try:
            principal = await self.auth.verify(token)
        except AuthError as exc:
            self._hooks.audit("token.refresh", "denied", str(exc))
            return self._error("invalid_token", str(exc), ref)
        if principal.sub != conn.principal.sub:
            self._hooks.audit("token.refresh", "denied", "another sub")
            return self._error("invalid_token", "a refreshed token must carry the same sub", ref)
        if not principal.receivable:
            self._hooks.audit("token.refresh", "denied", "roles receive nothing")
            return self._error("invalid_token", "the new token's roles receive nothing", ref)
        self.hub.replace_principal(conn, principal)
        self._hooks.audit("token.refresh", "allowed", None)
        self._reply(Refreshed(expires_at=principal.exp, ref=ref), ref)
        return None
