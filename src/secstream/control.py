"""Control of running tests: the run record, the control stream, and the cancel request.

Key layout (``P`` is ``SECSTREAM_KEY_PREFIX``):

    P:run:<test_id>       hash: ``state`` (running/finished), ``status``, ``users`` (JSON list),
                          ``started_at``. Written by ``TestRun``; expires RUNNING_TTL seconds
                          after the owning publisher last refreshed it, FINISHED_TTL after the end
    P:control:<test_id>   stream of requests to the run (``action``, ``by``, ``reason``); only
                          publishers read it, never a client. Capped at CONTROL_MAXLEN entries,
                          and expires with the run record

A cancel goes: HTTP route -> ``RunRecords.lookup`` (404/409/403) -> ``request_cancel`` (XADD,
atomically only while the run is running) -> the ``ControlReader`` of the owning process (one
``XREAD BLOCK`` over every run it watches) -> ``TestRun``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Final, Literal

from redis.asyncio import Redis

from secstream.eventlog import _guarded
from secstream.types import Offset

RUNNING_TTL: Final = 120
"""Seconds a running record outlives its publisher's last refresh (a crashed process's runs
become unknown after this)."""
REFRESH_EVERY: Final = 30.0
FINISHED_TTL: Final = 86_400
"""Seconds a finished run is remembered: cancelling it meanwhile answers 409, not 404."""
CONTROL_MAXLEN: Final = 16
MAX_REASON_CHARS: Final = 500
MAX_TEST_ID_CHARS: Final = 256

RunState = Literal["running", "finished"]
CancelOutcome = Literal["requested", "unknown", "finished"]


@dataclasses.dataclass(frozen=True, slots=True)
class RunRecord:
    test_id: str
    state: RunState
    status: str
    users: frozenset[str]
    started_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class ControlRequest:
    id: Offset
    action: str
    by: str | None
    reason: str | None


# KEYS: run, control; ARGV: state running TTL users json, started_at
_START = """
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'running', 'status', 'running',
           'users', ARGV[2], 'started_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: run, control; ARGV: status, ttl
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'finished', 'status', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: run records; ARGV: ttl. Only running records: a finished one keeps its longer TTL.
_REFRESH = """
for _, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'state') == 'running' then redis.call('EXPIRE', key, ARGV[1]) end
end
return 1
"""

# KEYS: run, control; ARGV: maxlen, by, reason
# Returns {0} unknown, {1} finished, {2, id} requested.
_REQUEST = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0} end
if state ~= 'running' then return {1} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
                      'action', 'cancel', 'by', ARGV[2], 'reason', ARGV[3])
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return {2, id}
"""


class RunRecords:
    """The per-run record and control stream, as both sides (publisher, HTTP route) use them."""

    def __init__(self, redis: Redis, *, prefix: str = "secstream") -> None:
        self.redis = redis
        self.prefix = prefix
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)
        self._refresh = redis.register_script(_REFRESH)
        self._request = redis.register_script(_REQUEST)

    def run_key(self, test_id: str) -> str:
        return f"{self.prefix}:run:{test_id}"

    def control_key(self, test_id: str) -> str:
        return f"{self.prefix}:control:{test_id}"

    def _keys(self, test_id: str) -> list[str]:
        return [self.run_key(test_id), self.control_key(test_id)]

    @_guarded
    async def start(self, test_id: str, users: frozenset[str] | list[str]) -> None:
        """A new run: its record, and an empty control stream (an older run's requests go)."""
        await self._start(
            keys=self._keys(test_id),
            args=[RUNNING_TTL, json.dumps(sorted(users)), f"{time.time():.3f}"],
        )

    @_guarded
    async def refresh(self, test_ids: list[str]) -> None:
        """Keep the records of runs that are still going from expiring."""
        if not test_ids:
            return
        # One script call per key: the keys of one call may sit on different cluster slots.
        async with self.redis.pipeline(transaction=False) as pipe:
            for test_id in test_ids:
                await self._refresh(keys=[self.run_key(test_id)], args=[RUNNING_TTL], client=pipe)
            await pipe.execute()

    @_guarded
    async def finish(self, test_id: str, status: str) -> None:
        await self._finish(keys=self._keys(test_id), args=[status, FINISHED_TTL])

    @_guarded
    async def lookup(self, test_id: str) -> RunRecord | None:
        raw: dict[Any, Any] = await self.redis.hgetall(self.run_key(test_id))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "state" not in fields:
            return None
        try:
            users = json.loads(fields.get("users") or "[]")
            started = float(fields.get("started_at") or 0)
        except ValueError:
            users, started = [], 0.0
        state: RunState = "running" if fields["state"] == "running" else "finished"
        return RunRecord(
            test_id=test_id,
            state=state,
            status=fields.get("status", state),
            users=frozenset(u for u in users if isinstance(u, str)),
            started_at=started,
        )

    @_guarded
    async def request_cancel(
        self, test_id: str, *, by: str, reason: str | None
    ) -> tuple[CancelOutcome, Offset | None]:
        """Append a cancel request for a running test; what became of it, and its id."""
        reply: list[Any] = await self._request(
            keys=self._keys(test_id), args=[CONTROL_MAXLEN, by, reason or ""]
        )
        code = int(reply[0])
        if code == 0:
            return "unknown", None
        if code == 1:
            return "finished", None
        return "requested", _text(reply[1])

    async def read(
        self, positions: dict[str, Offset], *, block_ms: int
    ) -> list[tuple[str, ControlRequest]]:
        """Requests after each test's position, waiting up to ``block_ms`` for the first.

        Redis errors propagate as redis-py raised them (the reader backs off and retries).
        """
        streams: dict[Any, Any] = {self.control_key(t): pos for t, pos in positions.items()}
        reply: Any = await self.redis.xread(streams, block=block_ms, count=CONTROL_MAXLEN)
        out: list[tuple[str, ControlRequest]] = []
        cut = len(self.prefix) + len(":control:")
        for key, rows in reply or []:
            test_id = _text(key)[cut:]
            for raw_id, fields in rows:
                f = {_text(k): _text(v) for k, v in fields.items()}
                out.append(
                    (
                        test_id,
                        ControlRequest(
                            id=_text(raw_id),
                            action=f.get("action", ""),
                            by=f.get("by") or None,
                            reason=f.get("reason") or None,
                        ),
                    )
                )
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
