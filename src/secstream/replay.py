"""A subscription's replay, planned first and then read page by page.

A replay sends the matching events in (since, upto], oldest first. When more
than ``limit`` match, it sends the newest ones and keeps every ``critical``
one (the newest ``critical`` ones when they alone exceed the limit), and says
``truncated``; so does a replay whose range reaches back past what retention
kept. Critical events outlive the log's retention in a stream of their own.

The plan is found by counting backwards, keeping no event in memory: only
where the kept non-critical events begin. The pages are then read forwards:
first the older critical events, then the rest of the range from ``floor``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable

from secstream.entries import StreamEntry
from secstream.logapi import LogReads
from secstream.protocol import parse_offset
from secstream.types import Offset

PAGE = 500
"""Log entries one read examines."""

Key = tuple[int, int]
_NEVER: Key = (2**63, 0)
Match = Callable[[StreamEntry], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    since: Offset
    upto: Offset
    truncated: bool
    floor: Offset | None
    """Read the range from here (inclusive); None: the whole range after ``since``."""
    critical_below: bool
    """Send the critical events in (since, floor) first, from the critical stream."""
    skip_critical: int
    """How many of the oldest matching critical events to leave out."""
    min_normal: Key | None
    """Leave out non-critical events older than this."""
    entries: list[StreamEntry] | None = None
    """The whole replay, when one backward read held all of it: nothing to read again."""


async def plan(
    log: LogReads,
    since: Offset,
    upto: Offset,
    match: Match,
    *,
    limit: int,
    test_id: str | None = None,
    now: float | None = None,
) -> Plan:
    now = time.time() if now is None else now
    retention_cut = await log.truncated_after(since, test_id)
    if parse_offset(upto) <= parse_offset(since):
        return Plan(since, upto, retention_cut, None, False, 0, None)
    # Backwards from upto: count matches until `limit` non-critical ones are seen.
    normal: list[Key] = []
    critical_in_scan = 0
    floor: StreamEntry | None = None
    end = upto
    overflow = False
    first_read: list[StreamEntry] | None = None
    while not overflow:
        rows = await log.read_back(end, after=since, count=PAGE, test_id=test_id)
        first_read = rows if first_read is None else []
        for entry in rows:
            floor = entry
            if entry.expired(now) or not match(entry):
                continue
            if entry.priority == "critical":
                critical_in_scan += 1
            elif len(normal) == limit:
                overflow = True
                break
            else:
                normal.append(entry.key)
        if len(rows) < PAGE or overflow:
            break
        end = f"({rows[-1].id}"
    if not overflow and not retention_cut and critical_in_scan + len(normal) <= limit:
        # The common case, a short gap: one read held it all; keep it rather than read again.
        whole = first_read[::-1] if first_read and len(first_read) < PAGE else None
        return Plan(since, upto, False, None, False, 0, None, whole)
    # Critical events older than the scan, from the stream that outlives retention.
    older = 0
    async for entry in _criticals(log, since, upto, below=floor.id if floor else None):
        if (test_id is None or entry.test_id == test_id) and not entry.expired(now) and match(
            entry
        ):
            older += 1
    criticals = critical_in_scan + older
    floor_id = floor.id if floor is not None else None
    if not overflow and criticals + len(normal) <= limit:
        return Plan(since, upto, retention_cut, floor_id, older > 0, 0, None)
    if criticals >= limit:
        # Critical events alone fill the replay: the newest of them, nothing else.
        return Plan(since, upto, True, None, True, criticals - limit, _NEVER)
    return Plan(since, upto, True, floor_id, older > 0, 0, normal[limit - criticals - 1])


async def pages(
    log: LogReads,
    p: Plan,
    match: Match,
    *,
    test_id: str | None = None,
    now: float | None = None,
    page: int = PAGE,
) -> AsyncIterator[list[StreamEntry]]:
    """The planned replay in id order, a page of at most ``page`` log entries at a time
    (a page may hold none)."""
    now = time.time() if now is None else now

    def keep(entry: StreamEntry) -> bool:
        if entry.expired(now) or not match(entry):
            return False
        if entry.priority == "critical":
            return True
        return p.min_normal is None or entry.key >= p.min_normal

    if p.entries is not None:
        for start in range(0, len(p.entries), page):
            yield [e for e in p.entries[start:start + page] if keep(e)]
        return
    skip = p.skip_critical
    if p.critical_below:
        kept: list[StreamEntry] = []
        async for entry in _criticals(log, p.since, p.upto, below=p.floor, page=page):
            if (test_id is not None and entry.test_id != test_id) or not keep(entry):
                continue
            if skip:
                skip -= 1
                continue
            kept.append(entry)
            if len(kept) == page:
                yield kept
                kept = []
        if kept:
            yield kept
        if p.floor is None:
            return
    after, inclusive = (p.floor, True) if p.floor is not None else (p.since, False)
    while True:
        rows = await log.read(after, count=page, upto=p.upto, test_id=test_id, inclusive=inclusive)
        if not rows:
            return
        yield [e for e in rows if keep(e)]
        if len(rows) < page:
            return
        after, inclusive = rows[-1].id, False


async def _criticals(
    log: LogReads, since: Offset, upto: Offset, *, below: Offset | None, page: int = PAGE
) -> AsyncIterator[StreamEntry]:
    """The critical stream's entries in (since, upto], or in (since, below) when given."""
    bound = parse_offset(below) if below is not None else None
    after = since
    while True:
        rows = await log.read(after, count=page, upto=upto, critical=True)
        for entry in rows:
            if bound is not None and entry.key >= bound:
                return
            yield entry
        if len(rows) < page:
            return
        after = rows[-1].id


async def collect(
    log: LogReads,
    since: Offset,
    upto: Offset,
    match: Match,
    *,
    limit: int,
    test_id: str | None = None,
    now: float | None = None,
) -> tuple[list[StreamEntry], bool]:
    """The whole replay at once (for tests and tools: a connection reads it page by page)."""
    p = await plan(log, since, upto, match, limit=limit, test_id=test_id, now=now)
    out: list[StreamEntry] = []
    async for page in pages(log, p, match, test_id=test_id, now=now):
        out += page
    return out, p.truncated
