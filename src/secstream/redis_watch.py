"""What happened to Redis lately, for ``/health/ready``: outages and changes of primary.

Fed by the readiness checks and by failed publishes; read by ``/health/ready``, so an
operator sees after a failover that there was one, how long writes were refused, and why.
"""

from __future__ import annotations

import time
from typing import Any

from secstream.entries import now_iso

MAX_REASON = 300


class RedisWatch:
    def __init__(self) -> None:
        self.primary: str | None = None
        self.failovers = 0
        self._down_since: float | None = None
        self._down_wall: float | None = None
        self._reason: str | None = None
        self._last_outage: dict[str, Any] | None = None
        self._last_change: dict[str, Any] | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, reason: str) -> None:
        self._reason = reason[:MAX_REASON] or "no answer"
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._down_wall = time.time()

    def answered(self, primary: str | None) -> None:
        """Redis answered; ``primary``: where the sentinels say it is now (None: no Sentinel)."""
        if self._down_since is not None and self._down_wall is not None:
            self._last_outage = {
                "reason": self._reason,
                "started_at": now_iso(self._down_wall),
                "ended_at": now_iso(time.time()),
                "seconds": round(time.monotonic() - self._down_since, 3),
            }
            self._down_since = self._down_wall = None
        if primary is not None and primary != self.primary:
            if self.primary is not None:
                self.failovers += 1
                self._last_change = {
                    "from": self.primary,
                    "to": primary,
                    "at": now_iso(time.time()),
                }
            self.primary = primary

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._down_since is not None:
            out["reason"] = self._reason
            out["down_for"] = round(time.monotonic() - self._down_since, 3)
        if self.primary is not None:
            out["primary"] = self.primary
            out["failovers"] = self.failovers
        if self._last_change is not None:
            out["last_failover"] = self._last_change
        if self._last_outage is not None:
            out["last_outage"] = self._last_outage
        return out
