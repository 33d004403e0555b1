"""The durable event log on Redis Streams.

Key layout (``P`` is ``SECSTREAM_KEY_PREFIX``; see docs/architecture.md):

    P:log                  every event; the stream id is the event ``id``
    P:test:<test_id>       the same entries (same ids) of one test, for late joiners
    P:critical             the same entries of ``critical`` events, kept longer
    P:offset:<sub>:<cid>   the acknowledged offset of one durable client
    P:idem:<key>           ids appended under an Idempotency-Key (24 h)
    P:epoch                the id at which this incarnation of the log began
    P:trimmed              the newest id that retention removed from P:log

Entries are encoded and decoded by ``entries``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, ParamSpec, TypeVar, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from secstream.entries import START, StreamEntry, decode_entry, encode
from secstream.errors import LogUnavailable
from secstream.protocol import PublishRequest, parse_offset
from secstream.types import Offset

IDEMPOTENCY_TTL: Final = 86_400
OFFSET_TTL: Final = 30 * 86_400
_SCAN_CHUNK: Final = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Replay:
    entries: list[StreamEntry]
    truncated: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    entries: list[StreamEntry]
    next: Offset
    truncated: bool


# -- scripts -----------------------------------------------------------------

_LUA_IDS = """
local function idkey(s)
  local ms, seq = string.match(s, '^(%d+)-?(%d*)$')
  if not ms then return 0, 0 end
  if seq == '' then seq = '0' end
  return tonumber(ms), tonumber(seq)
end
local function newer(a, b)
  if not b then return true end
  local am, as = idkey(a)
  local bm, bs = idkey(b)
  return am > bm or (am == bm and as > bs)
end
local function ensure_epoch(key)
  local epoch = redis.call('GET', key)
  if epoch then return epoch end
  local t = redis.call('TIME')
  epoch = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000)) .. '-0'
  redis.call('SET', key, epoch)
  return epoch
end
"""

# KEYS: log, critical, idempotency key, epoch, trimmed
# ARGV: use_idem, idem_ttl, maxlen, test_prefix, test_ttl, n, then per event:
#       test_id, critical, nfields, field, value, ...
_APPEND = _LUA_IDS + """
if ARGV[1] == '1' then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {0, prev} end
end
ensure_epoch(KEYS[4])
local ids = {}
local i = 7
for n = 1, tonumber(ARGV[6]) do
  local test_id, critical, nf = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local fields = {}
  for j = 1, nf do fields[j] = ARGV[i + 2 + j] end
  i = i + 3 + nf
  local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
  if test_id ~= '' then
    local tk = ARGV[4] .. test_id
    redis.call('XADD', tk, id, unpack(fields))
    redis.call('EXPIRE', tk, ARGV[5])
  end
  if critical == '1' then redis.call('XADD', KEYS[2], id, unpack(fields)) end
  ids[n] = id
