"""One blocking read per ``Publisher`` over the control streams of all its running tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from redis.exceptions import RedisError

from secstream.control import REFRESH_EVERY, ControlRequest, RunRecords
from secstream.errors import LogUnavailable
from secstream.types import Offset

logger = logging.getLogger(__name__)

BLOCK_MS: Final = 500
"""How long one read waits. A run that starts meanwhile joins the next read (its stream is
read from the start, so nothing sent to it is missed): a request reaches its run within
about this long plus a round trip, Redis restarts aside."""
RETRY_MAX: Final = 0.25
"""Longest pause between attempts while Redis does not answer."""

Handler = Callable[[ControlRequest], None]


class ControlReader:
    """``watch(test_id, handler)``: ``handler`` gets every request sent to that run.

    The read task starts with the first watched run and idles (no Redis traffic) while none
    is watched. It also keeps the watched runs' records from expiring.
    """

    def __init__(
        self,
        records: RunRecords,
        *,
        block_ms: int = BLOCK_MS,
        retry_max: float = RETRY_MAX,
        refresh_every: float = REFRESH_EVERY,
    ) -> None:
        self.records = records
        self.block_ms = block_ms
        self.retry_max = retry_max
        self.refresh_every = refresh_every
        self._watched: dict[str, tuple[Handler, Offset]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failing = False
        self.reads = 0
        self._closing = False

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._watched)

    def watch(self, test_id: str, handler: Handler) -> None:
        """Raises RuntimeError when that test is watched already (two runs of one test)."""
        if test_id in self._watched:
            raise RuntimeError(f"a run of test {test_id!r} is already going in this publisher")
        self._watched[test_id] = (handler, "0-0")
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="secstream-control-reader"
            )

    def unwatch(self, test_id: str) -> None:
        self._watched.pop(test_id, None)

    async def aclose(self) -> None:
        """Stop reading. The read under way is let finish (cancelling redis-py in the middle
        of a blocking read can leave its connection pool unable to close)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._changed.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.block_ms / 1000 + 2)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._closing = False

    async def _run(self) -> None:
        delay = 0.05
        refreshed = time.monotonic()
        while not self._closing:
            if not self._watched:
                self._changed.clear()
                await self._changed.wait()
                continue
            if time.monotonic() - refreshed >= self.refresh_every:
                refreshed = time.monotonic()
                try:
                    await self.records.refresh(list(self._watched))
                except (LogUnavailable, RedisError, OSError):
                    logger.warning("could not refresh the run records", exc_info=True)
            try:
                positions = {t: pos for t, (_, pos) in self._watched.items()}
                requests = await self.records.read(positions, block_ms=self.block_ms)
                self.reads += 1
            except (LogUnavailable, RedisError, OSError):
                if self._closing:
                    return
                if not self.failing:
                    logger.warning("control stream read failed; retrying", exc_info=True)
                self.failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            if self.failing:
                logger.info("control stream read works again")
                self.failing = False
            delay = 0.05
            for test_id, request in requests:
                watched = self._watched.get(test_id)
                if watched is None:
                    continue
                handler = watched[0]
                self._watched[test_id] = (handler, request.id)
                try:
                    handler(request)
                except Exception:
                    logger.exception("a control request handler failed", extra={"test_id": test_id})
