"""Publish from Python straight into the log, without an HTTP hop (contract section 6)."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from secstream.appender import GroupAppender
from secstream.control import RunRecords
from secstream.control_reader import ControlReader
from secstream.entries import encode, validate
from secstream.eventlog import AppendOp, RedisEventLog
from secstream.events import Priority
from secstream.protocol import Audience, PublishRequest
from secstream.redis_client import RedisClient, connect
from secstream.testrun import TestRun
from secstream.tracecontext import format_traceparent
from secstream.types import Offset

__all__ = ["AudienceLike", "Publisher", "TestRun"]

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
        sub: str = "",
        min_replicas: int | None = None,
    ) -> None:
        """``url``: as ``SECSTREAM_REDIS_URL``, ``redis+sentinel://`` included.
        ``sub``: the namespace of this publisher's idempotency keys (contract section 5);
        the default, empty, is one no token can have. ``min_replicas`` (else
        ``SECSTREAM_MIN_REPLICAS``, else 0): ``publish`` raises NotReplicated unless that
        many replicas confirm the event within 1 s."""
        if redis is None and url is None:
            raise ValueError("Publisher needs a Redis URL or a client")
        if min_replicas is None:
            raw = os.environ.get("SECSTREAM_MIN_REPLICAS") or "0"
            if not raw.strip().isdigit():
                raise ValueError(f"SECSTREAM_MIN_REPLICAS must be a number, not {raw!r}")
            min_replicas = int(raw)
        self._client = RedisClient(redis) if redis is not None else connect(url or "")
        self._redis = self._client.redis
        self._owns_redis = redis is None
        prefix = key_prefix or os.environ.get("SECSTREAM_KEY_PREFIX") or "secstream"
        maxlen = maxlen or int(os.environ.get("SECSTREAM_RETENTION_MAXLEN") or 1_000_000)
        self.log = RedisEventLog(
            self._redis, prefix=prefix, maxlen=maxlen, min_replicas=min_replicas
        )
        # Concurrent publishes (asyncio.gather, several tasks) share one script call.
        self._appender = GroupAppender(self.log)
        self.sub = sub
        self.runs = RunRecords(self._redis, prefix=prefix)
        self.control = ControlReader(self.runs)

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._appender.aclose()
        await self.control.aclose()
        if self._owns_redis:
            await self._client.aclose()

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
        """Append one event; its id. Raises EventInvalid, or LogUnavailable.

        Publishes awaited concurrently go to Redis together, in one round trip.
        """
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
            op = AppendOp([encode(event, None, format_traceparent(span))], idempotency_key,
                          self.sub)
            appended = await self._appender.append(op)
        return appended.ids[0]

    def test_run(
        self,
        test_id: str,
        *,
        module: str | None = None,
        user_id: str | None = None,
        audience: AudienceLike = None,
        metadata: dict[str, Any] | None = None,
        handle_cancel: bool = False,
    ) -> TestRun:
        """A run of one test: ``async with pub.test_run("t-42", module=...) as run:``.

        With ``user_id`` and no ``audience``, the run's events go to that user and to
        administrators (contract section 6). ``handle_cancel=True``: a cancel request only
        sets ``run.cancel_requested``, and the module stops by itself; otherwise the run's
        task is cancelled (see docs/publishing.md).
        """
        if audience is None and user_id is not None:
            audience = Audience(users=[user_id], roles=["admin"])
        return TestRun(
            self,
            test_id,
            module=module,
            user_id=user_id,
            audience=_audience(audience),
            metadata=metadata,
            handle_cancel=handle_cancel,
        )