end
local maxlen = tonumber(ARGV[3])
local len = redis.call('XLEN', KEYS[1])
if len > maxlen + math.max(100, math.floor(maxlen / 100)) then
  local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - maxlen)
  local last = head[#head][1]
  redis.call('XTRIM', KEYS[1], 'MAXLEN', maxlen)
  if newer(last, redis.call('GET', KEYS[5])) then redis.call('SET', KEYS[5], last) end
end
local joined = table.concat(ids, ',')
if ARGV[1] == '1' then redis.call('SET', KEYS[3], joined, 'EX', ARGV[2]) end
return {1, joined}
"""

# KEYS: log, critical, trimmed; ARGV: min id to keep in log, in critical
_TRIM = _LUA_IDS + """
local removed = 0
local last = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #last > 0 then
  removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
  if newer(last[1][1], redis.call('GET', KEYS[3])) then redis.call('SET', KEYS[3], last[1][1]) end
end
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
return removed
"""

# KEYS: offset key; ARGV: offset, ttl
_ACK = _LUA_IDS + """
local cur = redis.call('GET', KEYS[1])
if newer(ARGV[1], cur) then cur = ARGV[1] end
redis.call('SET', KEYS[1], cur, 'EX', ARGV[2])
return cur
"""

# KEYS: epoch, trimmed
_STATE = _LUA_IDS + """
return {ensure_epoch(KEYS[1]), redis.call('GET', KEYS[2]) or false}
"""


P = ParamSpec("P")
R = TypeVar("R")
_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    OSError,
)


def _guarded(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Redis not answering becomes LogUnavailable, one exception for callers to handle."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc

    return wrapper


class RedisEventLog:
    """Append, read and trim the log; store per-client offsets."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "secstream",
        maxlen: int = 1_000_000,
        retention_seconds: int = 86_400,
        critical_retention_seconds: int = 604_800,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.maxlen = maxlen
        self.retention_seconds = retention_seconds
        self.critical_retention_seconds = critical_retention_seconds
        self.log_key = f"{prefix}:log"
        self.critical_key = f"{prefix}:critical"
        self.epoch_key = f"{prefix}:epoch"
        self.trimmed_key = f"{prefix}:trimmed"
        self._append = redis.register_script(_APPEND)
        self._trim = redis.register_script(_TRIM)
        self._ack = redis.register_script(_ACK)
        self._state = redis.register_script(_STATE)

    def test_key(self, test_id: str) -> str:
        return f"{self.prefix}:test:{test_id}"

    def offset_key(self, sub: str, client_id: str) -> str:
        return f"{self.prefix}:offset:{sub}:{client_id}"

    # -- writing ---------------------------------------------------------------

    @_guarded
    async def append(
        self,
        events: Sequence[PublishRequest],
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> list[Offset]:
        """Append all of ``events`` atomically; the ids in order.

        Under an ``idempotency_key`` seen in the last 24 h, append nothing and
        return the ids of that first append.
        """
        now = time.time()
        encoded = [encode(e, now, traceparent) for e in events]
        argv: list[Any] = [
            "1" if idempotency_key else "0",
            IDEMPOTENCY_TTL,
            self.maxlen,
            f"{self.prefix}:test:",
            max(self.retention_seconds, self.critical_retention_seconds),
            len(encoded),
        ]
        for enc in encoded:
            argv += [enc.test_id, "1" if enc.critical else "0", len(enc.fields), *enc.fields]
        keys = [
            self.log_key,
            self.critical_key,
            f"{self.prefix}:idem:{idempotency_key or ''}",
            self.epoch_key,
            self.trimmed_key,
        ]
        _, joined = await self._append(keys=keys, args=argv)
        return _text(joined).split(",")

    @_guarded
    async def idempotent_ids(self, idempotency_key: str) -> list[Offset] | None:
        """The ids first appended under this key in the last 24 h, if any."""
        raw = await self.redis.get(f"{self.prefix}:idem:{idempotency_key}")
        return _text(raw).split(",") if raw is not None else None

    @_guarded
    async def trim(self, now: float | None = None) -> int:
        """Apply retention by age; returns how many entries left the log."""
        now = time.time() if now is None else now
        keep_from = f"{int((now - self.retention_seconds) * 1000)}-0"
        critical_from = f"{int((now - self.critical_retention_seconds) * 1000)}-0"
        removed = await self._trim(
            keys=[self.log_key, self.critical_key, self.trimmed_key],
            args=[keep_from, critical_from],
        )
        return int(removed)

    # -- offsets ---------------------------------------------------------------

    @_guarded
    async def stored_offset(self, sub: str, client_id: str) -> Offset | None:
        raw = await self.redis.get(self.offset_key(sub, client_id))
        return _text(raw) if raw is not None else None

    @_guarded
    async def store_offsets(self, offsets: Iterable[tuple[str, str, Offset]]) -> None:
        """Store max(stored, offset) for each (sub, client_id, offset), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for sub, client_id, offset in offsets:
                await self._ack(
                    keys=[self.offset_key(sub, client_id)], args=[offset, OFFSET_TTL], client=pipe
                )
            await pipe.execute()

    # -- reading ---------------------------------------------------------------

    @_guarded
    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    @_guarded
    async def last_id(self) -> Offset:
        newest = _rows(await self.redis.xrevrange(self.log_key, "+", "-", count=1))
        return _text(newest[0][0]) if newest else START

    async def _lost_or_trimmed(self, since: Offset, source: str) -> bool:
        epoch, trimmed = await self._state(keys=[self.epoch_key, self.trimmed_key])
        key = parse_offset(since)
        if key != (0, 0) and key < parse_offset(_text(epoch)):
            return True
        if trimmed is None or key >= parse_offset(_text(trimmed)):
            return False
        return source == self.log_key or not await self.redis.exists(source)

    @_guarded
    async def read_page(
        self,
        since: Offset,
        match: Callable[[StreamEntry], bool],
        *,
        limit: int,
        test_id: str | None = None,
        now: float | None = None,
    ) -> Page:
        """Matching events after ``since`` in id order, for polling."""
        now = time.time() if now is None else now
        source = self.test_key(test_id) if test_id else self.log_key
        truncated = await self._lost_or_trimmed(since, source)
        out: list[StreamEntry] = []
        cursor = since
        while len(out) < limit:
            start = "-" if cursor in ("0", START) else f"({cursor}"
            rows = _rows(await self.redis.xrange(source, start, "+", count=_SCAN_CHUNK))
            for raw_id, fields in rows:
                entry = decode_entry(raw_id, fields)
                cursor = entry.id
                if not entry.expired(now) and match(entry):
                    out.append(entry)
                    if len(out) == limit:
                        break
            if len(rows) < _SCAN_CHUNK:
                break
        return Page(out, cursor if cursor != "0" else START, truncated)

    @_guarded
    async def replay(
        self,
        since: Offset,
        upto: Offset,
        match: Callable[[StreamEntry], bool],
        *,
        limit: int,
        test_id: str | None = None,
        now: float | None = None,
    ) -> Replay:
        """Matching events in (since, upto], oldest first, at most ``limit``.

        When more match, the newest are kept, and every ``critical`` one (the
        newest ``critical`` ones when they alone exceed the limit); the replay
        is then ``truncated``, as it is when matching events after ``since`` may
        have left the log.
        """
        now = time.time() if now is None else now
        if parse_offset(upto) <= parse_offset(since):
            return Replay([], await self._lost_or_trimmed(since, self.log_key))
        source = self.test_key(test_id) if test_id else self.log_key
        truncated = await self._lost_or_trimmed(since, source)
        low = "-" if since == "0" else f"({since}"
        newest_first: list[StreamEntry] = []
        overflow = False
        end = upto
        oldest_scanned: Offset | None = None
        while not overflow:
            rows = _rows(await self.redis.xrevrange(source, end, low, count=_SCAN_CHUNK))
            for raw_id, fields in rows:
                entry = decode_entry(raw_id, fields)
                oldest_scanned = entry.id
                if entry.expired(now) or not match(entry):
                    continue
                if len(newest_first) == limit:
                    overflow = True
                    break
                newest_first.append(entry)
            if len(rows) < _SCAN_CHUNK:
                break
            end = f"({oldest_scanned}"
        if not overflow and not truncated:
            return Replay(newest_first[::-1], False)
        # Critical events outlive the log's retention: merge those in.
        # Nothing left in the range: every retained critical one up to ``upto`` counts.
        floor = parse_offset(oldest_scanned) if oldest_scanned else (2**63, 0)
        critical = [
            e
            for e in await self._critical(since, upto, test_id, now, match)
            if overflow or parse_offset(e.id) < floor
        ]
        merged = {e.id: e for e in [*critical, *newest_first]}
        return Replay(_keep_newest(sorted(merged.values(), key=lambda e: e.key), limit), True)

    async def _critical(
        self,
        since: Offset,
        upto: Offset,
        test_id: str | None,
        now: float,
        match: Callable[[StreamEntry], bool],
    ) -> list[StreamEntry]:
        low = "-" if since == "0" else f"({since}"
        rows = _rows(await self.redis.xrange(self.critical_key, low, upto))
        entries = (decode_entry(raw_id, fields) for raw_id, fields in rows)
        return [
            e
            for e in entries
            if not e.expired(now) and (test_id is None or e.test_id == test_id) and match(e)
        ]

    @_guarded
    async def tail(self, after: Offset, *, block_ms: int, count: int = 1000) -> list[StreamEntry]:
        """Entries after ``after``, waiting up to ``block_ms`` for the first."""
        reply: Any = await self.redis.xread({self.log_key: after}, block=block_ms, count=count)
        if not reply:
            return []
        rows = _rows(reply[0][1])
        return [decode_entry(raw_id, fields) for raw_id, fields in rows]


def _keep_newest(entries: list[StreamEntry], limit: int) -> list[StreamEntry]:
    """The newest ``limit`` of ``entries`` (in id order), keeping every critical one."""
    if len(entries) <= limit:
        return entries
    critical = [e for e in entries if e.priority == "critical"]
    if len(critical) >= limit:
        return critical[-limit:]
    room = limit - len(critical)
    rest = [e for e in entries if e.priority != "critical"][-room:]
    return sorted([*critical, *rest], key=lambda e: e.key)


def _rows(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(list[tuple[bytes, dict[bytes, bytes]]], reply or [])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
