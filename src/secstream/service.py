"""Service: what one process shares: the log, the hub, auth, limits, telemetry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from secstream.acks import AckWriter
from secstream.appender import GroupAppender
from secstream.audit import Audit, audit_close
from secstream.auth import Authenticator
from secstream.config import Settings
from secstream.connection import Connection
from secstream.entries import StreamEntry
from secstream.errors import WS_1001_GOING_AWAY, LogUnavailable
from secstream.eventlog import RedisEventLog
from secstream.hub import Hub
from secstream.limits import AbuseWatch, KeyedLimiter, UserSlots
from secstream.protocol import Audience, PublishRequest
from secstream.redis_client import RedisClient, connect
from secstream.redis_watch import RedisWatch
from secstream.registry import Registry
from secstream.simulator import Simulator
from secstream.status import Latencies, NodeFigures, StatusReporter
from secstream.tasks import cancel_all
from secstream.telemetry import Telemetry

if TYPE_CHECKING:
    from secstream.oidc import OidcKeys

logger = logging.getLogger(__name__)

class _HubMetrics:
    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self.latencies = Latencies()
        self.published = 0
        self._reported = 0
        telemetry.before_render(self._report)

    def _report(self) -> None:
        """``secstream_events_published_total`` gets its count when it is read: an OTel
        ``add`` per event costs more than the rest of counting it."""
        if self.published > self._reported:
            self._telemetry.events_published.add(self.published - self._reported)
            self._reported = self.published

    def delivery_latency(self, seconds: float) -> None:
        """Hook for the sender: seconds from append to the send on a socket."""
        self._telemetry.delivery_latency.record(seconds)
        self.latencies.observe(seconds)

    def dispatched(self, entry: StreamEntry, recipients: int) -> None:
        """Every append (HTTP or Publisher) passes this node's tail once: count it here."""
        self.published += 1
        if entry.traceparent:
            self._telemetry.deliver(
                entry.id, entry.event_type, entry.traceparent, recipients, entry.published_at
            )


