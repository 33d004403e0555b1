"""The durable event log on Redis Streams.

Key layout (``P`` is ``SECSTREAM_KEY_PREFIX``; see docs/architecture.md):

    P:log                  every event; the stream id is the event ``id``
    P:test:<test_id>       the ids of one test's entries (an index into P:log), for
                           late joiners; trimmed with the log (see trim)
    P:tests                test ids by their newest event's time, for the trim
    P:testcut:<test_id>    the newest id retention took from that test
    P:critical             the same entries of ``critical`` events, kept longer
    P:offset:<sub>:<cid>   the acknowledged offset of one durable client
    P:clients:<sub>        the client_ids of one sub with an offset, by last ack (us);
                           at most MAX_CLIENT_IDS, the oldest one's offset dropped
    P:idem:<n>:<sub>:<key> ids appended under an Idempotency-Key by one token ``sub``
                           (``n``: the length of ``sub``, so no two subs collide; 24 h)
    P:epoch                the id at which this incarnation of the log began
    P:trimmed              the newest id that retention removed from P:log

Entries are encoded and decoded by ``entries``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, ParamSpec, TypeVar, cast

import msgspec
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from secstream.entries import START, Encoded, StreamEntry, decode_entry, encode
from secstream.errors import LogUnavailable, NotReplicated
from secstream.protocol import PublishRequest, parse_offset
from secstream.types import Offset

IDEMPOTENCY_TTL: Final = 86_400
REPLICA_WAIT_MS: Final = 1000
"""How long a write waits for ``min_replicas`` replicas (Redis ``WAIT``) before failing."""
OFFSET_TTL: Final = 30 * 86_400
MAX_CLIENT_IDS: Final = 50
"""Stored offsets per token ``sub``: a new client_id past this drops the least recently acked."""
_SCAN_CHUNK: Final = 1000
_MSGPACK: Final = msgspec.msgpack.Encoder()
POLL_BUDGET: Final = 10_000
"""Log entries one poll examines at most, however selective its filter."""


@dataclasses.dataclass(frozen=True, slots=True)
class AppendOp:
    """What one publish appends: its encoded events, under its ``Idempotency-Key``."""

    events: list[Encoded]
    idempotency_key: str | None = None
    sub: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Appended:
    ids: list[Offset]
    seen: bool
    """The key was seen: ``ids`` are the first append's, nothing was appended now."""


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

# KEYS: log, critical, epoch, trimmed, tests (zset: test id -> newest ms), then the
#       idempotency keys of the ops that have one
# ARGV: idem_mode ('2': rewrite a key seen, so a WAIT after it covers the first append),
#       idem_ttl, maxlen, test_prefix, test_ttl, then the ops, MessagePack:
#       [[key index (into KEYS; 0: none), [[test_id, critical, [field, value, ...]], ...]], ...]
#       (one argument, packed in C, instead of ten per event that redis-py packs in Python)
# Returns per op {seen (0/1), the ids joined by ','}. Ops run in order: an op whose key an
# earlier op of the same call set gets that op's ids, as a later call would.
_APPEND = _LUA_IDS + """
ensure_epoch(KEYS[3])
local out = {}
for _, op in ipairs(cmsgpack.unpack(ARGV[6])) do
  local k, events = op[1], op[2]
  local prev = false
  if k > 0 then prev = redis.call('GET', KEYS[k]) end
  if prev then
    if ARGV[1] == '2' then redis.call('SET', KEYS[k], prev, 'KEEPTTL') end
    out[#out + 1] = 1
    out[#out + 1] = prev
  else
    local ids = {}
    for e, event in ipairs(events) do
      local test_id, critical, fields = event[1], event[2], event[3]
      local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
      if test_id ~= '' then
        local tk = ARGV[4] .. test_id
        redis.call('XADD', tk, id, 'i', '')
        redis.call('EXPIRE', tk, ARGV[5])
        redis.call('ZADD', KEYS[5], (idkey(id)), test_id)
      end
      if critical then redis.call('XADD', KEYS[2], id, unpack(fields)) end
      ids[e] = id
    end
    local joined = table.concat(ids, ',')
    if k > 0 then redis.call('SET', KEYS[k], joined, 'EX', ARGV[2]) end
    out[#out + 1] = 0
    out[#out + 1] = joined
  end
end
local maxlen = tonumber(ARGV[3])
local len = redis.call('XLEN', KEYS[1])
if len > maxlen + math.max(100, math.floor(maxlen / 100)) then
  local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - maxlen)
  local last = head[#head][1]
  redis.call('XTRIM', KEYS[1], 'MAXLEN', maxlen)
  if newer(last, redis.call('GET', KEYS[4])) then redis.call('SET', KEYS[4], last) end
end
return out
"""

