"""Bodies of the HTTP API (section 5) that are not client frames or publish requests.

The endpoints answer with these structs (``json``), and ``apidoc`` describes the API
from them, so the OpenAPI document cannot drift from what is sent.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from starlette.responses import Response

from secstream.protocol import Event


class Problem(msgspec.Struct, omit_defaults=True):
    """Every 4xx/5xx answer: a code, a sentence, and the offending field when there is one."""

    error: str
    message: str
    field: str | None = None


class Accepted(msgspec.Struct):
    """202 of ``POST /api/v1/events``: the new event's id (its offset in the log)."""

    id: str


class BatchAccepted(msgspec.Struct):
    """202 of ``POST /api/v1/events/batch``: the ids, in the order of the request."""

    ids: list[str]


class EventPage(msgspec.Struct):
    """200 of ``GET /api/v1/events``: pass ``next`` as ``since`` to read on."""

    events: list[Event]
    next: str
    truncated: bool


class Liveness(msgspec.Struct):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, omit_defaults=True):
    """``GET /health/ready``; the optional members come from the Redis watch."""

    status: Literal["ok", "unavailable"]
    redis: bool
    tail: bool | None = None
    reason: str | None = None
    down_for: float | None = None
    primary: str | None = None
    failovers: int | None = None
    last_failover: Any = None
    outages: list[Any] | None = None
    last_unreplicated_write: Any = None
    sentinels: str | None = None
    reasons: list[str] | None = None
    """Why not ready: ``redis``, ``draining``, ``overloaded``, ``oidc``."""
    oidc: OidcReadiness | None = None


class SubscriptionInfo(msgspec.Struct):
    id: str
    event_types: list[str]
    test_id: str | None


class ConnectionSummary(msgspec.Struct):
    """One live connection of some node (``registry.describe``)."""

    id: str
    node: str
    user: str
    roles: list[str]
    client_id: str | None
    subscriptions: list[SubscriptionInfo]
    connected_since: str
    address: str | None
    state: Literal["live", "catching_up"]
    behind: int
    queue_bytes: int
    sent: int
    received: int


class Connections(msgspec.Struct):
    """``GET /api/v1/connections``: the live connections of every node."""

    node: str
    connections: list[ConnectionSummary]


class AuditRecord(msgspec.Struct):
    """One audit record (section 8); an action adds members of its own (``test_id``...)."""

    id: str
    time: str
    action: str
    outcome: Literal["allowed", "denied"]
    sub: str | None
    address: str | None
    node: str
    reason: str | None


class AuditPage(msgspec.Struct):
    """``GET /api/v1/audit``: pass ``next`` as ``since`` to read on."""

    records: list[AuditRecord]
    next: str | None


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/tests/{test_id}/cancel`` (may be empty)."""

    reason: str | None = None


class CancelAccepted(msgspec.Struct):
    test_id: str
    request_id: str | None
    status: Literal["cancel_requested"] = "cancel_requested"


class OidcClient(msgspec.Struct):
    """How the dashboard signs in: the authorization code flow with PKCE, as a public
    client (no secret), at this issuer, asking for these scopes."""

    issuer: str
    client_id: str
    scope: str


class ClientConfig(msgspec.Struct):
    """``GET /api/v1/config`` (public): how the app signs in. ``oidc`` is null unless
    both ``SECSTREAM_OIDC_ISSUER`` and ``SECSTREAM_OIDC_CLIENT_ID`` are set; ``demo``:
    the demo's sign-in (``POST /api/v1/dev/token``) is there."""

    oidc: OidcClient | None
    demo: bool


class OidcReadiness(msgspec.Struct):
    """The OpenID provider's part of ``GET /health/ready``."""

    issuer: str
    keys_loaded: bool
    keys: int
    age: float | None
    """Seconds since the keys were fetched."""
    error: str | None
    """The last fetch's failure; null once one succeeds."""


class DevTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    sub: str
    roles: list[str]
    groups: list[str] = []
    expires_in: float = 3600


class DevToken(msgspec.Struct):
    token: str
    expires_at: float


class Simulated(msgspec.Struct):
    test_id: str


_ENCODER = msgspec.json.Encoder()


def json(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(_ENCODER.encode(body), status_code=status, media_type="application/json")
