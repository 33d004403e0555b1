"""The audit trail (contract section 8): who was allowed or refused what, and why.

``Audit.record`` is synchronous and cheap: it writes the record's line on the
``secstream.audit`` logger at once and queues the record; a background task
writes the queue to the Redis stream ``P:audit`` in batches (one script call per
``FLUSH_CHUNK`` records, the records packed in one MessagePack argument), trimming
records older than the retention by ``MINID``. Nothing here
runs per delivery. The stream id is the record's ``id``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, Protocol

import msgspec
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from secstream.entries import now_iso
from secstream.errors import WS_4001_TOKEN_EXPIRED
from secstream.protocol import is_offset

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("secstream.audit")

Outcome = Literal["allowed", "denied"]
ACTIONS: Final = frozenset(
    {
        "ws.connect",
        "ws.close",
        "token.refresh",
        "token.expired",
        "subscribe.forbidden",
        "publish",
        "poll.forbidden",
        "admin.connections",
        "admin.close",
        "admin.audit",
        "dev.token",
    }
)
MAX_PENDING: Final = 10_000
"""Records held while Redis is away; past it the oldest are dropped (and counted)."""
FLUSH_CHUNK: Final = 500
"""Records per script call: a call blocks Redis for about a millisecond at most."""
MAX_QUERY_LIMIT: Final = 1000
_SCAN_CHUNK: Final = 500
_SCAN_MAX: Final = 20_000
"""A query examines at most this many records, then answers with what it found."""
_MAX_FIELD: Final = 256

# KEYS: the audit stream; ARGV: the min id to keep, the records (MessagePack array of text)
_WRITE = """
for _, record in ipairs(cmsgpack.unpack(ARGV[2])) do
  redis.call('XADD', KEYS[1], '*', 'r', record)
end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
"""
_MSGPACK: Final = msgspec.msgpack.Encoder()
_JSON: Final = msgspec.json.Encoder()

UNAVAILABLE: Final = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


def token_kid(token: str | None) -> str | None:
    """The ``kid`` of a JWT's (unverified) header: which key it names, never a secret."""
    if not token or token.count(".") < 2:
        return None
    head = token.split(".", 1)[0][:1024]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid[:_MAX_FIELD] if isinstance(kid, str) else None


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return value[:_MAX_FIELD]
    if isinstance(value, list):
        return [_clip(v) for v in value[:1000]]
    return value


class Audit:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        node: str,
        retention_seconds: int,
        flush_interval: float = 0.25,
    ) -> None:
        self.redis = redis
        self.key = f"{prefix}:audit"
        self.node = node
        self.retention_seconds = retention_seconds
        self.flush_interval = flush_interval
        self.dropped = 0
        self._pending: deque[str] = deque()
        self._write = redis.register_script(_WRITE)
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()

    def record(
        self,
        action: str,
        outcome: Outcome,
        *,
        sub: str | None = None,
        address: str | None = None,
        reason: str | None = None,
        **about: Any,
    ) -> dict[str, Any]:
        """Log the record now and queue it for Redis; the record (without its id)."""
        if action not in ACTIONS:
            raise RuntimeError(f"unknown audit action {action!r}")
        record: dict[str, Any] = {
            "time": now_iso(),
            "action": action,
            "outcome": outcome,
            "sub": _clip(sub),
            "address": address,
            "node": self.node,
            "reason": _clip(reason),
        }
        for key, value in about.items():
            if value is not None:
                record[key] = _clip(value)
        level = logging.INFO if outcome == "allowed" else logging.WARNING
        audit_logger.log(level, "%s %s", action, outcome, extra={"audit": record})
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(_JSON.encode(record).decode())
        if len(self._pending) >= 500:
            self._wake.set()
        return record

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write what is queued; how many records were written.

        Raises redis errors; the records stay queued then.
        """
        async with self._flushing:  # one flush at a time, or a batch is written twice
            return await self._flush()

    async def _flush(self) -> int:
        written = 0
        while self._pending:
            batch = list(itertools.islice(self._pending, FLUSH_CHUNK))
            min_id = f"{int((time.time() - self.retention_seconds) * 1000)}-0"
            await self._write(
                keys=[self.key], args=[min_id, _MSGPACK.encode(batch)], client=self.redis
            )
            for _ in batch:
                self._pending.popleft()
            written += len(batch)
        return written

    async def run(self) -> None:
        """Flush every ``flush_interval`` (sooner when 500 are queued) until cancelled."""
        delay = self.flush_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            try:
                await self.flush()
                delay = self.flush_interval
            except UNAVAILABLE:
                delay = min(max(delay * 2, 0.5), 5.0)
                logger.warning("audit records held: Redis unavailable", extra={
                    "pending": len(self._pending), "dropped": self.dropped})
            except Exception:
                delay = 5.0
                logger.exception("audit flush failed")

    async def close(self) -> None:
        """A last flush, if Redis answers."""
        with contextlib.suppress(*UNAVAILABLE, TimeoutError):
            await asyncio.wait_for(self.flush(), 2)

    async def query(
        self,
        *,
        since: str | None = None,
        limit: int = 100,
        actions: Iterable[str] = (),
        sub: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Records after ``since`` (oldest first) that match; and ``next`` to pass as since.

        ``next`` is the last returned record's id; with none (the scan examines at most
        ``_SCAN_MAX``), the last examined id, so the next page goes on from there.
        """
        if since is not None and not is_offset(since):
            raise ValueError("since must be an audit record id")
        if not 0 < limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit is 1 to {MAX_QUERY_LIMIT}")
        wanted = frozenset(actions)
        start = "-" if since in (None, "0") else f"({since}"
        records: list[dict[str, Any]] = []
        last: str | None = since
        examined = 0
        while len(records) < limit and examined < _SCAN_MAX:
            rows = await self.redis.xrange(self.key, start, "+", count=_SCAN_CHUNK)
            if not rows:
                break
            for raw_id, fields in rows:
                rid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                examined += 1
                last = rid
                record = _decode(rid, fields)
                if record is None or (wanted and record["action"] not in wanted):
                    continue
                if sub is not None and record.get("sub") != sub:
                    continue
                records.append(record)
                if len(records) == limit:
                    break
            start = f"({last}"
            if len(rows) < _SCAN_CHUNK:
                break
        return records, (records[-1]["id"] if records else last)


class _Closed(Protocol):
    id: str
    close_code: int
    client_id: str | None

    @property
    def principal(self) -> _Sub: ...


class _Sub(Protocol):
    @property
    def sub(self) -> str: ...


def audit_close(audit: Audit, conn: _Closed, address: str | None) -> None:
    """``ws.close`` with its code; a 4001 close is a ``token.expired`` too."""
    sub, code = conn.principal.sub, conn.close_code
    if code == WS_4001_TOKEN_EXPIRED:
        audit.record(
            "token.expired", "denied", sub=sub, address=address, reason="no valid refresh in time",
            connection_id=conn.id,
        )
    audit.record(
        "ws.close", "allowed", sub=sub, address=address, connection_id=conn.id, code=code,
        client_id=conn.client_id,
    )


def _decode(rid: str, fields: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    if not fields:
        return None
    raw = fields.get(b"r") or fields.get("r")
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return {"id": rid, **record}
