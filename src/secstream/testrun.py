"""One run of a test module: its lifecycle events, findings, summary and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

from secstream.control import ControlRequest
from secstream.errors import LogUnavailable
from secstream.events import Priority
from secstream.protocol import Audience
from secstream.types import Offset

if TYPE_CHECKING:
    from secstream.publisher import Publisher

logger = logging.getLogger(__name__)

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITY_PRIORITY: Final[dict[str, Priority]] = {
    "critical": "critical",
    "high": "high",
    "medium": "normal",
    "low": "low",
    "info": "low",
}
MAX_ERROR_MESSAGE: Final = 1000
"""Characters of an exception's message that ``test.error`` carries."""


class TestRun:
    """``test.started`` on entry; ``test.completed``, ``test.error`` or ``test.cancelled`` on
    exit, by how the block ended, each with ``data.summary``.

    A cancel request (``POST /api/v1/tests/{id}/cancel``) sets ``cancel_requested``; unless
    ``handle_cancel``, it also cancels the task that entered the block, and the block then
    ends without an exception (as ``asyncio.timeout`` ends its own cancellation). With
    ``handle_cancel``, the module stops when it likes; a block that ends normally after a
    request publishes ``test.cancelled`` too.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        publisher: Publisher,
        test_id: str,
        *,
        module: str | None,
        user_id: str | None,
        audience: Audience | None,
        metadata: dict[str, Any] | None = None,
        handle_cancel: bool = False,
    ) -> None:
        self.publisher = publisher
        self.test_id = test_id
        self.module = module
        self.user_id = user_id
        self.audience = audience
        self.metadata = metadata
        self.handle_cancel = handle_cancel
        self.progress_value: float = 0
        self.lines = 0
        self.findings: dict[str, int] = dict.fromkeys(SEVERITY_PRIORITY, 0)
        self.summary: dict[str, Any] = {}
        """What the module adds to ``data.summary`` (hosts, URLs...); the counts win on a clash."""
        self.cancel_requested = asyncio.Event()
        self.cancelled_by: str | None = None
        self.cancel_reason: str | None = None
        self.status = "pending"
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._cancel_sent = False
        self._cancel_seen = False
        self._exiting = False
        self._started = 0.0

    async def event(self, event_type: str, priority: Priority = "normal", **data: Any) -> Offset:
        body: dict[str, Any] = {"test_id": self.test_id, **data}
        if self.module is not None:
            body.setdefault("module", self.module)
        return await self._publish(event_type, body, priority)

    async def _publish(
        self,
        event_type: str,
        body: dict[str, Any],
        priority: Priority,
        on_published: Callable[[], None] | None = None,
    ) -> Offset:
        sent = self._cancel_sent
        try:
            offset = await self.publisher.publish(
                event_type, body, priority=priority, audience=self.audience, user_id=self.user_id
            )
        except asyncio.CancelledError:
            self._cancel_seen = True
            raise
        if on_published is not None:
            on_published()
        if self._cancel_sent and not sent and not self._cancel_seen and not self._exiting:
            # Our cancel came during this publish and did not surface: either it is still
            # pending (the next await delivers it) or asyncio.wait_for inside redis-py
            # swallowed it (Python 3.11, CPython gh-86296). Surface it either way.
            self._cancel_seen = True
            await asyncio.sleep(0)
            raise asyncio.CancelledError("cancel requested")
        return offset

    async def progress(self, progress: float, output: str | None = None, **data: Any) -> Offset:
        self.progress_value = progress
        if output is not None:
            data["output"] = output
        body: dict[str, Any] = {"test_id": self.test_id, **data}
        body.update(progress=progress, status="running")
        if self.module is not None:
            body.setdefault("module", self.module)
        return await self._publish(
            "test.progress", body, "normal", self._count_line if output is not None else None
        )

    def _count_line(self) -> None:
        self.lines += 1

    async def finding(
        self, severity: Severity, title: str, *, message: str | None = None, **data: Any
    ) -> Offset:
        """Publish a ``system.alert`` for this run (priority from ``severity``) and count it."""
        if severity not in SEVERITY_PRIORITY:
            raise ValueError(f"severity must be one of {', '.join(SEVERITY_PRIORITY)}")
        body: dict[str, Any] = {**data, "test_id": self.test_id, "title": title}
        body["severity"] = severity
        if message is not None:
            body["message"] = message
        if self.module is not None:
            body.setdefault("module", self.module)
        def count() -> None:
            self.findings[severity] += 1

        return await self._publish("system.alert", body, SEVERITY_PRIORITY[severity], count)

    def summarize(self) -> dict[str, Any]:
        return {
            **self.summary,
            "findings": dict(self.findings),
            "duration_seconds": round(time.monotonic() - self._started, 3),
            "lines": self.lines,
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> TestRun:
        if self._task is not None:
            raise RuntimeError("a TestRun is entered once")
        if self.test_id in self.publisher.control.watched:
            raise RuntimeError(f"a run of test {self.test_id!r} is already going here")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a TestRun runs inside an asyncio task")
        self._task = task
        self._cancelling = task.cancelling()
        self._started = time.monotonic()
        users = self.audience.users if self.audience is not None else []
        await self.publisher.runs.start(self.test_id, users)
        data: dict[str, Any] = {"status": "running", "progress": 0}
        if self.metadata is not None:
            data["metadata"] = self.metadata
        await self.event("test.started", **data)
        self.status = "running"
        # Watched only now: a cancel cannot interrupt test.started. The control stream is
        # read from its start, so a request sent since runs.start() is not missed.
        self.publisher.control.watch(self.test_id, self._on_request)
        return self

    def _on_request(self, request: ControlRequest) -> None:
        if request.action != "cancel" or self.cancel_requested.is_set():
            return
        self.cancelled_by = request.by
        self.cancel_reason = request.reason
        self.cancel_requested.set()
        logger.info("cancel requested", extra={"test_id": self.test_id, "by": request.by})
        if not self.handle_cancel and self._task is not None and not self._task.done():
            self._cancel_sent = True
            self._task.cancel("cancel requested")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> bool:
        self._exiting = True
        self.publisher.control.unwatch(self.test_id)
        cancelled = isinstance(exc, asyncio.CancelledError)
        ours = False
        if self._cancel_sent and self._task is not None:
            if not cancelled:
                # The request came as the block ended: take delivery of our cancellation.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)
            ours = self._task.uncancel() <= self._cancelling
        base: dict[str, Any] = {"progress": self.progress_value, "summary": self.summarize()}
        if cancelled or (exc is None and self.cancel_requested.is_set()):
            if self.cancel_requested.is_set():
                base.update(cancelled_by=self.cancelled_by, reason=self.cancel_reason)
            await asyncio.shield(self._end("cancelled", "test.cancelled", "normal", base))
            return cancelled and ours
        if exc is None:
            base["progress"] = 100
            await self._end("completed", "test.completed", "normal", base)
            return False
        base["error"] = {"type": type(exc).__name__, "message": str(exc)[:MAX_ERROR_MESSAGE]}
        await self._end("error", "test.error", "high", base)
        return False

    async def _end(self, status: str, event_type: str, priority: Priority, data: Any) -> None:
        self.status = status
        try:
            await self.publisher.runs.finish(self.test_id, status)
        except LogUnavailable:
            logger.warning("could not mark the run finished", extra={"test_id": self.test_id})
        await self.event(event_type, priority=priority, status=status, **data)
