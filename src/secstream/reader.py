"""Reading the log for one connection that is not live: replays, then catching up.

A connection reads while a subscription's replay runs and after it fell
further behind than its queue holds. Its reader runs each queued replay
(paged, see ``replay``), then reads the log from the connection's position
with the live rule (``Connection.wants``), a page at a time and only once
the socket has taken most of the previous one. When the position reaches the
hub's, the connection goes live in that same step of the event loop: every
event up to there came from the log, every later one comes from the hub.

Reads wait out a Redis outage and carry on where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from secstream import replay
from secstream.connection import Connection, ReplayJob, State
from secstream.entries import StreamEntry
from secstream.errors import LogUnavailable
from secstream.logapi import EventLog
from secstream.protocol import ConnectionInfo, Replayed, encode, parse_offset
from secstream.types import Offset

T = TypeVar("T")
PAGE = 500
"""Log entries one catch-up read examines at most."""
_MIN_PAGE = 8
_TRUNCATION_CHECK_PAGES = 20


class Position(Protocol):
    """What a reader needs of the hub: where its tail stands."""

    last_id: Offset
    start_id: Offset
    positioned: asyncio.Event


class LogReader:
    def __init__(
        self,
        conn: Connection,
        log: EventLog,
        hub: Position,
        *,
        replay_limit: int,
        gate: asyncio.Semaphore,
        stored_offset: Callable[[], Awaitable[Offset | None]],
        on_replayed: Callable[[int], None] | None = None,
        replay_span: Callable[[str], AbstractContextManager[object]] | None = None,
    ) -> None:
        self.conn = conn
        self.log = _Patient(log)
        self.hub = hub
        self.replay_limit = replay_limit
        self.gate = gate
        self._stored_offset = stored_offset
        self._on_replayed = on_replayed
        self._replay_span = replay_span or (lambda subscription: contextlib.nullcontext())
        self._pages = 0
        self._bytes_per_entry = 256.0
        """What one entry examined has added to the queue, on average (a moving one)."""

    def _page_size(self) -> int:
        """Entries for about half a queue: a page fits the room the sender has made."""
        room = self.conn.max_queue_bytes / 2
        return max(_MIN_PAGE, min(PAGE, int(room / max(self._bytes_per_entry, 1.0))))

    async def run(self) -> None:
        """Until the connection is live again (or closes)."""
        conn = self.conn
        if conn.position is None:  # it subscribed before the hub knew where the log ends
            await self.hub.positioned.wait()
            conn.advance(self.hub.start_id)
        self._pages = 0
        while conn.state is State.OPEN:
            if conn.replays:
                await self._replay(conn.replays.pop(0))
            elif await self._catch_up():
                return

    # -- replays -------------------------------------------------------------------------

    async def _replay(self, job: ReplayJob) -> None:
        with self._replay_span(job.sub.id):  # secstream.replay
            await self._replay_job(job)

    async def _replay_job(self, job: ReplayJob) -> None:
        conn, sub = self.conn, job.sub
        if job.upto is None:
            job.upto = self.hub.start_id
            sub.covers_from = parse_offset(job.upto)
        count, truncated = 0, False
        try:
            since = job.since
            if since is None and conn.client_id is not None:
                since = await _retrying(self._stored_offset)
            if since is None or sub.id not in conn.subscriptions:
                return
            upto = job.upto

            def match(entry: StreamEntry) -> bool:
                return (
                    conn.admits(entry)
                    and sub.matches(entry)
                    and not conn.already_delivered(entry, sub)
                )

            async with self.gate:
                plan = await replay.plan(
                    self.log, since, upto, match, limit=self.replay_limit, test_id=sub.test_id
                )
            truncated = plan.truncated
            sub.covers_from = min(sub.covers_from, parse_offset(since))
            async for page in replay.pages(
                self.log, plan, match, test_id=sub.test_id, page=self._page_size()
            ):
                for entry in page:
                    if not conn.has_room:
                        await conn.wait_for_room()
                    if conn.state is not State.OPEN:
                        return
                    conn.push(entry)
                    count += 1
        finally:
            conn.send_control(
                encode(Replayed(subscription=sub.id, count=count, truncated=truncated, ref=job.ref))
            )
            if self._on_replayed is not None and count:
                self._on_replayed(count)

    # -- catching up -----------------------------------------------------------------------

    async def _catch_up(self) -> bool:
        """Read one page from the connection's position; True once it is live again."""
        conn = self.conn
        await conn.wait_for_room()
        if conn.state is not State.OPEN or conn.replays:
            return False
        position = conn.position
        assert position is not None
        before = self.hub.last_id
        if parse_offset(position) >= parse_offset(before):
            conn.go_live()
            return True
        if conn.behind_notified and self._pages % _TRUNCATION_CHECK_PAGES == 0:
            if await self.log.truncated_after(position):
                conn.send_control(encode(ConnectionInfo(state="catching_up", truncated=True)))
        self._pages += 1
        size = self._page_size()
        async with self.gate:
            rows = await self.log.read(position, count=size, test_id=conn.single_test_id)
        if conn.state is not State.OPEN or conn.replays or conn.position != position:
            return False
        # Entries past the hub's position come live: stop there.
        end = self.hub.last_id
        end_key = parse_offset(end)
        now = time.time()
        last = position
        examined = pushed = 0
        for entry in rows:
            if entry.key > end_key:
                last = end
                break
            last = entry.id
            examined += 1
            if not entry.expired(now) and conn.wants(entry):
                conn.push(entry)
                pushed += len(entry.frame)
                if not conn.has_room:
                    break
        else:
            # The whole source up to `before` was visible to this read.
            if len(rows) < size and parse_offset(before) > parse_offset(last):
                last = before
        if examined:
            self._bytes_per_entry = 0.5 * self._bytes_per_entry + 0.5 * pushed / examined
        conn.advance(last)
        return False


class _Patient:
    """The log's reads, each waiting out an outage and then done again as it was."""

    def __init__(self, log: EventLog) -> None:
        self._log = log

    async def read(
        self,
        after: Offset,
        *,
        count: int,
        upto: Offset | None = None,
        test_id: str | None = None,
        critical: bool = False,
        inclusive: bool = False,
    ) -> list[StreamEntry]:
        return await _retrying(
            lambda: self._log.read(
                after, count=count, upto=upto, test_id=test_id, critical=critical,
                inclusive=inclusive,
            )
        )

    async def read_back(
        self,
        upto: Offset,
        *,
        after: Offset,
        count: int,
        test_id: str | None = None,
        critical: bool = False,
    ) -> list[StreamEntry]:
        return await _retrying(
            lambda: self._log.read_back(
                upto, after=after, count=count, test_id=test_id, critical=critical
            )
        )

    async def truncated_after(self, since: Offset, test_id: str | None = None) -> bool:
        return await _retrying(lambda: self._log.truncated_after(since, test_id))


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Wait out a Redis outage: the connection stays open and the work resumes after it."""
    delay = 0.1
    while True:
        try:
            return await call()
        except LogUnavailable:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
