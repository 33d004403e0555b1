"""One timer for every connection of the process: heartbeats, token expiry, stalls,
and the load watch that makes the node refuse connections when it falls behind."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from secstream.connection import Connection
from secstream.errors import (
    WS_4001_TOKEN_EXPIRED,
    WS_4002_HEARTBEAT_TIMEOUT,
    WS_4009_SLOW_CONSUMER,
)
from secstream.protocol import PingFrame, encode

logger = logging.getLogger(__name__)

_LAG_OVERLOADED = 0.25
_LAG_RECOVERED = 0.05
_QUEUED_OVERLOADED = 64
"""Times SECSTREAM_MAX_QUEUE_BYTES queued in all, process-wide."""


class LoadWatch:
    """Overloaded while the event loop lags, too much is queued, or the node is nearly full."""

    def __init__(self, *, max_connections: int, max_queue_bytes: int) -> None:
        self.max_connections = max_connections
        self.max_queue_bytes = max_queue_bytes
        self.overloaded = False
        self.loop_lag = 0.0

    def observe(self, lag: float, connections: Iterable[Connection], count: int) -> None:
        self.loop_lag = lag
        queued = sum(c.queued_bytes for c in connections)
        pressure = (
            lag > _LAG_OVERLOADED
            or queued > self.max_queue_bytes * _QUEUED_OVERLOADED
            or count >= self.max_connections * 0.95
        )
        calm = lag < _LAG_RECOVERED and count < self.max_connections * 0.9
        if pressure and not self.overloaded:
            logger.warning(
                "overloaded: batching wider and refusing connections",
                extra={"lag": lag, "queued": queued, "connections": count},
            )
            self.overloaded = True
        elif self.overloaded and calm and queued < self.max_queue_bytes * 4:
            logger.info("load back to normal")
            self.overloaded = False


class Timers:
    def __init__(
        self,
        connections: Callable[[], list[Connection]],
        load: LoadWatch,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        token_expiry_warning: float,
        stall_timeout: float,
    ) -> None:
        self._connections = connections
        self.load = load
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.token_expiry_warning = token_expiry_warning
        self.stall_timeout = stall_timeout

    @property
    def period(self) -> float:
        return max(
            0.05,
            min(1.0, self.heartbeat_interval / 4, self.heartbeat_timeout / 4,
                self.stall_timeout / 4),
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.period
        while True:
            started = loop.time()
            await asyncio.sleep(period)
            lag = max(0.0, loop.time() - started - period)
            try:
                conns = self._connections()
                self.load.observe(lag, conns, len(conns))
                self.check(conns, time.time())
            except Exception:
                logger.exception("connection timers failed")

    def check(self, conns: Iterable[Connection], now: float) -> None:
        ping: str | None = None
        mono = time.monotonic()
        for conn in conns:
            if conn.stalled(mono, self.stall_timeout):
                conn.close(WS_4009_SLOW_CONSUMER)
            elif conn.heartbeat_missed(now, self.heartbeat_timeout):
                conn.close(WS_4002_HEARTBEAT_TIMEOUT)
            elif now >= conn.principal.exp:
                conn.close(WS_4001_TOKEN_EXPIRED)
            else:
                conn.warn_expiry(now, self.token_expiry_warning)
                if conn.ping_due(now):
                    ping = ping or encode(PingFrame(ts=round(now, 3)))
                    conn.ping(ping, now, self.heartbeat_interval)
