"""What happened to Redis lately, for ``/health/ready``: outages and changes of primary.

Fed by the readiness checks and by failed publishes; read by ``/health/ready``, so an
operator sees after a failover that there was one, how long Redis was unreachable, why,
and whether publishes were refused for want of replicas (``SECSTREAM_MIN_REPLICAS``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from secstream.entries import now_iso

MAX_REASON = 300
KEPT_OUTAGES = 5
KEPT_REASONS = 3


class RedisWatch:
    def __init__(self) -> None:
        self.primary: str | None = None
        self.failovers = 0
        self._down_since: float | None = None
        self._down_wall: float | None = None
        self._reasons: list[str] = []
        self._outages: deque[dict[str, Any]] = deque(maxlen=KEPT_OUTAGES)
        self._last_change: dict[str, Any] | None = None
        self._unreplicated: dict[str, Any] | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, reason: str) -> None:
        """Redis did not answer."""
        reason = reason[:MAX_REASON] or "no answer"
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._down_wall = time.time()
            self._reasons = []
        if reason not in self._reasons:
            self._reasons = [*self._reasons, reason][-KEPT_REASONS:]

    def unreplicated(self, wanted: int, confirmed: int) -> None:
        """Redis answered, but too few replicas confirmed a write."""
        count = self._unreplicated["count"] + 1 if self._unreplicated else 1
        self._unreplicated = {
            "wanted": wanted,
            "confirmed": confirmed,
            "at": now_iso(time.time()),
            "count": count,
        }

    def answered(self, primary: str | None) -> None:
        """Redis answered; ``primary``: where the sentinels say it is now (None: no Sentinel)."""
        if self._down_since is not None and self._down_wall is not None:
            self._outages.append(
                {
                    "reasons": self._reasons,
                    "started_at": now_iso(self._down_wall),
                    "ended_at": now_iso(time.time()),
                    "seconds": round(time.monotonic() - self._down_since, 3),
                }
            )
            self._down_since = self._down_wall = None
        if primary is not None and primary != self.primary:
            if self.primary is not None:
                self.failovers += 1
                self._last_change = {"from": self.primary, "to": primary, "at": now_iso()}
            self.primary = primary

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._down_since is not None:
            out["reason"] = self._reasons[-1]
            out["down_for"] = round(time.monotonic() - self._down_since, 3)
        if self.primary is not None:
            out["primary"] = self.primary
            out["failovers"] = self.failovers
        if self._last_change is not None:
            out["last_failover"] = self._last_change
        if self._outages:
            out["outages"] = list(self._outages)
        if self._unreplicated is not None:
            out["last_unreplicated_write"] = self._unreplicated
        return out
