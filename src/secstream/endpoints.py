"""Starlette handlers of the HTTP API (contract section 5), and helpers the WebSocket
route shares."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from secstream.audit import Outcome, token_kid
from secstream.auth import Principal
from secstream.entries import StreamEntry
from secstream.errors import (
    AuthError,
    Forbidden,
    KeysUnavailable,
    LogUnavailable,
)
from secstream.events import KNOWN_ROLES, expand, is_valid_pattern
from secstream.httpbodies import (
    ClientConfig,
    DevToken,
    DevTokenRequest,
    Liveness,
    OidcClient,
    OidcReadiness,
    Simulated,
    json,
)
from secstream.limits import retry_after
from secstream.protocol import (
    MAX_DEPTH,
    is_offset,
    too_deep,
)
from secstream.service import Service

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_POLL_LIMIT = 1000
MAX_POLL_WAIT = 30.0
MAX_TEST_ID = 256
KEYS_RETRY_AFTER = 5
"""Seconds a 503 for not-yet-loaded provider keys asks the client to wait."""
N = TypeVar("N", int, float)
_FIELD_AT = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"(?:missing required|unknown) field `([^`]*)`")


def service_of(conn: HTTPConnection) -> Service:
    service: Service = conn.app.state.service
    return service


def problem(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


async def authenticate(service: Service, token: str | None) -> Principal:
    """The token's principal; a token naming a provider key not seen yet waits for the
    provider's keys to be fetched again (rate-limited, see ``oidc``)."""
    try:
        return await service.auth.verify(token)
    except KeysUnavailable:
        raise  # 503: not a refusal of the token
    except AuthError as exc:
        service.telemetry.auth_failures.add(1, {"reason": exc.error_code})
        raise


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _http_principal(request: Request) -> Principal:
    """The request's principal, when it may receive; a refusal is audited."""
    service = service_of(request)
    action = "poll.forbidden"
    try:
        principal = await authenticate(service, _bearer(request))
    except AuthError as exc:
        _audit(request, action, "denied", reason=str(exc))
        raise
    try:
        service.auth.authorize_receiver(principal)
    except Forbidden as exc:
        service.telemetry.auth_failures.add(1, {"reason": "forbidden"})
        _audit(request, action, "denied", sub=principal.sub, reason=str(exc))
        raise
    return principal


def address_of(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def _audit(
    request: Request,
    action: str,
    outcome: Outcome,
    *,
    sub: str | None = None,
    reason: str | None = None,
    **about: Any,
) -> None:
    if outcome == "denied" and sub is None:
        about.setdefault("kid", token_kid(_bearer(request)))
    service_of(request).audit.record(
        action, outcome, sub=sub, address=address_of(request), reason=reason, **about
    )


def _authproblem(exc: AuthError) -> JSONResponse:
    response = problem(exc.status_code, exc.error_code, str(exc))
    if exc.status_code == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, KeysUnavailable):
        response.headers["Retry-After"] = str(KEYS_RETRY_AFTER)
    return response


# -- bodies (publishing itself is in publish_route) ---------------------------------------


