"""One event as it is stored and as it is sent.

An event is validated and encoded once, at publish: a few routing fields and
``b``, the envelope without its ``type`` and ``id``. A reader splices those in
once per process (``decode_entry``), so every connection gets the same
ready-made frame text.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from secstream.errors import EventInvalid
from secstream.events import EVENT_TYPES, TEST_EVENT_TYPES
from secstream.protocol import PublishRequest, parse_offset
from secstream.types import Offset

MAX_TTL_SECONDS: Final = 365 * 86400
START: Final[Offset] = "0-0"
"""The offset before every event."""


class _Body(msgspec.Struct, omit_defaults=False):
    event_type: str
    timestamp: str
    priority: str
    data: dict[str, Any]
    user_id: str | None
    correlation_id: str | None


class _TracedBody(_Body):
    traceparent: str


_BODY_ENCODER = msgspec.json.Encoder()
_AUDIENCE_DECODER = msgspec.json.Decoder(dict[str, list[str]])


@dataclasses.dataclass(frozen=True, slots=True)
class Audience:
    users: frozenset[str]
    groups: frozenset[str]
    roles: frozenset[str]

    def admits(self, sub: str, groups: frozenset[str], roles: frozenset[str]) -> bool:
        return sub in self.users or not self.groups.isdisjoint(groups) or not (
            self.roles.isdisjoint(roles)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEntry:
    """One event as read back from the log, with its frame text ready to send."""

    id: Offset
    event_type: str
    priority: str
    test_id: str | None
    expires_at: float | None
    audience: Audience | None
    frame: str
    traceparent: str | None = None
    """The W3C trace context of the publish span (contract section 8)."""

    @property
    def key(self) -> tuple[int, int]:
        return parse_offset(self.id)

    @property
    def published_at(self) -> float:
        return int(self.id.partition("-")[0]) / 1000

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def validate(req: PublishRequest, prefix: str = "") -> None:
    """Raise EventInvalid naming the field when a publish body breaks the contract."""
    if req.event_type not in EVENT_TYPES:
        raise EventInvalid(f"{prefix}event_type", f"unknown event type {req.event_type!r}")
    test_id = req.data.get("test_id")
    if req.event_type in TEST_EVENT_TYPES and (not isinstance(test_id, str) or not test_id):
        raise EventInvalid(f"{prefix}data.test_id", "test events need a non-empty string")
    if test_id is not None and not isinstance(test_id, str):
        raise EventInvalid(f"{prefix}data.test_id", "must be a string")
    if req.event_type == "user.notification" and (req.audience is None or not req.audience.users):
        raise EventInvalid(f"{prefix}audience.users", "user.notification needs audience.users")
    if req.ttl is not None and not 0 < req.ttl <= MAX_TTL_SECONDS:
        raise EventInvalid(f"{prefix}ttl", f"must be 0 to {MAX_TTL_SECONDS} seconds (a year)")


_last_iso: tuple[int, str] = (-1, "")


def now_iso(now: float | None = None) -> str:
    """``now`` (default: the time) in ISO 8601 with milliseconds, UTC (``...Z``); the last
    millisecond's text is kept, as publishes and their audit records ask many times a ms."""
    global _last_iso
    now = time.time() if now is None else now
    ms = int(now * 1000)
    if _last_iso[0] == ms:
        return _last_iso[1]
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _last_iso = (ms, text)
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class Encoded:
    fields: list[str]
    """Text only: the append script reads them as MessagePack strings (Redis 6's Lua
    MessagePack has no binary type)."""
    test_id: str
    critical: bool


def encode(
    req: PublishRequest, now: float | None = None, traceparent: str | None = None
) -> Encoded:
    """The stream fields of one validated event: encoded once, here.

    ``traceparent`` (the publish span's) goes into the envelope and into field ``tp``.
    """
    now = time.time() if now is None else now
    common: dict[str, Any] = {
        "event_type": req.event_type,
        "timestamp": now_iso(now),
        "priority": req.priority,
        "data": req.data,
        "user_id": req.user_id,
        "correlation_id": req.correlation_id,
    }
    body = _BODY_ENCODER.encode(
        _TracedBody(**common, traceparent=traceparent) if traceparent else _Body(**common)
    ).decode()
    test_id = req.data.get("test_id")
    test_id = test_id if isinstance(test_id, str) else ""
    fields = ["t", req.event_type, "p", req.priority, "b", body]
    if test_id:
        fields += ["k", test_id]
    if req.ttl is not None:
        fields += ["x", str(int((now + req.ttl) * 1000))]
    if traceparent:
        fields += ["tp", traceparent]
    if req.audience is not None:
        aud = req.audience
        audience = {"u": aud.users, "g": aud.groups, "r": aud.roles}
        fields += ["a", msgspec.json.encode(audience).decode()]
    return Encoded(fields=fields, test_id=test_id, critical=req.priority == "critical")


def decode_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> StreamEntry:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    body = fields[b"b"].decode()
    frame = '{"type":"event","id":"' + eid + '",' + body[1:]
    raw_aud = fields.get(b"a")
    audience = None
    if raw_aud:
        parsed = _AUDIENCE_DECODER.decode(raw_aud)
        audience = Audience(
            frozenset(parsed.get("u", ())),
            frozenset(parsed.get("g", ())),
            frozenset(parsed.get("r", ())),
        )
    raw_exp = fields.get(b"x")
    test_id = fields.get(b"k")
    traceparent = fields.get(b"tp")
    return StreamEntry(
        id=eid,
        event_type=fields[b"t"].decode(),
        priority=fields[b"p"].decode(),
        test_id=test_id.decode() if test_id else None,
        expires_at=int(raw_exp) / 1000 if raw_exp else None,
        audience=audience,
        frame=frame,
        traceparent=traceparent.decode() if traceparent else None,
    )