# KEYS: idempotency key. A key seen is rewritten: the WAIT after it covers the first append.
_SEEN = """
local prev = redis.call('GET', KEYS[1])
if prev then redis.call('SET', KEYS[1], prev, 'KEEPTTL') end
return prev
"""

# KEYS: log, critical, trimmed, tests
# ARGV: min id to keep in log, in critical, test key prefix, test cut prefix, cut ttl
# Per-test indexes follow the log: a test whose newest event left the log goes whole;
# the others lose what is older than the log's oldest entry.
_TRIM = _LUA_IDS + """
local removed = 0
local last = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #last > 0 then
  removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
  if newer(last[1][1], redis.call('GET', KEYS[3])) then redis.call('SET', KEYS[3], last[1][1]) end
end
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local minid = ARGV[1]
if #first > 0 then minid = first[1][1] end
local cutoff = (idkey(minid))
for _, t in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. cutoff)) do
  local newest = redis.call('XREVRANGE', ARGV[3] .. t, '+', '-', 'COUNT', 1)
  if #newest > 0 then redis.call('SET', ARGV[4] .. t, newest[1][1], 'EX', ARGV[5]) end
  redis.call('DEL', ARGV[3] .. t)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. cutoff)
for _, t in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], cutoff, '+inf')) do
  local tk = ARGV[3] .. t
  local old = redis.call('XRANGE', tk, '-', '(' .. minid, 'COUNT', 1)
  if #old > 0 then
    local gone = redis.call('XREVRANGE', tk, '(' .. minid, '-', 'COUNT', 1)
    redis.call('XTRIM', tk, 'MINID', minid)
    redis.call('SET', ARGV[4] .. t, gone[1][1], 'EX', ARGV[5])
  end
end
return removed
"""

# KEYS: a test's index, log; ARGV: low, high (XRANGE bounds), count, reverse
# The log's entries that a test's index names, in order, skipping ones retention took.
_TEST_RANGE = """
local out = {}
local low, high, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local reverse = ARGV[4] == '1'
while #out < want do
  local n = want - #out
  local ids
  if reverse then
    ids = redis.call('XREVRANGE', KEYS[1], high, low, 'COUNT', n)
  else
    ids = redis.call('XRANGE', KEYS[1], low, high, 'COUNT', n)
  end
  for _, row in ipairs(ids) do
    local found = redis.call('XRANGE', KEYS[2], row[1], row[1])
    if #found > 0 then out[#out + 1] = found[1] end
  end
  if #ids < n then break end
  if reverse then high = '(' .. ids[#ids][1] else low = '(' .. ids[#ids][1] end
end
return out
"""