class Service:
    """Everything one process shares: the log, the hub, auth, limits, telemetry."""

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.node_id = uuid.uuid4().hex[:8]
        # redis+sentinel://: a new connection asks the sentinels for the primary (failover).
        self.redis_client = (
            RedisClient(redis)
            if redis is not None
            else connect(
                settings.redis_url or "redis://127.0.0.1:6379/0",
                socket_timeout=10,
                socket_connect_timeout=2,
                retry_on_timeout=False,
                # A pooled connection that went stale while Redis restarted fails once: retry
                # it on a fresh one, or the first requests after an outage get 503.
                retry=Retry(NoBackoff(), 1),
                retry_on_error=[RedisConnectionError],
            )
        )
        self.redis = self.redis_client.redis
        self.redis_watch = RedisWatch()
        self._owns_redis = redis is None
        self.log = RedisEventLog(
            self.redis,
            prefix=settings.key_prefix,
            maxlen=settings.retention_maxlen,
            retention_seconds=settings.retention_seconds,
            critical_retention_seconds=settings.critical_retention_seconds,
            min_replicas=settings.min_replicas,
        )
        self.appender = GroupAppender(self.log)
        """HTTP publishes: concurrent ones share one script call (``publish_route``)."""
        self.oidc: OidcKeys | None = None
        if settings.oidc_issuer is not None:
            from secstream.oidc import OidcKeys  # httpx and authlib: only when asked for

            self.oidc = OidcKeys(settings.oidc_issuer, on_refresh=self._oidc_refreshed)
        self.telemetry = Telemetry(
            connections_active=lambda: len(self.hub.connections),
            messages_delivered=lambda: self.hub.delivered,
            node=self.node_id,
            oidc_key_age=self.oidc.age if self.oidc is not None else None,
        )
        self.metrics = _HubMetrics(self.telemetry)
        self.hub = Hub(
            self.log,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            token_expiry_warning=settings.token_expiry_warning,
            max_connections=settings.max_connections,
            max_queue_bytes=settings.max_queue_bytes,
            stall_timeout=settings.stall_timeout,
            metrics=self.metrics,
        )
        self.acks = AckWriter(self.log)
        self.auth = Authenticator.from_settings(settings, key_source=self.oidc)
        self.audit = Audit(
            self.redis,
            prefix=settings.key_prefix,
            node=self.node_id,
            retention_seconds=settings.audit_retention_seconds,
        )
        self.registry = Registry(
            self.redis,
            prefix=settings.key_prefix,
            node=self.node_id,
            connections=lambda: self.hub.connections,
            close=self._close_local,
        )
        self.status = StatusReporter(
            self.redis,
            prefix=settings.key_prefix,
            node=self.node_id,
            interval=settings.status_interval,
            max_connections=settings.max_connections,
            retention_seconds=settings.retention_seconds,
            figures=self._figures,
            publish=lambda event: self.log.append([event]),
            nodes=self.registry.nodes,
            log_end=self.log.last_id,
        )
        self.abuse = AbuseWatch(self._alert_admins)
        self.publish_limits = KeyedLimiter(
            "publish", settings.publish_rate, settings.publish_burst, on_refused=self.refused
        )
        # Polls count against the same rate as a socket's frames, per token sub.
        self.poll_limits = KeyedLimiter(
            "poll", settings.client_rate, settings.client_burst, on_refused=self.refused
        )
        self.handshake_limits = KeyedLimiter(
            "handshake",
            settings.handshake_rate,
            max(1, int(settings.handshake_rate * 2)),
            on_refused=self.refused,
        )
        self.user_slots = UserSlots(settings.max_connections_per_user)
        self.draining = False
        self.simulator: Simulator | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _figures(self) -> NodeFigures:
        return NodeFigures(
            connections=len(self.hub.connections),
            loop_lag=self.hub.loop_lag,
            delivery_p99=self.metrics.latencies.p99(),
            published=self.metrics.published,
            last_dispatched=self.hub.last_id,
        )

    def _oidc_refreshed(self, outcome: str) -> None:
        if self.telemetry.oidc_refreshes is not None:
            self.telemetry.oidc_refreshes.add(1, {"outcome": outcome})

    def _close_local(self, conn_id: str, code: int) -> bool:
        conn = self.hub.connections.get(conn_id)
        if conn is None:
            return False
        conn.close(code)
        return True

    def opened(self, conn: Connection, address: str | None) -> None:
        """A socket was accepted and joined the hub."""
        self.registry.opened(conn.id, address)
        self.telemetry.session_started(conn.id, conn.principal.sub, self.node_id)

    def closed(self, conn: Connection, address: str | None) -> None:
        """A socket left the hub: audit its close, update the registry."""
        self.registry.closed(conn.id)
        self.telemetry.connection_duration.record(max(0.0, time.time() - conn.connected_at))
        self.telemetry.session_ended(conn.id, conn.close_code)
        audit_close(self.audit, conn, address)

    def refused(self, kind: str, source: str) -> None:
        """A rate limit refused ``source``: count it, and watch for abuse."""
        self.telemetry.rate_limited.add(1, {"kind": kind})
        self.abuse.refused(kind, source)

    def _alert_admins(self, kind: str, source: str, count: int) -> None:
        alert = PublishRequest(
            event_type="system.alert",
            data={
                "title": "A client keeps being rate limited",
                "message": f"{source} was refused {count} times in a minute ({kind})",
                "kind": kind,
                "source": source,
            },
            priority="high",
            audience=Audience(roles=["admin"]),
        )
        self._spawn(self._publish_quietly(alert))

    async def _publish_quietly(self, event: PublishRequest) -> None:
        with contextlib.suppress(LogUnavailable):
            await self.log.append([event])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def start(self) -> None:
        if self.oidc is not None:  # not awaited: serve starts while the provider is down
            self._spawn(self.oidc.run())
        await self.hub.start()
        self.acks.start()
        self._spawn(self._trim_forever())
        self._spawn(self.audit.run())
        self._spawn(self.registry.run())
        self._spawn(self.status.run())
        if self.settings.demo:
            simulator = Simulator(self.log)
            self.simulator = simulator
            self._spawn(simulator.run_background())

    async def drain(self) -> None:
        """Stop accepting, close every socket with 1001, store pending acks."""
        self.draining = True
        self.hub.close_all(WS_1001_GOING_AWAY)
        for _ in range(50):
            if not self.hub.connections:
                break
            await asyncio.sleep(0.05)
        with contextlib.suppress(LogUnavailable):
            await self.acks.flush()

    async def stop(self) -> None:
        await cancel_all(list(self._tasks))
        await self.appender.aclose()
        await self.hub.stop()
        await self.acks.stop()
        await self.registry.leave()
        await self.audit.close()
        if self.oidc is not None:
            await self.oidc.aclose()
        self.telemetry.shutdown()
        if self._owns_redis:
            await self.redis_client.aclose()

    async def _trim_forever(self) -> None:
        while True:
            try:
                removed = await self.log.trim()
                if removed:
                    logger.info("retention trimmed the log", extra={"removed": removed})
            except LogUnavailable:
                logger.warning("retention trim skipped: event log unavailable")
            except Exception:
                logger.exception("retention trim failed")
            await asyncio.sleep(self.settings.trim_interval)