def _field_of(exc: msgspec.ValidationError, prefix: str = "") -> str:
    text = str(exc)
    at = _FIELD_AT.search(text)
    path = at.group(1) if at else ""
    missing = _MISSING.search(text)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return prefix + (path or "body")


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read as a stream: _BodyTooLarge as soon as it passes ``limit`` bytes,
    whether or not it declared its length (the rest is never read)."""
    declared = request.headers.get("content-length") or ""
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# -- polling -------------------------------------------------------------------------------


async def poll(request: Request) -> Response:
    service = service_of(request)
    try:
        principal = await _http_principal(request)
    except AuthError as exc:
        return _authproblem(exc)
    wait_for_rate = await service.poll_limits.try_acquire(principal.sub)
    if wait_for_rate is not None:
        response = problem(429, "rate_limited", "too many polls; slow down")
        response.headers["Retry-After"] = retry_after(wait_for_rate)
        return response
    q = request.query_params
    patterns = [p.strip() for p in (q.get("types") or "*").split(",") if p.strip()] or ["*"]
    bad = [p for p in patterns if not is_valid_pattern(p)]
    if bad:
        message = f"unknown event type or pattern {bad[0]!r}"
        return problem(400, "bad_request", message, field="types")
    refused = [p for p in patterns if "*" not in p and p not in principal.receivable]
    if refused:
        reason = f"may not receive {refused[0]!r}"
        _audit(request, "poll.forbidden", "denied", sub=principal.sub, reason=reason)
        return problem(403, "forbidden", f"your roles {reason}", field="types")
    since, test_id = q.get("since"), q.get("test_id") or None
    if since is not None and not is_offset(since):
        return problem(400, "bad_request", "since must be an event id or \"0\"", field="since")
    if test_id is not None and len(test_id) > MAX_TEST_ID:
        message = f"test_id is at most {MAX_TEST_ID} characters"
        return problem(400, "bad_request", message, field="test_id")
    limit = _number(q.get("limit"), 100, int, 1, MAX_POLL_LIMIT)
    if limit is None:
        message = f"limit must be a whole number from 1 to {MAX_POLL_LIMIT}"
        return problem(400, "bad_request", message, field="limit")
    wait = _number(q.get("wait"), 0.0, float, 0, MAX_POLL_WAIT)
    if wait is None:
        message = f"wait must be a number of seconds from 0 to {MAX_POLL_WAIT:g}"
        return problem(400, "bad_request", message, field="wait")
    types = expand(patterns, principal.receivable)

    def match(entry: StreamEntry) -> bool:
        aud = entry.audience
        return (
            entry.event_type in types
            and (test_id is None or entry.test_id == test_id)
            and (aud is None or aud.admits(principal.sub, principal.groups, principal.roles))
        )

    try:
        if since is None:
            return _page([], await service.log.last_id(), False)
        page = await service.log.read_page(since, match, limit=limit, test_id=test_id)
        truncated = page.truncated
        deadline = time.monotonic() + wait
        while (
            not page.entries
            and service.hub.accepting
            and (left := deadline - time.monotonic()) > 0
        ):
            await service.hub.wait_for_events(page.next, min(left, 5.0))
            page = await service.log.read_page(page.next, match, limit=limit, test_id=test_id)
    except LogUnavailable:
        return problem(503, "unavailable", "the event log is unavailable; retry")
    return _page(page.entries, page.next, truncated)


def _number(
    raw: str | None, default: N, kind: Callable[[str], N], low: float, high: float
) -> N | None:
    """A query parameter within [low, high]; None when it is malformed or out of range."""
    if raw is None or raw == "":
        return default
    if len(raw) > 32:
        return None
    try:
        value = kind(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None  # NaN compares False: refused


def _page(entries: list[StreamEntry], next_offset: str, truncated: bool) -> Response:
    body = (
        '{"events":['
        + ",".join(e.frame for e in entries)
        + f'],"next":"{next_offset}","truncated":{"true" if truncated else "false"}}}'
    )
    return Response(body, media_type="application/json")


# -- operations ----------------------------------------------------------------------------


async def health_live(request: Request) -> Response:
    return json(Liveness())


async def health_ready(request: Request) -> Response:
    """200 when Redis answers and this node takes connections; else 503 saying why."""
    service = service_of(request)
    hub = service.hub
    watch = service.redis_watch
    extra: dict[str, Any] = {}
    redis = True
    try:
        await asyncio.wait_for(service.log.ping(), 2)
    except (LogUnavailable, TimeoutError) as exc:
        watch.failed(str(exc) or type(exc).__name__)
        redis = False
    if redis:
        try:
            primary = await service.redis_client.primary()
        except LogUnavailable as exc:  # Redis answers, the sentinels do not: still ready
            primary, extra["sentinels"] = None, str(exc)
        watch.answered(primary)
    draining = service.draining or not hub.accepting
    overloaded = hub.overloaded or hub.full
    oidc = service.oidc
    if oidc is not None:
        age = oidc.age()
        extra["oidc"] = msgspec.to_builtins(
            OidcReadiness(
                issuer=oidc.issuer,
                keys_loaded=oidc.loaded,
                keys=oidc.key_count,
                age=None if age is None else round(age, 1),
                error=oidc.error,
            )
        )
    reasons = [
        name
        for name, failing in (
            ("redis", not redis),
            ("draining", draining),
            ("overloaded", overloaded),
            # Without the provider's keys no person's token can be checked.
            ("oidc", oidc is not None and not oidc.loaded),
        )
        if failing
    ]
    body = {
        "status": "unavailable" if reasons else "ok",
        "reasons": reasons,
        "redis": redis,
        "draining": draining,
        "overloaded": overloaded,
        "tail": hub.healthy,
        "node": service.node_id,
        **watch.report(),
        **extra,
    }
    return JSONResponse(body, status_code=503 if reasons else 200)


async def client_config(request: Request) -> Response:
    """Public: how the dashboard signs in (no token needed to ask)."""
    settings = service_of(request).settings
    oidc = None
    if settings.oidc_issuer is not None and settings.oidc_client_id is not None:
        oidc = OidcClient(settings.oidc_issuer, settings.oidc_client_id, settings.oidc_scope)
    response = json(ClientConfig(oidc=oidc, demo=settings.demo))
    response.headers["Cache-Control"] = "no-cache"
    return response


async def metrics(request: Request) -> Response:
    body, content_type = service_of(request).telemetry.render()
    return Response(body, headers={"Content-Type": content_type})


# -- demo ------------------------------------------------------------------------------------


async def dev_token(request: Request) -> Response:
    service = service_of(request)
    if not service.settings.demo:
        return problem(404, "not_found", "the demo is not running")
    try:
        raw = await _read_body(request, 64 * 1024)
    except _BodyTooLarge:
        return problem(413, "too_large", "the body is over 64 KiB", field="body")
    if too_deep(raw):
        return problem(422, "invalid_request", f"nested deeper than {MAX_DEPTH}", field="body")
    try:
        body = msgspec.json.decode(raw, type=DevTokenRequest)
    except msgspec.ValidationError as exc:
        return problem(422, "invalid_request", str(exc), field=_field_of(exc))
    except msgspec.DecodeError:
        return problem(422, "invalid_request", "the body is not a JSON object", field="body")
    unknown = [r for r in body.roles if r not in KNOWN_ROLES]
    if not body.sub or unknown or not 0 < body.expires_in <= 7 * 86400:
        field = "sub" if not body.sub else "roles" if unknown else "expires_in"
        return problem(422, "invalid_request", f"invalid {field}", field=field)
    token, expires_at = service.auth.mint(body.sub, body.roles, body.groups, body.expires_in)
    _audit(request, "dev.token", "allowed", sub=body.sub, roles=body.roles, expires_at=expires_at)
    return json(DevToken(token, expires_at))


async def dev_simulate(request: Request) -> Response:
    service = service_of(request)
    if not service.settings.demo or service.simulator is None:
        return problem(404, "not_found", "the demo is not running")
    try:
        principal = await authenticate(service, _bearer(request))
    except AuthError as exc:
        return _authproblem(exc)
    test_id = service.simulator.start(user_id=principal.sub)
    return json(Simulated(test_id), 202)
