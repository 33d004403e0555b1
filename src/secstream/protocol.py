"""Wire messages of contract section 4, and the publish body of section 5.

Client frames decode through one msgspec decoder built once. Server frames are
structs encoded with ENCODER; events are not: each is encoded once when it is
appended and travels as ready-made JSON text (see ``entries.StreamEntry``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from secstream.events import Priority

MAX_FRAME_BYTES = 64 * 1024
_OFFSET = re.compile(r"^(0|\d{1,20}(-\d{1,20})?)$")

Ref = str | int


class Message(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


# -- client frames -----------------------------------------------------------


class Subscribe(Message, tag="subscribe", forbid_unknown_fields=False):
    event_types: list[str]
    id: Ref | None = None
    test_id: str | None = None
    since: str | None = None
    latest: bool = False


class Unsubscribe(Message, tag="unsubscribe"):
    subscription: str
    id: Ref | None = None


class Ack(Message, tag="ack"):
    offset: str
    id: Ref | None = None


class Pong(Message, tag="pong"):
    id: Ref | None = None


class Ping(Message, tag="ping"):
    id: Ref | None = None


class Refresh(Message, tag="refresh"):
    token: str
    id: Ref | None = None


ClientMessage = Subscribe | Unsubscribe | Ack | Pong | Ping | Refresh
DECODER = msgspec.json.Decoder(ClientMessage)


# -- server frames -----------------------------------------------------------


class Welcome(Message, tag="welcome", omit_defaults=False):
    connection_id: str
    user_id: str
    roles: list[str]
    heartbeat_interval: float
    resume_from: str | None
    server_time: str


class Subscribed(Message, tag="subscribed"):
    subscription: str
    event_types: list[str]
    ref: Ref | None = None


class Replayed(Message, tag="replayed", omit_defaults=False):
    subscription: str
    count: int
    truncated: bool
    ref: Ref | None = None


class Unsubscribed(Message, tag="unsubscribed"):
    subscription: str
    ref: Ref | None = None


class Acked(Message, tag="acked"):
    offset: str
    ref: Ref | None = None


class Refreshed(Message, tag="refreshed"):
    expires_at: float
    ref: Ref | None = None


class ConnectionInfo(Message, tag="connection.info"):
    """A connection starts (``catching_up``) or ends (``live``) reading the log."""

    state: Literal["catching_up", "live"]
    behind: int | None = None
    truncated: bool = False


class PongReply(Message, tag="pong"):
    ref: Ref | None = None


class PingFrame(Message, tag="ping"):
    ts: float


class TokenExpiring(Message, tag="token.expiring"):
    expires_in: float


class Error(Message, tag="error"):
    code: str
    message: str
    ref: Ref | None = None


ENCODER = msgspec.json.Encoder()


def encode(message: Message) -> str:
    return ENCODER.encode(message).decode()


def is_offset(value: str) -> bool:
    """``"0"`` or a stream id (``ms`` or ``ms-seq``)."""
    return bool(_OFFSET.match(value))


def parse_offset(value: str) -> tuple[int, int]:
    """Order key of an offset; ``"0"`` is before every event."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def ref_of(raw: bytes | str) -> Ref | None:
    """The ``id`` of a frame that failed to decode, so its error can still carry ``ref``."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    if isinstance(obj, dict):
        ref = obj.get("id")
        if isinstance(ref, str | int) and not isinstance(ref, bool):
            return ref
    return None


# -- HTTP publish ------------------------------------------------------------


class Audience(msgspec.Struct, forbid_unknown_fields=True):
    users: list[str] = []
    groups: list[str] = []
    roles: list[str] = []


class PublishRequest(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str
    data: dict[str, Any]
    audience: Audience | None = None
    priority: Priority = "normal"
    correlation_id: str | None = None
    user_id: str | None = None
    ttl: float | None = None


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    events: list[PublishRequest]


PUBLISH_DECODER = msgspec.json.Decoder(PublishRequest)
BATCH_DECODER = msgspec.json.Decoder(BatchRequest)
