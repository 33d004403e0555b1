"""Publish from Python straight into the log, without an HTTP hop (contract section 6)."""

from __future__ import annotations

import asyncio
import os
import types
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from secstream.entries import validate
from secstream.eventlog import RedisEventLog
from secstream.events import Priority
from secstream.protocol import Audience, PublishRequest
from secstream.tracecontext import format_traceparent
from secstream.types import Offset

_TRACER = trace.get_tracer("secstream.publisher")

AudienceLike = Audience | dict[str, list[str]] | None


def _audience(value: AudienceLike) -> Audience | None:
    if value is None or isinstance(value, Audience):
        return value
    return Audience(
        users=list(value.get("users", [])),
        groups=list(value.get("groups", [])),
        roles=list(value.get("roles", [])),
    )


class Publisher:
    """Appends validated events to the same log the HTTP API writes.

    ``async with Publisher(url) as pub: await pub.publish("system.alert", {...})``
    """

    def __init__(
        self,
        url: str | None = None,
        key_prefix: str | None = None,
        *,
        redis: Redis | None = None,
        maxlen: int | None = None,
    ) -> None:
        if redis is None and url is None:
            raise ValueError("Publisher needs a Redis URL or a client")
        self._redis = redis if redis is not None else Redis.from_url(url or "")
        self._owns_redis = redis is None
        prefix = key_prefix or os.environ.get("SECSTREAM_KEY_PREFIX") or "secstream"
        maxlen = maxlen or int(os.environ.get("SECSTREAM_RETENTION_MAXLEN") or 1_000_000)
        self.log = RedisEventLog(self._redis, prefix=prefix, maxlen=maxlen)

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_redis:
            await self._redis.aclose()

    async def publish(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        priority: Priority = "normal",
        audience: AudienceLike = None,
        user_id: str | None = None,
        correlation_id: str | None = None,
        ttl: float | None = None,
        idempotency_key: str | None = None,
    ) -> Offset:
        """Append one event; its id. Raises EventInvalid, or LogUnavailable."""
        event = PublishRequest(
            event_type=event_type,
            data=data,
            audience=_audience(audience),
            priority=priority,
            correlation_id=correlation_id,
            user_id=user_id,
            ttl=ttl,
        )
        validate(event)
        # The caller's current span (from its own OpenTelemetry setup) is the parent.
        with _TRACER.start_as_current_span(
            "secstream.publish",
            kind=SpanKind.PRODUCER,
            attributes={"secstream.events": 1, "secstream.event_type": event_type},
        ) as span:
            (offset,) = await self.log.append(
                [event], idempotency_key=idempotency_key, traceparent=format_traceparent(span)
            )
        return offset

    def test_run(
        self,
        test_id: str,
        *,
        module: str | None = None,
        user_id: str | None = None,
        audience: AudienceLike = None,
    ) -> TestRun:
        return TestRun(self, test_id, module=module, user_id=user_id, audience=audience)


class TestRun:
    """``test.started`` on entry; ``test.completed``, ``test.error`` or
    ``test.cancelled`` on exit, by how the block ended."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        publisher: Publisher,
        test_id: str,
        *,
        module: str | None,
        user_id: str | None,
        audience: AudienceLike,
    ) -> None:
        self.publisher = publisher
        self.test_id = test_id
        self.module = module
        self.user_id = user_id
        self.audience = _audience(audience)
        self.progress_value: float = 0

    async def event(
        self, event_type: str, priority: Priority = "normal", **data: Any
    ) -> Offset:
        body: dict[str, Any] = {"test_id": self.test_id, **data}
        if self.module is not None:
            body.setdefault("module", self.module)
        return await self.publisher.publish(
            event_type, body, priority=priority, audience=self.audience, user_id=self.user_id
        )

    async def progress(self, progress: float, output: str | None = None, **data: Any) -> Offset:
        self.progress_value = progress
        if output is not None:
            data["output"] = output
        return await self.event("test.progress", progress=progress, status="running", **data)

    async def __aenter__(self) -> TestRun:
        await self.event("test.started", status="running", progress=0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if exc is None:
            await self.event("test.completed", status="completed", progress=100)
        elif isinstance(exc, asyncio.CancelledError):
            await asyncio.shield(
                self.event("test.cancelled", status="cancelled", progress=self.progress_value)
            )
        else:
            await self.event(
                "test.error",
                priority="high",
                status="error",
                progress=self.progress_value,
                error=f"{type(exc).__name__}: {exc}",
            )
