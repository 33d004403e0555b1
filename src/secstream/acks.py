"""Acknowledged offsets, stored by group commit.

Every ``ack`` waiting when a write starts goes into that one pipeline; those
that arrive meanwhile go into the next, which starts as soon as it is done.
Each ``acked`` reply is sent only once its offset is in Redis, so an offset a
client saw acknowledged survives the node being killed right after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from secstream.connection import newest
from secstream.errors import LogUnavailable
from secstream.logapi import EventLog
from secstream.tasks import cancel_all
from secstream.types import Offset

logger = logging.getLogger(__name__)

ClientKey = tuple[str, str]
"""(token ``sub``, ``client_id``)"""
Stored = Callable[[Offset], None]
_RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)


class AckWriter:
    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._pending: dict[ClientKey, tuple[Offset, list[Stored]]] = {}
        self._writing: dict[ClientKey, Offset] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, sub: str, client_id: str, offset: Offset, on_stored: Stored | None) -> None:
        """Store max(stored, offset); ``on_stored`` gets the stored value once durable."""
        key = (sub, client_id)
        current, waiters = self._pending.get(key, (None, []))
        if on_stored is not None:
            waiters.append(on_stored)
        self._pending[key] = (newest(current, offset), waiters)
        self._wake.set()

    def pending(self, sub: str, client_id: str) -> Offset | None:
        """The newest offset acknowledged here and not yet known stored, if any."""
        key = (sub, client_id)
        queued = self._pending.get(key)
        writing = self._writing.get(key)
        if queued is None:
            return writing
        return newest(writing, queued[0])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="acks")

    async def stop(self) -> None:
        """Stop the writer after one last attempt to store what is pending."""
        if self._task is not None:
            await cancel_all([self._task])
            self._task = None
        with contextlib.suppress(LogUnavailable):
            await self.flush()

    async def flush(self) -> None:
        """Write everything pending in one pipeline, then call back its waiters."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        self._writing = {key: offset for key, (offset, _) in batch.items()}
        try:
            stored = await self.log.store_offsets(
                (sub, cid, offset) for (sub, cid), (offset, _) in batch.items()
            )
        except BaseException:
            for key, (offset, waiters) in batch.items():  # back in line, nothing lost
                current, later = self._pending.get(key, (None, []))
                self._pending[key] = (newest(current, offset), waiters + later)
            raise
        finally:
            self._writing = {}
        for (_, waiters), value in zip(batch.values(), stored, strict=True):
            for call in waiters:
                call(value)

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
            except LogUnavailable:
                if not failures:
                    logger.warning("could not store acknowledged offsets; retrying")
                await asyncio.sleep(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])
                failures += 1
                self._wake.set()
            except Exception:
                logger.exception("storing acknowledged offsets failed; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()
            if self._pending:
                self._wake.set()
