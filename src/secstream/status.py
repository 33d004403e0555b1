"""The service's own health (contract section 8): ``system.status`` and threshold alerts.

Every node writes its figures to ``P:nodestat:<node>`` (expiring) each check. One node
per interval (whoever takes ``P:status:<n>`` first) publishes ``system.status`` with
the whole service's figures. Alerts are ``system.alert`` events to admins with
``data.source: "secstream"``, published when a threshold is crossed and again when it
clears, once for the whole service: the key ``P:alert:<name>`` holds a firing alert,
and only the node whose ``SET NX`` creates it (or whose ``DEL`` removes it) publishes.

Redis unreachable cannot be told through the log while it lasts: each node notes when
its checks began to fail, and once Redis answers again one node publishes the alert
(with ``data.since``) and its clearing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.asyncio import Redis

from secstream.audit import UNAVAILABLE
from secstream.entries import now_iso
from secstream.errors import LogUnavailable
from secstream.protocol import Audience, PublishRequest

logger = logging.getLogger(__name__)

P99_LIMIT: Final = 1.0
LAG_LIMIT: Final = 0.25
CONNECTIONS_SHARE: Final = 0.9
_SAMPLES: Final = 10_000
_MAX_CHECK: Final = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class NodeFigures:
    connections: int
    loop_lag: float
    delivery_p99: float | None
    published: int
    last_dispatched: str = "0-0"
    """The newest log id this node's tail has fanned out."""


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    name: str
    title: str
    priority: str = "high"


ALERTS: Final = {
    a.name: a
    for a in (
        Alert("redis_unreachable", "Redis was unreachable", "critical"),
        Alert("delivery_p99", "Delivery p99 over 1 s"),
        Alert("connections_high", "Connections over 90% of SECSTREAM_MAX_CONNECTIONS"),
        Alert("event_loop_lag", "A node's event loop lags over 250 ms"),
        Alert("retention_cap", "The length cap trims events younger than the retention"),
    )
}


def _ms(offset: str) -> int:
    head = offset.partition("-")[0]
    return int(head) if head.isdigit() else 0


