"""Publishes appended by group commit: one script call for every publish waiting.

Every ``append`` that arrives while no call is in flight goes into the next one,
which starts on the next turn of the event loop: the publishes parsed from one
read of the sockets share a round trip. Those that arrive while a call is in
flight wait for it and go together into the one after, so under load a batch
holds what arrived during the previous round trip, and an idle server adds no
delay at all (no timer, no window).

A batch holds at most ``MAX_BATCH_EVENTS`` events and ``MAX_BATCH_BYTES`` bytes
(a single op larger than that goes alone). Each op keeps its own answer:
its ids, or the first ids of its ``Idempotency-Key``. When the call fails (Redis
away, not replicated in time), every op of that batch gets the same exception and
none is reported appended; the ops of other batches are not affected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from secstream.eventlog import Appended, AppendOp, RedisEventLog

logger = logging.getLogger(__name__)

MAX_BATCH_EVENTS: Final = 1000
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024


def op_size(op: AppendOp) -> int:
    return sum(sum(map(len, enc.fields)) for enc in op.events)


class GroupAppender:
    def __init__(
        self,
        log: RedisEventLog,
        *,
        max_events: int = MAX_BATCH_EVENTS,
        max_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("a batch must hold at least one event and one byte")
        self.log = log
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.calls = 0
        """Script calls made: with ``appended``, how well publishes shared them."""
        self.appended = 0
        self._queue: deque[tuple[AppendOp, int, asyncio.Future[Appended]]] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def append(self, op: AppendOp) -> Appended:
        """``op``'s answer once the script call that carried it returned."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Appended] = loop.create_future()
        self._queue.append((op, op_size(op), done))
        if self._writer is None:
            self._writer = loop.create_task(self._drain(), name="appender")
        return await done

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def aclose(self) -> None:
        """Wait for what is queued to be written (or to fail)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def _take(self) -> list[tuple[AppendOp, int, asyncio.Future[Appended]]]:
        batch = [self._queue.popleft()]
        events, size = len(batch[0][0].events), batch[0][1]
        while self._queue:
            op, op_bytes, _ = self._queue[0]
            if events + len(op.events) > self.max_events or size + op_bytes > self.max_bytes:
                break
            batch.append(self._queue.popleft())
            events += len(op.events)
            size += op_bytes
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                try:
                    answers = await self.log.append_many([op for op, _, _ in batch])
                except Exception as exc:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                except BaseException:
                    for _, _, done in batch:
                        done.cancel()
                    raise
                self.calls += 1
                self.appended += len(batch)
                for (_, _, done), answer in zip(batch, answers, strict=True):
                    if not done.done():
                        done.set_result(answer)
        finally:
            self._writer = None
            while self._queue:  # only when cancelled: nothing of these was sent
                _, _, done = self._queue.popleft()
                done.cancel()
