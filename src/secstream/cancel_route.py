"""``POST /api/v1/tests/{test_id}/cancel``: ask the run that owns a test to stop (section 5)."""

from __future__ import annotations

import logging
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from secstream.auth import Principal
from secstream.control import MAX_REASON_CHARS, MAX_TEST_ID_CHARS, RunRecord, RunRecords
from secstream.endpoints import _authproblem, _bearer, authenticate, problem, service_of
from secstream.errors import AuthError, LogUnavailable
from secstream.httpbodies import CancelAccepted, CancelRequest, json
from secstream.limits import retry_after

audit = logging.getLogger("secstream.audit")

MAX_CANCEL_BODY: Final = 4096


_DECODER = msgspec.json.Decoder(CancelRequest)


def may_cancel(principal: Principal, record: RunRecord) -> bool:
    """An administrator, or a user the run's audience names."""
    return "admin" in principal.roles or principal.sub in record.users


async def cancel_test(request: Request) -> Response:
    service = service_of(request)
    test_id: str = request.path_params["test_id"]

    def record(outcome: str, sub: str | None, why: str, status: int) -> None:
        audit.info(
            "test.cancel",
            extra={
                "action": "test.cancel",
                "outcome": outcome,
                "sub": sub,
                "test_id": test_id[:MAX_TEST_ID_CHARS],
                "reason": why,
                "status_code": status,
                "address": request.client.host if request.client else None,
                "node": service.node_id,
            },
        )

    try:
        principal = await authenticate(service, _bearer(request))
    except AuthError as exc:
        record("denied", None, exc.error_code, exc.status_code)
        return _authproblem(exc)
    sub = principal.sub
    wait = await service.publish_limits.try_acquire(sub)
    if wait is not None:
        response = problem(429, "rate_limited", "too many requests; slow down")
        response.headers["Retry-After"] = retry_after(wait)
        return response
    if not 0 < len(test_id) <= MAX_TEST_ID_CHARS:
        record("denied", sub, "bad test_id", 404)
        return problem(404, "not_found", "no run of that test is known")
    body = await _read_body(request)
    if body is None:
        return problem(413, "too_large", f"the body is over {MAX_CANCEL_BODY} bytes")
    try:
        reason = _DECODER.decode(body).reason if body.strip() else None
    except msgspec.ValidationError as exc:
        return problem(422, "invalid_request", str(exc), field="reason")
    except msgspec.DecodeError:
        return problem(422, "invalid_request", "the body is not a JSON object", field="body")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        return problem(
            422, "invalid_request", f"at most {MAX_REASON_CHARS} characters", field="reason"
        )
    runs = RunRecords(service.redis, prefix=service.settings.key_prefix)
    try:
        run = await runs.lookup(test_id)
        if run is None:
            record("denied", sub, "unknown test", 404)
            return problem(404, "not_found", "no run of that test is known")
        if not may_cancel(principal, run):
            record("denied", sub, "not an administrator nor in the run's audience", 403)
            return problem(403, "forbidden", "only an administrator or the run's users may stop it")
        if run.state == "finished":
            record("denied", sub, "already finished", 409)
            return problem(409, "finished", f"the test already ended ({run.status})")
        outcome, request_id = await runs.request_cancel(test_id, by=sub, reason=reason)
    except LogUnavailable:
        response = problem(503, "unavailable", "the event log is unavailable; retry")
        response.headers["Retry-After"] = "1"
        return response
    if outcome == "unknown":
        record("denied", sub, "unknown test", 404)
        return problem(404, "not_found", "no run of that test is known")
    if outcome == "finished":
        record("denied", sub, "already finished", 409)
        return problem(409, "finished", "the test already ended")
    record("allowed", sub, reason or "", 202)
    return json(CancelAccepted(test_id, request_id), 202)


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it is over MAX_CANCEL_BODY (reading stops there)."""
    declared = request.headers.get("content-length") or "0"
    if not declared.isdigit() or int(declared) > MAX_CANCEL_BODY:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_CANCEL_BODY:
            return None
    return body