# KEYS: offset key, the sub's client set; ARGV: offset, ttl, client_id, cap, offset key prefix
_ACK = _LUA_IDS + """
local cur = redis.call('GET', KEYS[1])
if newer(ARGV[1], cur) then cur = ARGV[1] end
redis.call('SET', KEYS[1], cur, 'EX', ARGV[2])
local t = redis.call('TIME')
local score = tonumber(t[1]) * 1000000 + tonumber(t[2])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
redis.call('ZADD', KEYS[2], score, ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, over)) do
    if over > 0 and old ~= ARGV[3] then
      redis.call('ZREM', KEYS[2], old)
      redis.call('DEL', ARGV[5] .. old)
      over = over - 1
    end
  end
end
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


def _guarded(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
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
        max_client_ids: int = MAX_CLIENT_IDS,
        min_replicas: int = 0,
    ) -> None:
        self.redis = redis
        self.max_client_ids = max_client_ids
        self.min_replicas = min_replicas
        self.prefix = prefix
        self.maxlen = maxlen
        self.retention_seconds = retention_seconds
        self.critical_retention_seconds = critical_retention_seconds
        self.log_key = f"{prefix}:log"
        self.critical_key = f"{prefix}:critical"
        self.epoch_key = f"{prefix}:epoch"
        self.trimmed_key = f"{prefix}:trimmed"
        self.tests_key = f"{prefix}:tests"
        self._append = redis.register_script(_APPEND)
        self._trim = redis.register_script(_TRIM)
        self._ack = redis.register_script(_ACK)
        self._test_range = redis.register_script(_TEST_RANGE)
        self._state = redis.register_script(_STATE)
        self._seen = redis.register_script(_SEEN)

    def test_key(self, test_id: str) -> str:
        return f"{self.prefix}:test:{test_id}"

    def offset_key(self, sub: str, client_id: str) -> str:
        return f"{self.prefix}:offset:{sub}:{client_id}"

    def clients_key(self, sub: str) -> str:
        return f"{self.prefix}:clients:{sub}"

    def idempotency_key(self, sub: str, key: str) -> str:
        """One namespace per ``sub``; the length keeps ``a:b``+``c`` apart from ``a``+``b:c``."""
        return f"{self.prefix}:idem:{len(sub)}:{sub}:{key}"

    # -- writing ---------------------------------------------------------------

    @_guarded
    async def append(
        self,
        events: Sequence[PublishRequest],
        *,
        idempotency_key: str | None = None,
        sub: str = "",
        traceparent: str | None = None,
    ) -> list[Offset]:
        """Append all of ``events`` atomically; the ids in order.

        Under an ``idempotency_key`` seen from the same ``sub`` in the last 24 h, append
        nothing and return the ids of that first append.
        """
        now = time.time()
        op = AppendOp([encode(e, now, traceparent) for e in events], idempotency_key, sub)
        (done,) = await self.append_many([op])
        return done.ids

    @_guarded
    async def append_many(self, ops: Sequence[AppendOp]) -> list[Appended]:
        """Run ``ops`` in order in one script call (one round trip, and one ``WAIT`` with
        ``min_replicas``); each op's events are appended together, or not at all when its
        key was seen. Raises for all of them, or answers for all of them."""
        keys: list[str] = [
            self.log_key,
            self.critical_key,
            self.epoch_key,
            self.trimmed_key,
            self.tests_key,
        ]
        packed: list[Any] = []
        for op in ops:
            if op.idempotency_key is None:
                index = 0
            else:
                keys.append(self.idempotency_key(op.sub, op.idempotency_key))
                index = len(keys)
            packed.append((index, [(e.test_id, e.critical, e.fields) for e in op.events]))
        argv: list[Any] = [
            "2" if self.min_replicas else "1",
            IDEMPOTENCY_TTL,
            self.maxlen,
            f"{self.prefix}:test:",
            self.retention_seconds,
            _MSGPACK.encode(packed),
        ]
        if not self.min_replicas:
            reply = await self._append(keys=keys, args=argv)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:  # WAIT: same connection
                await self._append(keys=keys, args=argv, client=pipe)
                (reply,) = await self._replicated(pipe)
        return [
            Appended(_text(joined).split(","), bool(int(seen)))
            for seen, joined in zip(reply[::2], reply[1::2], strict=True)
        ]

    async def _replicated(
        self, pipe: Pipeline, confirm: Callable[[list[Any]], bool] = lambda _: True
    ) -> list[Any]:
        """Run ``pipe`` with a ``WAIT`` after it; its replies but WAIT's.

        Raises NotReplicated when fewer than ``min_replicas`` replicas confirmed in time
        and ``confirm(replies)`` says that there was something to confirm.
        """
        pipe.execute_command("WAIT", self.min_replicas, REPLICA_WAIT_MS)
        *replies, confirmed = await pipe.execute()
        if int(confirmed) < self.min_replicas and confirm(replies):
            raise NotReplicated(self.min_replicas, int(confirmed))
        return replies

    @_guarded
    async def idempotent_ids(self, idempotency_key: str, sub: str = "") -> list[Offset] | None:
        """The ids ``sub`` first appended under this key in the last 24 h, if any."""
        key = self.idempotency_key(sub, idempotency_key)
        raw = await self.redis.get(key)
        if raw is not None and self.min_replicas:
            # Seen: confirm that replicas hold it (a publish answered 503 may come back).
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._seen(keys=[key], client=pipe)
                (raw,) = await self._replicated(pipe, confirm=lambda r: r[0] is not None)
        return _text(raw).split(",") if raw is not None else None

    @_guarded
    async def trim(self, now: float | None = None) -> int:
        """Apply retention by age; returns how many entries left the log."""
        now = time.time() if now is None else now
        keep_from = f"{int((now - self.retention_seconds) * 1000)}-0"
        critical_from = f"{int((now - self.critical_retention_seconds) * 1000)}-0"
        removed = await self._trim(
            keys=[
                self.log_key,
                self.critical_key,
                self.trimmed_key,
                self.tests_key,
            ],
            args=[
                keep_from,
                critical_from,
                f"{self.prefix}:test:",
                f"{self.prefix}:testcut:",
                self.retention_seconds,
            ],
        )
        return int(removed)

    # -- offsets ---------------------------------------------------------------

    @_guarded
    async def stored_offset(self, sub: str, client_id: str) -> Offset | None:
        raw = await self.redis.get(self.offset_key(sub, client_id))
        return _text(raw) if raw is not None else None

    @_guarded
    async def store_offsets(self, offsets: Iterable[tuple[str, str, Offset]]) -> list[Offset]:
        """Store max(stored, offset) for each (sub, client_id, offset), in one round trip;
        the stored values, in order.

        Each ``sub`` keeps offsets for its ``max_client_ids`` most recently acked client_ids.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for sub, client_id, offset in offsets:
                await self._ack(
                    keys=[self.offset_key(sub, client_id), self.clients_key(sub)],
                    args=[
                        offset,
                        OFFSET_TTL,
                        client_id,
                        self.max_client_ids,
                        self.offset_key(sub, ""),
                    ],
                    client=pipe,
                )
            stored = await pipe.execute()
        return [_text(value) for value in stored]

    # -- reading ---------------------------------------------------------------

    @_guarded
    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    @_guarded
    async def last_id(self) -> Offset:
        newest = _rows(await self.redis.xrevrange(self.log_key, "+", "-", count=1))
        return _text(newest[0][0]) if newest else START

    async def _lost_or_trimmed(self, since: Offset, test_id: str | None) -> bool:
        epoch, trimmed = await self._state(keys=[self.epoch_key, self.trimmed_key])
        key = parse_offset(since)
        if key != (0, 0) and key < parse_offset(_text(epoch)):
            return True
        if trimmed is None or key >= parse_offset(_text(trimmed)):
            return False
        if test_id is None:
            return True
        # One test: retention took some of its entries after `since` (the trim job
        # noted the newest it removed), or its index still names some the log lost.
        index = self.test_key(test_id)
        cut = await self.redis.get(f"{self.prefix}:testcut:{test_id}")
        if cut is not None and key < parse_offset(_text(cut)):
            return True
        low = "-" if key == (0, 0) else f"({since}"
        return bool(await self.redis.xrange(index, low, _text(trimmed), count=1))

    @_guarded
    async def truncated_after(self, since: Offset, test_id: str | None = None) -> bool:
        return await self._lost_or_trimmed(since, test_id)

    def _source(self, test_id: str | None, critical: bool) -> str:
        if critical:
            return self.critical_key
        return self.test_key(test_id) if test_id else self.log_key

    @_guarded
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
        if after in ("0", START) and not inclusive:
            low = "-"
        else:
            low = after if inclusive else f"({after}"
        if test_id and not critical:
            return await self._read_test(test_id, low, upto or "+", count, reverse=False)
        rows = _rows(
            await self.redis.xrange(
                self._source(test_id, critical), low, upto or "+", count=count
            )
        )
        return [decode_entry(raw_id, fields) for raw_id, fields in rows]

    async def _read_test(
        self, test_id: str, low: str, high: str, count: int, *, reverse: bool
    ) -> list[StreamEntry]:
        reply = await self._test_range(
            keys=[self.test_key(test_id), self.log_key],
            args=[low, high, count, "1" if reverse else "0"],
        )
        return [decode_entry(raw_id, _pairs(fields)) for raw_id, fields in reply]

    @_guarded
    async def read_back(
        self,
        upto: Offset,
        *,
        after: Offset,
        count: int,
        test_id: str | None = None,
        critical: bool = False,
    ) -> list[StreamEntry]:
        low = "-" if after in ("0", START) else f"({after}"
        if test_id and not critical:
            return await self._read_test(test_id, low, upto, count, reverse=True)
        rows = _rows(
            await self.redis.xrevrange(self._source(test_id, critical), upto, low, count=count)
        )
        return [decode_entry(raw_id, fields) for raw_id, fields in rows]

    @_guarded
    async def read_page(
        self,
        since: Offset,
        match: Callable[[StreamEntry], bool],
        *,
        limit: int,
        test_id: str | None = None,
        budget: int = POLL_BUDGET,
        now: float | None = None,
    ) -> Page:
        """Matching events after ``since`` in id order, for polling: at most ``limit``,
        examining at most ``budget`` entries; ``next`` is past what was examined."""
        now = time.time() if now is None else now
        truncated = await self._lost_or_trimmed(since, test_id)
        out: list[StreamEntry] = []
        cursor = since
        examined = 0
        while examined < budget:
            chunk = min(_SCAN_CHUNK, budget - examined)
            rows = await self.read(cursor, count=chunk, test_id=test_id)
            examined += len(rows)
            for entry in rows:
                cursor = entry.id
                if not entry.expired(now) and match(entry):
                    out.append(entry)
                    if len(out) == limit:
                        return Page(out, cursor, truncated)
            if len(rows) < chunk:
                break
        return Page(out, cursor if cursor != "0" else START, truncated)

    @_guarded
    async def tail(self, after: Offset, *, block_ms: int, count: int = 1000) -> list[StreamEntry]:
        """Entries after ``after``, waiting up to ``block_ms`` for the first."""
        reply: Any = await self.redis.xread({self.log_key: after}, block=block_ms, count=count)
        if not reply:
            return []
        rows = _rows(reply[0][1])
        return [decode_entry(raw_id, fields) for raw_id, fields in rows]


def _rows(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(list[tuple[bytes, dict[bytes, bytes]]], reply or [])


def _pairs(fields: Any) -> dict[bytes, bytes]:
    """A stream entry's fields as a script returns them (a flat list) or as a dict."""
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
