"""``GET /ws``: the handshake (refused with an HTTP status before accept), then
one ``Session`` per socket."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from contextlib import AbstractContextManager
from typing import NamedTuple

from starlette.websockets import WebSocket, WebSocketDisconnect

from secstream.audit import token_kid
from secstream.auth import Principal
from secstream.connection import Connection, State
from secstream.endpoints import authenticate, problem, service_of
from secstream.entries import now_iso
from secstream.errors import (
    WS_4009_SLOW_CONSUMER,
    AuthError,
    Forbidden,
    KeysUnavailable,
    LogUnavailable,
)
from secstream.protocol import Welcome, encode, parse_offset
from secstream.rawsend import (
    direct_socket,
    raw_send,
    release_handshake,
    text_frame_of,
    write_now,
)
from secstream.service import Service
from secstream.session import Session

SUBPROTOCOL = "secstream.v1"
BEARER_PREFIX = "bearer."
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _Socket:
    """Starlette's WebSocket as the hub's small Socket protocol. Text frames go straight
    to the server's ASGI ``send``, or, where the server allows it, as ready bytes to the
    transport (``write_now``; see ``rawsend``), without Starlette's layers."""

    __slots__ = ("_direct", "_send", "_ws")

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._send = raw_send(websocket.scope) or websocket.send
        self._direct = direct_socket(websocket.scope)
        release_handshake(websocket)

    def write_now(self, data: str) -> bool:
        direct = self._direct
        return direct is not None and write_now(direct, text_frame_of(data))

    async def send_text(self, data: str) -> None:
        try:
            await self._send({"type": "websocket.send", "text": data})
        except (OSError, WebSocketDisconnect) as exc:
            raise ConnectionResetError("the client has gone") from exc

    async def receive(self) -> str | bytes | None:
        try:
            # our protocol's own receive where there is one: no Starlette frame held
            # while the socket sits idle waiting for the client
            direct = self._direct
            message = await (direct.receive() if direct is not None else self._ws.receive())
        except (RuntimeError, WebSocketDisconnect):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def close(self, code: int, reason: str = "") -> None:
        await self._ws.close(code, reason)


def _ws_token(websocket: WebSocket) -> tuple[str | None, bool]:
    """The token (subprotocol ``bearer.<jwt>`` or query ``token``), and whether
    the client offered ``secstream.v1``."""
    offered = [p.strip() for p in websocket.scope.get("subprotocols", [])]
    token = next((p[len(BEARER_PREFIX):] for p in offered if p.startswith(BEARER_PREFIX)), None)
    return token or websocket.query_params.get("token"), SUBPROTOCOL in offered


async def _deny(
    websocket: WebSocket, status: int, error: str, message: str, **extra: str
) -> None:
    response = problem(status, error, message, **extra)
    if status == 429:
        response.headers["Retry-After"] = "1"
    await websocket.send_denial_response(response)


class _Admitted(NamedTuple):
    principal: Principal
    client_id: str | None
    subprotocol: str | None
    kid: str | None
    """The token's key id, for the audit record (the token itself is not kept)."""


async def _admit(websocket: WebSocket, service: Service, address: str) -> _Admitted | None:
    """The handshake's checks, in order; None when the connection was refused (the
    answer sent). A function of its own so that what only the checks need (the token,
    the refusal closures) is let go at accept, not held by every open connection."""
    hub = service.hub
    token, offered = _ws_token(websocket)

    async def deny(
        status: int, error: str, message: str, reason: str, **extra: str
    ) -> None:
        service.audit.record(
            "ws.connect", "denied", address=address, reason=reason, status=status,
            kid=token_kid(token),
        )
        await _deny(websocket, status, error, message, **extra)

    async def refuse(
        status: int, error: str, message: str, reason: str, **extra: str
    ) -> None:
        """A refused handshake (400/401/403): the only kind limited per address."""
        await service.handshake_limits.charge(address)
        await deny(status, error, message, reason, **extra)

    if service.handshake_limits.exhausted(address) is not None:
        await deny(
            429, "rate_limited", "too many refused connection attempts", "rate_limited"
        )
        return None
    if service.draining or not hub.accepting:
        await deny(503, "unavailable", "the server is shutting down", "draining")
        return None
    if hub.full or hub.overloaded:
        await deny(503, "unavailable", "the server is at capacity; retry", "overloaded")
        return None
    client_id = websocket.query_params.get("client_id")
    if client_id is not None and not _CLIENT_ID.fullmatch(client_id):
        message = "client_id must match [A-Za-z0-9_-]{1,64}"
        await refuse(400, "bad_request", message, "bad client_id", field="client_id")
        return None
    origin = websocket.headers.get("origin")
    allowed = service.settings.allowed_origins
    if origin is not None and allowed and origin not in allowed:
        await refuse(
            403, "forbidden", "this Origin may not connect", "origin not allowed", field="Origin"
        )
        return None
    try:
        principal = await authenticate(service, token)
        service.auth.authorize_receiver(principal)
    except Forbidden as exc:
        service.telemetry.auth_failures.add(1, {"reason": "forbidden"})
        await refuse(403, exc.error_code, str(exc), str(exc))
        return None
    except KeysUnavailable as exc:  # the provider's keys are not here yet: not the token's fault
        await deny(503, exc.error_code, str(exc), "oidc keys not loaded")
        return None
    except AuthError as exc:
        await refuse(401, exc.error_code, str(exc), str(exc))
        return None
    slots = service.user_slots
    if not slots.acquire(principal.sub):
        message = f"this user has {slots.cap} connections open on this node already"
        await deny(429, "too_many_connections", message, "per-user cap")
        return None
    return _Admitted(principal, client_id, SUBPROTOCOL if offered else None, token_kid(token))


