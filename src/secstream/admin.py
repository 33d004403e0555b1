"""Administration routes (contract section 5): every node's connections, closing one,
the audit trail. Admin only; every decision audited."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from secstream.audit import ACTIONS, MAX_QUERY_LIMIT, UNAVAILABLE, token_kid
from secstream.auth import Principal
from secstream.endpoints import _authproblem, _bearer, address_of, authenticate, problem, service_of
from secstream.errors import WS_4003_CLOSED_BY_ADMIN, AuthError, LogUnavailable


async def _admin(request: Request, action: str, **about: Any) -> Principal | Response:
    service = service_of(request)
    token = _bearer(request)
    address = address_of(request)
    try:
        principal = await authenticate(service, token)
    except AuthError as exc:
        service.audit.record(
            action, "denied", address=address, reason=str(exc), kid=token_kid(token), **about
        )
        return _authproblem(exc)
    if "admin" not in principal.roles:
        service.telemetry.auth_failures.add(1, {"reason": "forbidden"})
        service.audit.record(
            action, "denied", sub=principal.sub, address=address, reason="admin only", **about
        )
        return problem(403, "forbidden", "admin only")
    return principal


def _unavailable() -> Response:
    response = problem(503, "unavailable", "Redis is unavailable; retry")
    response.headers["Retry-After"] = "1"
    return response


async def connections(request: Request) -> Response:
    admin = await _admin(request, "admin.connections")
    if isinstance(admin, Response):
        return admin
    service = service_of(request)
    try:
        found = await service.registry.all()
    except (LogUnavailable, *UNAVAILABLE):
        return _unavailable()
    service.audit.record(
        "admin.connections", "allowed", sub=admin.sub, address=address_of(request),
        count=len(found),
    )
    return JSONResponse({"node": service.node_id, "connections": found})


async def close_connection(request: Request) -> Response:
    conn_id = request.path_params["connection_id"]
    admin = await _admin(request, "admin.close", connection_id=conn_id)
    if isinstance(admin, Response):
        return admin
    service = service_of(request)
    try:
        found = await service.registry.close(conn_id, WS_4003_CLOSED_BY_ADMIN)
    except (LogUnavailable, *UNAVAILABLE):
        return _unavailable()
    service.audit.record(
        "admin.close", "allowed" if found else "denied", sub=admin.sub,
        address=address_of(request), connection_id=conn_id,
        reason=None if found else "unknown connection",
    )
    if not found:
        return problem(404, "not_found", "no such connection on any node")
    return Response(status_code=204)


async def audit(request: Request) -> Response:
    admin = await _admin(request, "admin.audit")
    if isinstance(admin, Response):
        return admin
    service = service_of(request)
    q = request.query_params
    actions = [a.strip() for a in (q.get("action") or "").split(",") if a.strip()]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        return problem(400, "bad_request", f"unknown action {unknown[0]!r}")
    try:
        limit = int(q.get("limit") or 100)
    except ValueError:
        return problem(400, "bad_request", "limit must be a number")
    sub = q.get("sub") or None
    try:
        records, next_id = await service.audit.query(
            since=q.get("since") or None, limit=limit, actions=actions, sub=sub
        )
    except ValueError as exc:
        return problem(400, "bad_request", f"{exc} (limit 1 to {MAX_QUERY_LIMIT})")
    except UNAVAILABLE:
        return _unavailable()
    return JSONResponse({"records": records, "next": next_id})
