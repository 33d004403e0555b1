"""Wire messages of contract section 4, and the publish body of section 5.

Client frames decode through one msgspec decoder built once. Server frames are
structs encoded with ENCODER; events are not: each is encoded once when it is
appended and travels as ready-made JSON text (see ``entries.StreamEntry``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from secstream.errors import ProtocolError
from secstream.events import KnownEventType, Priority

MAX_FRAME_BYTES = 64 * 1024
"""Larger frames never reach the app: the server closes them with 1009 (see ``server``)."""
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects in a client frame or a publish body."""
_OFFSET = re.compile(r"0|[0-9]{1,20}(-[0-9]{1,20})?")  # [0-9]: \d takes any Unicode digit
_UINT64 = 2**64 - 1

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
    node: str


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


class Event(Message, tag="event", omit_defaults=False):
    """The envelope of one event (section 3). Not encoded from this struct at run time:
    ``entries`` splices ``type`` and ``id`` into the text stored at publish; the schema of
    the frame is this struct's (``apidoc``, and a test decodes real frames with it)."""

    id: str
    event_type: KnownEventType
    timestamp: str
    priority: Priority
    data: dict[str, Any]
    user_id: str | None
    correlation_id: str | None
    traceparent: str | None = None
    """W3C trace context of the publish span (section 8), when the server traces."""


class Batch(Message, tag="batch"):
    """Several events in one frame: the server may batch under load; clients handle both."""

    events: list[Event]


ServerMessage = (
    Welcome
    | Subscribed
    | Replayed
    | Unsubscribed
    | Acked
    | Refreshed
    | ConnectionInfo
    | PongReply
    | PingFrame
    | TokenExpiring
    | Error
    | Event
    | Batch
)


ENCODER = msgspec.json.Encoder()


def encode(message: Message) -> str:
    return ENCODER.encode(message).decode()


def is_offset(value: str) -> bool:
    """``"0"`` or a stream id (``ms`` or ``ms-seq``, each part a 64-bit unsigned number)."""
    if _OFFSET.fullmatch(value) is None:
        return False
    ms, seq = parse_offset(value)
    return ms <= _UINT64 and seq <= _UINT64


def parse_offset(value: str) -> tuple[int, int]:
    """Order key of an offset; ``"0"`` is before every event."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(raw: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects deeper than ``limit`` (or its brackets
    do not balance).

    Cheap, and run before any decoder sees the text: msgspec recurses once per level
    (a 10k-deep array raises RecursionError). Strings are cut out, the brackets kept, and
    each pass of ``replace(b"[]", b"")`` removes the innermost level: balanced brackets
    at most ``limit`` deep are gone after ``limit`` passes. Every loop runs in C.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(_SQUARE, _NOT_BRACKET)
    run = b"[" * (limit + 1)  # that many opens in a row: too deep at once
    for _ in range(limit):
        if not brackets:
            return False
        if run in brackets:
            return True
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


class FrameError(ProtocolError):
    """A client frame that does not decode; ``ref`` is its ``id`` when that can be told."""

    def __init__(self, message: str, ref: Ref | None = None) -> None:
        super().__init__(message)
        self.ref = ref


def decode_client_frame(raw: bytes | str) -> ClientMessage:
    """One client frame, or FrameError (``bad_request``): oversize and over-deep frames
    are refused before they are parsed."""
    if len(raw) > MAX_FRAME_BYTES:
        raise FrameError(f"frame over {MAX_FRAME_BYTES} bytes")
    if too_deep(raw):
        raise FrameError(f"frame nested deeper than {MAX_DEPTH} levels", _top_level_id(raw))
    try:
        msg: ClientMessage = DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise FrameError(str(exc), ref_of(raw)) from None
    except msgspec.DecodeError:
        raise FrameError("frame is not a JSON object") from None
    return msg


_ID_MEMBER = re.compile(rb'"id"\s*:\s*("[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9]+)')


def _top_level_id(raw: bytes | str) -> Ref | None:
    """The ``id`` of an object too deep to decode, found in its text: the first few
    ``"id":`` members, outside strings, one level in (each check runs in C)."""
    data = raw.encode() if isinstance(raw, str) else raw
    for n, member in enumerate(_ID_MEMBER.finditer(data)):
        if n == 4:
            break
        before = _STRING.sub(b"", data[: member.start()])
        if b'"' in before:
            continue  # inside a string
        opened = before.count(b"{") + before.count(b"[")
        if opened - before.count(b"}") - before.count(b"]") == 1:
            try:
                ref = _REF_DECODER.decode(member.group(1))
            except msgspec.DecodeError:
                return None
            return None if isinstance(ref, bool) else ref
    return None


class _IdOnly(msgspec.Struct):
    id: msgspec.Raw = msgspec.Raw(b"null")


_ID_DECODER = msgspec.json.Decoder(_IdOnly)
_REF_DECODER = msgspec.json.Decoder(str | int | None)


def ref_of(raw: bytes | str) -> Ref | None:
    """The ``id`` of a frame that failed to decode, so its error can still carry ``ref``.

    Only ``id`` is decoded (other fields are skipped, so a number out of range elsewhere
    does not hide it); an over-deep frame is not decoded, its ``id`` is looked up in the
    text; an oversize frame: None.
    """
    if len(raw) > MAX_FRAME_BYTES:
        return None
    if too_deep(raw):
        return _top_level_id(raw)
    try:
        ref = _REF_DECODER.decode(_ID_DECODER.decode(raw).id)
    except msgspec.DecodeError:
        return None
    return None if isinstance(ref, bool) else ref


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
