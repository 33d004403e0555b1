"""What the hub, the readers and the sessions need of the event log.

``RedisEventLog`` is the implementation; everything else depends on this
protocol, so a partitioned log (Redis Cluster, one stream per shard) changes
one module. Offsets are opaque here: order them with ``protocol.parse_offset``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from secstream.entries import StreamEntry
from secstream.types import Offset


class LogReads(Protocol):
    """Reading ranges of the log, as replays and catching up do."""

    async def read(
        self,
        after: Offset,
        *,
        count: int,
        upto: Offset | None = None,
        test_id: str | None = None,
        critical: bool = False,
        inclusive: bool = False,
    ) -> list[StreamEntry]:
        """At most ``count`` entries after ``after`` (or from it, ``inclusive``) up to
        ``upto``, oldest first; of one test, or of the critical ones, when asked."""

    async def read_back(
        self,
        upto: Offset,
        *,
        after: Offset,
        count: int,
        test_id: str | None = None,
        critical: bool = False,
    ) -> list[StreamEntry]:
        """At most ``count`` entries in (``after``, ``upto``], newest first."""

    async def truncated_after(self, since: Offset, test_id: str | None = None) -> bool:
        """Whether entries after ``since`` may have left the log (retention, a lost log)."""


class EventLog(LogReads, Protocol):
    async def last_id(self) -> Offset:
        """The newest id in the log, or the offset before every event."""

    async def tail(self, after: Offset, *, block_ms: int, count: int = 1000) -> list[StreamEntry]:
        """Entries after ``after``, waiting up to ``block_ms`` for the first."""

    async def stored_offset(self, sub: str, client_id: str) -> Offset | None: ...

    async def store_offsets(self, offsets: Iterable[tuple[str, str, Offset]]) -> list[Offset]:
        """Store max(stored, offset) for each; the stored values, in order."""
