"""``POST /api/v1/events`` and ``/api/v1/events/batch`` (contract section 5), straight
from the server to the log.

A publish is the one request that comes thousands of times a second, so it skips
Starlette's layers (request object, router, exception and gzip middleware) the way
``/ws`` does (``rawsend``): ``DirectPublish`` sits in the middleware list after
``ForwardedHeader`` (so the client address is the proxy-reported one) and answers
with the same security headers ``SecurityHeaders`` adds, and gzip for bodies of
1 KiB and more, as ``GZipMiddleware`` would. Errors still reach Starlette's
``ServerErrorMiddleware`` (a 500).

What a batch of concurrent publishes can share, they share: the signature check
(``Authenticator`` remembers verified tokens), and the Redis round trip
(``GroupAppender``: one script call for every publish waiting). What each must do
alone stays per request: its rate limit, its body, its span, its audit record.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
from starlette.types import ASGIApp, Receive, Scope, Send

from secstream.audit import Outcome, token_kid
from secstream.auth import Principal
from secstream.endpoints import KEYS_RETRY_AFTER, _field_of, authenticate
from secstream.entries import encode, validate
from secstream.errors import (
    AuthError,
    EventInvalid,
    Forbidden,
    KeysUnavailable,
    LogUnavailable,
    NotReplicated,
)
from secstream.eventlog import AppendOp
from secstream.httpbodies import Problem
from secstream.limits import retry_after
from secstream.middleware import PolicyHeaders
from secstream.protocol import (
    BATCH_DECODER,
    ENCODER,
    MAX_DEPTH,
    PUBLISH_DECODER,
    PublishRequest,
    too_deep,
)
from secstream.service import Service

MAX_BODY_BYTES: Final = 1024 * 1024
MAX_BATCH: Final = 1000
MAX_IDEMPOTENCY_KEY: Final = 256
GZIP_MIN_BYTES: Final = 1024
SINGLE: Final = "/api/v1/events"
BATCH: Final = "/api/v1/events/batch"

_JSON: Final = (b"content-type", b"application/json")
_CLOSE: Final = (b"connection", b"close")
_ENCODER: Final = msgspec.json.Encoder()
Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, bytes]
"""(status, JSON body)"""


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class DirectPublish:
    def __init__(
        self, app: ASGIApp, service: Service, policy: Callable[[], str] | None = None
    ) -> None:
        """``policy``: the CSP, as ``SecurityHeaders`` is given it."""
        self.app = app
        self.service = service
        self.security_headers = PolicyHeaders(policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            if path in (SINGLE, BATCH) and scope["method"] == "POST":
                return await _Publish(self, scope, receive, send).run(batch=path == BATCH)
            if path == BATCH:
                refusal = _problem(405, "method_not_allowed", "use POST")
                return await _send(send, self.security_headers(), refusal,
                                   [(b"allow", b"POST")])
        return await self.app(scope, receive, send)


class _Publish:
    """One publish request, from its headers to its answer."""

    __slots__ = (
        "gzip",
        "headers",
        "key",
        "length",
        "receive",
        "scope",
        "send",
        "service",
        "token",
        "traceparent",
    )

    def __init__(self, route: DirectPublish, scope: Scope, receive: Receive, send: Send) -> None:
        self.service = route.service
        self.headers = route.security_headers()
        self.scope = scope
        self.receive = receive
        self.send = send
        self.token: str | None = None
        self.key: str | None = None
        self.traceparent: str | None = None
        self.length = ""
        self.gzip = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                token = token.strip()
                self.token = token if scheme.lower() == "bearer" and token else None
            elif name == b"idempotency-key":
                self.key = value.decode("latin-1") or None
            elif name == b"traceparent":
                self.traceparent = value.decode("latin-1")
            elif name == b"content-length":
                self.length = value.decode("latin-1")
            elif name == b"accept-encoding":
                self.gzip = b"gzip" in value

    async def run(self, *, batch: bool) -> None:
        principal = await self._admit()
        if principal is None:
            return
        if self.key is not None and len(self.key) > MAX_IDEMPOTENCY_KEY:
            return await self._answer(_problem(
                422, "invalid_event", f"at most {MAX_IDEMPOTENCY_KEY} characters",
                "Idempotency-Key",
            ))
        try:
            body = await self._read_body()
        except _ClientGone:
            return
        except _BodyTooLarge:
            # The rest of the body is never read: the connection cannot carry another request.
            refusal = _problem(413, "too_large", f"over {MAX_BODY_BYTES} bytes", "body")
            return await self._refuse_unless_seen(principal, refusal, batch, [_CLOSE])
        try:
            events = decode_events(body, batch=batch,
                                   max_event_bytes=self.service.settings.max_event_bytes)
        except msgspec.ValidationError as exc:
            refusal = _problem(422, "invalid_event", str(exc), _field_of(exc))
            return await self._refuse_unless_seen(principal, refusal, batch)
        except msgspec.DecodeError:
            refusal = _problem(422, "invalid_event", "the body is not a JSON object", "body")
            return await self._refuse_unless_seen(principal, refusal, batch)
        except EventInvalid as exc:
            refusal = _problem(422, "invalid_event", exc.reason, exc.field)
            return await self._refuse_unless_seen(principal, refusal, batch)
        telemetry = self.service.telemetry
        try:
            with telemetry.publish_span(
                self.traceparent,
                events=len(events),
                event_type=events[0].event_type if len(events) == 1 else "batch",
            ) as traceparent:
                now = time.time()
                op = AppendOp([encode(e, now, traceparent) for e in events], self.key,
                              principal.sub)
                appended = await self.service.appender.append(op)
        except LogUnavailable as exc:
            return await self._unavailable(exc)
        if not appended.seen:
            self._audit("publish", "allowed", sub=principal.sub, event_ids=appended.ids)
        await self._accepted(appended.ids, batch)

    async def _admit(self) -> Principal | None:
        """The principal, when it may publish now; else None, the refusal sent."""
        service = self.service
        try:
            principal = await authenticate(service, self.token)
        except AuthError as exc:
            self._audit("publish", "denied", reason=str(exc))
            extra: Headers = []
            if exc.status_code == 401:
                extra.append((b"www-authenticate", b"Bearer"))
            elif isinstance(exc, KeysUnavailable):
                extra.append((b"retry-after", str(KEYS_RETRY_AFTER).encode()))
            await self._answer(_problem(exc.status_code, exc.error_code, str(exc)), extra)
            return None
        try:
            service.auth.authorize_publisher(principal)
        except Forbidden as exc:
            service.telemetry.auth_failures.add(1, {"reason": "forbidden"})
            self._audit("publish", "denied", sub=principal.sub, reason=str(exc))
            await self._answer(_problem(exc.status_code, exc.error_code, str(exc)))
            return None
        wait = await service.publish_limits.try_acquire(principal.sub)
        if wait is not None:
            self._audit("publish", "denied", sub=principal.sub, reason="rate_limited")
            await self._answer(_problem(429, "rate_limited", "too many publishes; slow down"),
                               [(b"retry-after", retry_after(wait).encode())])
            return None
        return principal

    async def _read_body(self) -> bytes:
        """The body, read as a stream: _BodyTooLarge as soon as it passes MAX_BODY_BYTES,
        whether or not it declared its length (the rest is never read)."""
        if self.length.isdigit() and int(self.length) > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                raise _ClientGone  # a partial body is never published
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _refuse_unless_seen(
        self, principal: Principal, refusal: Answer, batch: bool, extra: Headers | None = None
    ) -> None:
        """A key seen before answers with the first ids, whatever this body held."""
        if self.key is not None:
            try:
                seen = await self.service.log.idempotent_ids(self.key, principal.sub)
            except LogUnavailable as exc:
                return await self._unavailable(exc)
            if seen is not None:
                return await self._accepted(seen, batch, extra)
        await self._answer(refusal, extra)

    async def _accepted(self, ids: list[str], batch: bool, extra: Headers | None = None) -> None:
        if batch:
            body = b'{"ids":["' + '","'.join(ids).encode() + b'"]}'
        else:
            body = b'{"id":"' + ids[0].encode() + b'"}'
        await self._answer((202, body), extra)

    async def _unavailable(self, exc: LogUnavailable) -> None:
        service = self.service
        service.telemetry.redis_errors.add(1)
        message = "the event log is unavailable; retry"
        if not isinstance(exc, NotReplicated):
            service.redis_watch.failed(str(exc))
        else:
            service.redis_watch.unreplicated(exc.wanted, exc.confirmed)
            message = (
                f"not confirmed by {exc.wanted} replicas within 1 s ({exc.confirmed} did); "
                "retry with the same Idempotency-Key"
            )
        await self._answer(_problem(503, "unavailable", message), [(b"retry-after", b"1")])

    def _audit(self, action: str, outcome: Outcome, *, sub: str | None = None,
               reason: str | None = None, **about: Any) -> None:
        if outcome == "denied" and sub is None:
            about.setdefault("kid", token_kid(self.token))
        client = self.scope.get("client")
        self.service.audit.record(action, outcome, sub=sub,
                                  address=client[0] if client else "unknown", reason=reason,
                                  **about)

    async def _answer(self, answer: Answer, extra: Headers | None = None) -> None:
        await _send(self.send, self.headers, answer, extra, self.gzip)


def _problem(status: int, error: str, message: str, field: str | None = None) -> Answer:
    return status, _ENCODER.encode(Problem(error, message, field))


async def _send(send: Send, security: tuple[tuple[bytes, bytes], ...], answer: Answer,
                extra: Headers | None = None, gzipped: bool = False) -> None:
    status, body = answer
    headers: Headers = [_JSON, *security]
    if gzipped and len(body) >= GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=9)
        headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
    headers.append((b"content-length", str(len(body)).encode()))
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def decode_events(body: bytes, *, batch: bool, max_event_bytes: int) -> list[PublishRequest]:
    """The validated events of a publish body; all of them, or an exception."""
    if too_deep(body):
        raise EventInvalid("body", f"nested deeper than {MAX_DEPTH} levels")
    if not batch:
        event = PUBLISH_DECODER.decode(body)
        validate(event)
        _check_size(event, "", max_event_bytes)
        return [event]
    events = BATCH_DECODER.decode(body).events
    if not 0 < len(events) <= MAX_BATCH:
        raise EventInvalid("events", f"must hold 1 to {MAX_BATCH} events")
    for i, event in enumerate(events):
        validate(event, prefix=f"events[{i}].")
        _check_size(event, f"events[{i}]", max_event_bytes)
    return events


def _check_size(event: PublishRequest, field: str, limit: int) -> None:
    size = len(ENCODER.encode(event))
    if size > limit:
        raise EventInvalid(
            field or "body", f"the event encodes to {size} bytes, over SECSTREAM_MAX_EVENT_BYTES "
            f"({limit})"
        )