async def websocket_endpoint(websocket: WebSocket) -> None:
    service = service_of(websocket)
    hub = service.hub
    address = websocket.client.host if websocket.client else "unknown"
    admitted = await _admit(websocket, service, address)
    if admitted is None:
        return None
    principal, client_id, subprotocol, kid = admitted
    slots = service.user_slots  # _admit took a slot for this user
    try:  # the slot is released however this ends (no done-callback held per task)
        resume_from = await _resume_from(service, principal.sub, client_id)
        await websocket.accept(subprotocol=subprotocol)
        conn = Connection(
            _Socket(websocket),
            principal,
            connection_id=f"{service.node_id}-{uuid.uuid4().hex[:12]}",
            client_id=client_id,
            max_queue_bytes=service.settings.max_queue_bytes,
            load=hub.load,
            counters=hub.counters,
            writer=hub.writer,
        )
        conn.send_control(
            encode(
                Welcome(
                    connection_id=conn.id,
                    user_id=principal.sub,
                    roles=sorted(principal.roles),
                    heartbeat_interval=float(service.settings.heartbeat_interval),
                    resume_from=resume_from,
                    server_time=now_iso(),
                    node=service.node_id,
                )
            )
        )
        hub.add(conn)
        service.opened(conn, address)
        service.audit.record(
            "ws.connect", "allowed", sub=principal.sub, address=address, connection_id=conn.id,
            client_id=client_id, roles=sorted(principal.roles), kid=kid,
        )
        session = Session(
            conn,
            hub,
            service.auth,
            service.acks,
            _Hooks(service, conn, address),
            client_rate=service.settings.client_rate,
            client_burst=service.settings.client_burst,
            replay_limit=service.settings.replay_limit,
        )
        try:
            await session.run()
        finally:
            closing = conn.state is State.CLOSING
            conn.finish()
            if conn.close_code == WS_4009_SLOW_CONSUMER:
                service.telemetry.slow_consumers.add(1)
            try:
                if closing:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.flush_control(), 2)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.socket.close(conn.close_code), 5)
            finally:
                # Only now: drain() waits for the hub to empty before uvicorn's own
                # shutdown, which would close what is left with 1012.
                hub.remove(conn)
                service.closed(conn, address)  # audit ws.close, the connection registry
    finally:
        slots.release(principal.sub)
    return None


class _Hooks:
    """A session's reports to the service (``session.SessionHooks``): one small object
    per connection where four closures and their cells were."""

    __slots__ = ("_address", "_conn", "_service")

    def __init__(self, service: Service, conn: Connection, address: str) -> None:
        self._service = service
        self._conn = conn
        self._address = address

    def rate_limited(self) -> None:
        self._service.refused("client_frames", self._conn.principal.sub)

    def replayed(self, count: int) -> None:
        self._service.telemetry.replayed.add(count)

    def audit(self, action: str, outcome: str, reason: str | None) -> None:
        conn = self._conn
        self._service.audit.record(
            action, outcome, sub=conn.principal.sub, address=self._address,  # type: ignore[arg-type]
            reason=reason, connection_id=conn.id,
        )

    def replay_span(self, subscription: str) -> AbstractContextManager[object]:
        return self._service.telemetry.replay_span(self._conn.id, subscription)


async def _resume_from(service: Service, sub: str, client_id: str | None) -> str | None:
    if client_id is None:
        return None
    stored: str | None = None
    with contextlib.suppress(LogUnavailable, TimeoutError):
        stored = await asyncio.wait_for(service.log.stored_offset(sub, client_id), 2)
    pending = service.acks.pending(sub, client_id)
    if pending is not None and (stored is None or parse_offset(pending) > parse_offset(stored)):
        return pending
    return stored