class Latencies:
    """Recent delivery latencies of this node, for its p99 (bounded)."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=_SAMPLES)

    def observe(self, seconds: float) -> None:
        self._samples.append(seconds)

    def p99(self) -> float | None:
        """p99 of the samples since the last call (which clears them); None when none."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        self._samples.clear()
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class StatusReporter:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        node: str,
        interval: float,
        max_connections: int,
        retention_seconds: int,
        figures: Callable[[], NodeFigures],
        publish: Callable[[PublishRequest], Any],
        nodes: Callable[[], Awaitable[list[str]]],
        log_end: Callable[[], Awaitable[str]],
    ) -> None:
        """``figures()``: this node's now; ``publish(event)``: append it to the log (async);
        ``nodes()``: the live nodes (the connection registry's)."""
        self.redis = redis
        self.prefix = prefix
        self.node = node
        self.interval = interval
        self.check_every = min(interval, _MAX_CHECK) if interval > 0 else _MAX_CHECK
        self.max_connections = max_connections
        self.retention_seconds = retention_seconds
        self._figures = figures
        self._live_nodes = nodes
        self._log_end = log_end
        self._publish = publish
        self._down_since: float | None = None
        self._last_published: tuple[float, int] | None = None
        self._last_status = time.time()  # the first status one interval after start

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                logger.exception("status check failed")
            await asyncio.sleep(self.check_every)

    async def check(self, now: float | None = None) -> None:
        """One round: note this node's figures, judge the thresholds, maybe publish status."""
        now = time.time() if now is None else now
        mine = self._figures()
        try:
            await self._write_figures(mine, now)
        except UNAVAILABLE:
            if self._down_since is None:
                logger.warning("status: Redis unreachable")
                self._down_since = now
            return
        except LogUnavailable:
            if self._down_since is None:
                self._down_since = now
            return
        if self._down_since is not None:
            since, self._down_since = self._down_since, None
            await self._redis_recovered(since, now)
        await self._judge(mine, now)
        if self.interval > 0 and now - self._last_status >= self.interval * 0.999:
            self._last_status = now
            slot = int(now // self.interval)
            ttl = max(2, int(self.interval * 2))
            taken = await self.redis.set(
                self._key("status", str(slot)), self.node, nx=True, ex=ttl
            )
            if taken:
                await self._publish(self._event("system.status", "normal", await self.summary(now)))

    async def _write_figures(self, mine: NodeFigures, now: float) -> None:
        end = await self._log_end()
        behind = max(0, _ms(end) - _ms(mine.last_dispatched)) / 1000
        value = json.dumps(dataclasses.asdict(mine) | {"time": now, "behind": behind})
        ttl = max(3, int(self.check_every * 3))
        await self.redis.set(self._key("nodestat", self.node), value, ex=ttl)

    async def _nodes(self) -> dict[str, dict[str, Any]]:
        names = sorted(set(await self._live_nodes()) | {self.node})
        values = await self.redis.mget([self._key("nodestat", n) for n in names])
        found: dict[str, dict[str, Any]] = {}
        for name, raw in zip(names, values, strict=True):
            if raw is not None:
                with contextlib.suppress(ValueError):
                    found[name] = json.loads(raw)
        return found

    async def summary(self, now: float) -> dict[str, Any]:
        """The whole service's figures, for ``system.status``."""
        nodes = await self._nodes()
        mine = self._figures()
        rate = 0.0
        if self._last_published is not None:
            then, count = self._last_published
            rate = max(0, mine.published - count) / max(1e-3, now - then)
        self._last_published = (now, mine.published)
        p99s = [n["delivery_p99"] for n in nodes.values() if n.get("delivery_p99") is not None]
        memory = (await self.redis.info("memory")).get("used_memory")
        slowest = max(nodes.items(), key=lambda kv: kv[1].get("behind", 0.0), default=None)
        loop_lag = max((float(n.get("loop_lag", 0.0)) for n in nodes.values()), default=0.0)
        return {
            "source": "secstream",
            "status": "ok",
            "nodes": len(nodes),
            "connections": sum(int(n.get("connections", 0)) for n in nodes.values()),
            "events_per_second": round(rate, 2),
            "delivery_p99_seconds": max(p99s) if p99s else None,
            "slowest_node": slowest[0] if slowest else None,
            "slowest_node_lag_seconds": round(slowest[1].get("behind", 0.0), 3) if slowest else 0,
            "max_event_loop_lag_seconds": round(loop_lag, 4),
            "redis_memory_bytes": memory,
            "reported_by": self.node,
            "time": now_iso(now),
        }

    async def _judge(self, mine: NodeFigures, now: float) -> None:
        p99 = mine.delivery_p99
        await self._set("delivery_p99", p99 is not None and p99 > P99_LIMIT, now, node=True,
                        value=p99, threshold=P99_LIMIT)
        share = mine.connections / self.max_connections
        await self._set("connections_high", share > CONNECTIONS_SHARE, now, node=True,
                        value=mine.connections, threshold=int(self.max_connections * 0.9))
        await self._set("event_loop_lag", mine.loop_lag > LAG_LIMIT, now, node=True,
                        value=round(mine.loop_lag, 4), threshold=LAG_LIMIT)
        trimmed = await self.redis.get(self._key("trimmed"))
        young = False
        if trimmed is not None:
            raw = trimmed.decode() if isinstance(trimmed, bytes) else str(trimmed)
            trimmed_at = int(raw.partition("-")[0]) / 1000
            young = now - trimmed_at < self.retention_seconds * 0.99
        await self._set("retention_cap", young, now, value=None,
                        threshold=self.retention_seconds)

    async def _set(
        self, name: str, firing: bool, now: float, *, node: bool = False, **data: Any
    ) -> None:
        """Publish when this check changes the alert's shared state (NX set / delete)."""
        key = self._key("alert", name, self.node) if node else self._key("alert", name)
        if firing:
            if await self.redis.set(key, now_iso(now), nx=True):
                await self._alert(name, "firing", node=self.node if node else None, **data)
        elif await self.redis.delete(key):
            await self._alert(name, "cleared", node=self.node if node else None, **data)

    async def _redis_recovered(self, since: float, now: float) -> None:
        key = self._key("alert", "redis_unreachable")
        if await self.redis.set(key, now_iso(since), nx=True, ex=60):
            data = {"since": now_iso(since), "seconds": round(now - since, 1)}
            await self._alert("redis_unreachable", "firing", **data)
            await self._alert("redis_unreachable", "cleared", **data)

    async def _alert(self, name: str, state: str, **data: Any) -> None:
        alert = ALERTS[name]
        title = alert.title if state == "firing" else f"Cleared: {alert.title}"
        body = {"source": "secstream", "alert": name, "state": state, "title": title, **data}
        logger.warning("alert %s %s", name, state, extra={"alert": body})
        priority = alert.priority if state == "firing" else "normal"
        await self._publish(self._event("system.alert", priority, body))

    def _event(self, event_type: str, priority: str, data: dict[str, Any]) -> PublishRequest:
        audience = Audience(roles=["admin"]) if event_type == "system.alert" else None
        return PublishRequest(
            event_type=event_type, data=data, priority=priority, audience=audience  # type: ignore[arg-type]
        )
