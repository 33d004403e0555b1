"""The WebSocket protocol of one connection: client frames in, replies and replays out.

The seam between replay and live: a subscription joins the hub's index and
notes the hub's position ``T`` in the same step of the event loop, so every
event up to ``T`` is in the log for the replay and every later one reaches
the connection live. Live events are held while a replay runs, then follow
its ``replayed`` frame, so nothing is lost or doubled at the seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import TypeVar

import msgspec
from aiolimiter import AsyncLimiter

from secstream.auth import Authenticator
from secstream.connection import Connection, State, Subscription
from secstream.entries import START, StreamEntry
from secstream.errors import (
    WS_4008_RATE_LIMITED,
    AuthError,
    LogUnavailable,
)
from secstream.events import expand, is_valid_pattern
from secstream.hub import Hub
from secstream.protocol import (
    DECODER,
    MAX_FRAME_BYTES,
    Ack,
    Acked,
    Error,
    Ping,
    Pong,
    PongReply,
    Ref,
    Refresh,
    Refreshed,
    Replayed,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    encode,
    is_offset,
    parse_offset,
    ref_of,
)
from secstream.types import Offset

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_SUBSCRIPTIONS = 64
MAX_TEST_ID = 256
_VIOLATION_WINDOW = 10.0


class Session:
    def __init__(
        self,
        conn: Connection,
        hub: Hub,
        auth: Authenticator,
        *,
        client_rate: float,
        client_burst: int,
        replay_limit: int,
        on_rate_limited: Callable[[], None] | None = None,
        on_replayed: Callable[[int], None] | None = None,
        audit: Callable[[str, str, str | None], None] | None = None,
        replay_span: Callable[[str], AbstractContextManager[object]] | None = None,
    ) -> None:
        self.conn = conn
        self.hub = hub
        self.auth = auth
        self.replay_limit = replay_limit
        self._limiter = AsyncLimiter(client_burst, client_burst / client_rate)
        # Tolerate a burst's worth of refused frames per window, then close 4008.
        self._violations = AsyncLimiter(client_burst, _VIOLATION_WINDOW)
        self._on_rate_limited = on_rate_limited
        self._on_replayed = on_replayed
        self._audit = audit or (lambda action, outcome, reason: None)  # issue 8 hooks
        self._replay_span = replay_span or (lambda subscription: contextlib.nullcontext())
        self._replays: asyncio.Queue[
            tuple[Subscription, Offset | None, Offset | None, Ref | None]
        ]
        self._replays = asyncio.Queue()

    async def run(self) -> None:
        """Read frames and run replays until the peer goes or the connection closes."""
        conn = self.conn
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(conn.run_sender()),
            asyncio.create_task(self._run_replays()),
            asyncio.create_task(conn.closed.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not isinstance(exc, OSError | ConnectionError):
                        logger.error("connection task failed", exc_info=exc)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _read(self) -> None:
        while self.conn.state is State.OPEN:
            raw = await self.conn.socket.receive()
            if raw is None:
                return
            self.conn.received += 1
            await self.handle(raw)

    # -- frames ----------------------------------------------------------------------

    async def handle(self, raw: str | bytes) -> None:
        if not self._limiter.has_capacity():
            if self._on_rate_limited is not None:
                self._on_rate_limited()
            self._error("rate_limited", "too many frames; slow down", ref_of(raw))
            if not self._violations.has_capacity():
                self.conn.close(WS_4008_RATE_LIMITED)
            else:
                await self._violations.acquire()
            return
        await self._limiter.acquire()
        if len(raw) > MAX_FRAME_BYTES:
            self._error("bad_request", f"frame over {MAX_FRAME_BYTES} bytes", ref_of(raw))
            return
        try:
            msg = DECODER.decode(raw)
        except msgspec.ValidationError as exc:
            self._error("bad_request", str(exc), ref_of(raw))
            return
        except msgspec.DecodeError:
            self._error("bad_request", "frame is not a JSON object", None)
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
                self.conn.awaiting_pong_since = None
            case Ping(id=ref):
                self.conn.send_control(encode(PongReply(ref=ref)))
            case Refresh(token=token, id=ref):
                self._refresh(token, ref)

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
            self._audit("subscribe.forbidden", "denied", f"may not receive {refused[0]!r}")
            return self._error("forbidden", f"your roles may not receive {refused[0]!r}", ref)
        if msg.since is not None and not is_offset(msg.since):
            return self._error("bad_request", "since must be an event id or \"0\"", ref)
        if msg.test_id is not None and not 0 < len(msg.test_id) <= MAX_TEST_ID:
            return self._error("bad_request", "test_id must be 1 to 256 characters", ref)
        if len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
            return self._error("bad_request", f"at most {MAX_SUBSCRIPTIONS} subscriptions", ref)
        # Before the hub knows where the log ends (Redis was down at start), nothing
        # has been dispatched: the replay then runs up to where the tail begins.
        upto = self.hub.last_id if self.hub.positioned.is_set() else None
        since = msg.since
        sub = Subscription(
            id=conn.new_subscription_id(),
            patterns=list(msg.event_types),
            types=expand(msg.event_types, allowed),
            test_id=msg.test_id,
            covers_from=parse_offset(upto or START),
        )
        # One step of the event loop: index and position together (the seam).
        conn.replaying += 1
        self.hub.subscribe(conn, sub)
        conn.send_control(
            encode(Subscribed(subscription=sub.id, event_types=sub.patterns, ref=ref))
        )
        self._replays.put_nowait((sub, since, upto, ref))
        return None

    async def _run_replays(self) -> None:
        while True:
            sub, since, upto, ref = await self._replays.get()
            count, truncated = 0, False
            try:
                if upto is None:
                    await self.hub.positioned.wait()
                    upto = self.hub.start_id
                    sub.covers_from = parse_offset(upto)
                if since is None and self.conn.client_id is not None:
                    since = await self._stored_offset()
                if since is not None and sub.id in self.conn.subscriptions:
                    sub.covers_from = min(sub.covers_from, parse_offset(since))
                    count, truncated = await self._replay(sub, since, upto)
            finally:
                self.conn.send_control(
                    encode(
                        Replayed(subscription=sub.id, count=count, truncated=truncated, ref=ref)
                    )
                )
                self.conn.replaying -= 1
                if not self.conn.replaying:
                    self.conn.release_held()

    async def _stored_offset(self) -> Offset | None:
        conn = self.conn
        assert conn.client_id is not None
        stored = await _retrying(
            lambda: self.hub.log.stored_offset(conn.principal.sub, conn.client_id or "")
        )
        pending = self.hub.pending_ack(conn.principal.sub, conn.client_id)
        if pending is not None and (stored is None or parse_offset(pending) > parse_offset(stored)):
            return pending
        return stored

    async def _replay(self, sub: Subscription, since: Offset, upto: Offset) -> tuple[int, bool]:
        conn = self.conn
        principal = conn.principal

        def match(entry: StreamEntry) -> bool:
            aud = entry.audience
            return (
                sub.matches(entry)
                and (aud is None or aud.admits(principal.sub, principal.groups, principal.roles))
                and not conn.already_delivered(entry, sub)
            )

        with self._replay_span(sub.id):  # issue 8: secstream.replay
            result = await _retrying(
                lambda: self.hub.log.replay(
                    since, upto, match, limit=self.replay_limit, test_id=sub.test_id
                )
            )
        for entry in result.entries:
            conn.send_event(entry)
        if self._on_replayed is not None:
            self._on_replayed(len(result.entries))
        return len(result.entries), result.truncated

    def _ack(self, offset: str, ref: Ref | None) -> None:
        if self.conn.client_id is None:
            return self._error("no_client_id", "ack needs a connection with a client_id", ref)
        if not is_offset(offset) or offset == "0":
            return self._error("bad_request", "offset must be an event id", ref)
        stored = self.hub.ack(self.conn, offset)
        self._reply(Acked(offset=stored, ref=ref), ref)
        return None

    def _refresh(self, token: str, ref: Ref | None) -> None:
        conn = self.conn
        try:
            principal = self.auth.authenticate(token)
        except AuthError as exc:
            self._audit("token.refresh", "denied", str(exc))
            return self._error("invalid_token", str(exc), ref)
        if principal.sub != conn.principal.sub:
            self._audit("token.refresh", "denied", "another sub")
            return self._error("invalid_token", "a refreshed token must carry the same sub", ref)
        if not principal.receivable:
            self._audit("token.refresh", "denied", "roles receive nothing")
            return self._error("invalid_token", "the new token's roles receive nothing", ref)
        self.hub.replace_principal(conn, principal)
        self._audit("token.refresh", "allowed", None)
        self._reply(Refreshed(expires_at=principal.exp, ref=ref), ref)
        return None


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Wait out a Redis outage: the connection stays open and the work resumes after it."""
    delay = 0.1
    while True:
        try:
            return await call()
        except LogUnavailable:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
