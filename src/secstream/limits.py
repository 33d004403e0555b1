"""Rate limits keyed by a source (a token's ``sub``, a client address), and the
watch that tells admins when one source keeps being limited."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiolimiter import AsyncLimiter

logger = logging.getLogger(__name__)

ALERT_AFTER = 100
"""Refusals of one source within ALERT_WINDOW that raise a ``system.alert``."""
ALERT_WINDOW = 60.0
ALERT_QUIET = 300.0
"""At most one alert per source and kind in this many seconds."""


class KeyedLimiter:
    """One leaky bucket per key (rate per second, ``burst`` deep), the least recent evicted."""

    def __init__(
        self,
        kind: str,
        rate: float,
        burst: int,
        *,
        on_refused: Callable[[str, str], None] | None = None,
        max_keys: int = 100_000,
    ) -> None:
        self.kind = kind
        self.rate = rate
        self.burst = burst
        self._on_refused = on_refused
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, AsyncLimiter] = OrderedDict()

    async def try_acquire(self, key: str) -> float | None:
        """None when allowed; else the seconds to wait before the next try."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = AsyncLimiter(self.burst, self.burst / self.rate)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.has_capacity():
            await bucket.acquire()  # returns at once: there is capacity
            return None
        if self._on_refused is not None:
            self._on_refused(self.kind, key)
        return 1.0 / self.rate

    def exhausted(self, key: str) -> float | None:
        """Like ``try_acquire`` but takes nothing: None while ``key`` has capacity left.

        With ``charge`` it limits only some outcomes (refused handshakes), not every try.
        """
        bucket = self._buckets.get(key)
        if bucket is None or bucket.has_capacity():
            return None
        if self._on_refused is not None:
            self._on_refused(self.kind, key)
        return 1.0 / self.rate

    async def charge(self, key: str) -> None:
        """Take one from ``key``'s bucket when it has any left."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = AsyncLimiter(self.burst, self.burst / self.rate)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.has_capacity():
            await bucket.acquire()


class UserSlots:
    """Open connections per token ``sub``; ``cap`` 0: no cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[str, int] = {}

    def acquire(self, sub: str) -> bool:
        held = self._open.get(sub, 0)
        if self.cap and held >= self.cap:
            return False
        self._open[sub] = held + 1
        return True

    def release(self, sub: str) -> None:
        held = self._open.get(sub, 0) - 1
        if held > 0:
            self._open[sub] = held
        else:
            self._open.pop(sub, None)

    def held(self, sub: str) -> int:
        return self._open.get(sub, 0)


class AbuseWatch:
    """Counts refusals per (kind, source) and calls ``alert`` when one keeps coming."""

    def __init__(self, alert: Callable[[str, str, int], None]) -> None:
        self._alert = alert
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self._last_alert: dict[tuple[str, str], float] = {}

    def refused(self, kind: str, source: str) -> None:
        now = time.monotonic()
        key = (kind, source)
        started, count = self._windows.get(key, (now, 0))
        if now - started > ALERT_WINDOW:
            started, count = now, 0
        count += 1
        self._windows[key] = (started, count)
        if len(self._windows) > 10_000:
            self._windows.clear()
        if count >= ALERT_AFTER and now - self._last_alert.get(key, -math.inf) > ALERT_QUIET:
            self._last_alert[key] = now
            logger.warning("source keeps being rate limited", extra={"kind": kind, "src": source})
            self._alert(kind, source, count)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
