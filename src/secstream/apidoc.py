"""AsyncAPI 3 of ``/ws`` and OpenAPI 3.1 of the HTTP API, from the msgspec types (section 9).

``secstream schema`` prints them; the copies under ``docs/api/`` and the TypeScript
types of the client are generated from the same output, and a test fails when any of
them is stale. Every schema comes from ``msgspec.json.schema_components`` of the structs
the service decodes and encodes; only the surrounding document is written here.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal, get_args

import msgspec

from secstream import __version__, httpbodies, protocol
from secstream.eventdata import EVENT_DATA
from secstream.events import EVENT_TYPES, Priority

_SCHEMAS: Final = "#/components/schemas/{name}"
CLIENT_FRAMES: Final = get_args(protocol.ClientMessage)
SERVER_FRAMES: Final = get_args(protocol.ServerMessage)
_DESCRIPTION: Final = (
    "Real-time events of SEC-TESTER (contract v2). Connect to /ws with a JWT "
    "(`Sec-WebSocket-Protocol: bearer, <token>` or `?token=`); the server sends `welcome`, "
    "then the client subscribes. Event frames have `type: \"event\"`; each event type's "
    "message below gives its `data` where the service knows it (publishers may add fields)."
)


def _title(event_type: str) -> str:
    return "".join(p.capitalize() for p in event_type.replace(".", "_").split("_")) + "Event"


def typed_events() -> list[type[msgspec.Struct]]:
    """One envelope struct per event type, its ``event_type`` and ``data`` narrowed."""
    out: list[type[msgspec.Struct]] = []
    for event_type in EVENT_TYPES:
        data = EVENT_DATA[event_type] or dict[str, Any]
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            ("id", str),
            ("event_type", Literal[event_type]),
            ("timestamp", str),
            ("priority", Priority),
            ("data", data),
            ("user_id", str | None),
            ("correlation_id", str | None),
            ("traceparent", str | None, None),
        ]
        out.append(
            msgspec.defstruct(
                _title(event_type), fields, bases=(protocol.Message,), tag="event",
                omit_defaults=False, module=__name__,
            )
        )
    return out


def _components(types: list[Any]) -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(types, ref_template=_SCHEMAS)
    return dict(sorted(schemas.items()))


def _message(name: str, summary: str) -> dict[str, Any]:
    return {"name": name, "summary": summary, "contentType": "application/json",
            "payload": {"$ref": _SCHEMAS.format(name=name)}}


def _doc(cls: type) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0]


def asyncapi() -> dict[str, Any]:
    events = typed_events()
    frames = [*CLIENT_FRAMES, *SERVER_FRAMES]
    messages: dict[str, Any] = {}
    for cls in frames:
        tag = cls.__struct_config__.tag
        messages[cls.__name__] = _message(cls.__name__, f"`{tag}` frame. {_doc(cls)}")
    for cls in events:
        messages[cls.__name__] = _message(cls.__name__, "An event of this type.")
    refs = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}

    def operation(action: str, names: list[str], summary: str) -> dict[str, Any]:
        return {
            "action": action,
            "summary": summary,
            "channel": {"$ref": "#/channels/ws"},
            "messages": [{"$ref": f"#/channels/ws/messages/{n}"} for n in names],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {"title": "secstream /ws", "version": __version__, "description": _DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "localhost:8000", "protocol": "ws",
                      "description": "secstream serve --demo"},
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "title": "Event stream",
                "messages": refs,
                "bindings": {"ws": {"method": "GET", "query": {
                    "type": "object",
                    "properties": {"token": {"type": "string"}, "client_id": {"type": "string"}},
                }}},
            }
        },
        "operations": {
            "receiveClientFrames": operation(
                "receive", [c.__name__ for c in CLIENT_FRAMES], "Frames a client sends."
            ),
            "sendServerFrames": operation(
                "send", [c.__name__ for c in SERVER_FRAMES], "Frames the server sends."
            ),
            "sendEvents": operation(
                "send", [c.__name__ for c in events], "Events, by type (`type: \"event\"`)."
            ),
        },
        "components": {
            "messages": messages,
            "schemas": _components([*frames, *events]),
        },
    }


# -- OpenAPI ---------------------------------------------------------------------------


def _body(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": _SCHEMAS.format(name=name)}}}}


def _answer(description: str, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if name is not None:
        out.update(_body(name))
    return out


def _problems(*codes: int) -> dict[str, Any]:
    words = {400: "Bad query", 401: "No or bad token", 403: "Role or audience refuses",
             404: "Not found", 409: "Conflict", 413: "Body too large", 422: "Invalid body",
             429: "Rate limited (Retry-After)", 503: "The event log is unavailable"}
    return {str(c): _answer(words[c], "Problem") for c in codes}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_BEARER: Final[list[dict[str, list[str]]]] = [{"bearer": []}]


def openapi() -> dict[str, Any]:
    publish = {
        "summary": "Publish one event",
        "security": _BEARER,
        "parameters": [
            {"name": "Idempotency-Key", "in": "header", "required": False,
             "schema": {"type": "string"}},
            {"name": "traceparent", "in": "header", "required": False,
             "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, **_body("PublishRequest")},
        "responses": {"202": _answer("Appended", "Accepted"),
                      **_problems(401, 403, 413, 422, 429, 503)},
    }
    batch = {
        "summary": "Publish events, all or nothing",
        "security": _BEARER,
        "requestBody": {"required": True, **_body("BatchRequest")},
        "responses": {"202": _answer("Appended", "BatchAccepted"),
                      **_problems(401, 403, 413, 422, 429, 503)},
    }
    poll = {
        "summary": "Polling fallback: events after `since`, filtered as the socket would be",
        "security": _BEARER,
        "parameters": [
            _query("since", {"type": "string"}, "an event id or \"0\"; none: no events"),
            _query("types", {"type": "string"}, "comma list of types or patterns"),
            _query("test_id", {"type": "string"}, "only this test's events"),
            _query("limit", {"type": "integer", "minimum": 1}, "at most this many"),
            _query("wait", {"type": "number", "minimum": 0, "maximum": 30},
                   "long-poll seconds"),
        ],
        "responses": {"200": _answer("A page", "EventPage"), **_problems(400, 401, 403, 429, 503)},
    }
    cancel = {
        "summary": "Ask the run that owns a test to stop",
        "security": _BEARER,
        "parameters": [{"name": "test_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": False, **_body("CancelRequest")},
        "responses": {"202": _answer("Requested", "CancelAccepted"),
                      **_problems(401, 403, 404, 409, 413, 422, 429, 503)},
    }
    paths: dict[str, Any] = {
        "/api/v1/events": {"post": publish, "get": poll},
        "/api/v1/events/batch": {"post": batch},
        "/api/v1/connections": {"get": {
            "summary": "Live connections of every node (admin)", "security": _BEARER,
            "responses": {"200": _answer("The connections", "Connections"),
                          **_problems(401, 403, 503)},
        }},
        "/api/v1/connections/{connection_id}": {"delete": {
            "summary": "Close a connection, on whichever node holds it, with 4003 (admin)",
            "security": _BEARER,
            "parameters": [{"name": "connection_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"204": _answer("Closed"), **_problems(401, 403, 404, 503)},
        }},
        "/api/v1/audit": {"get": {
            "summary": "Audit records, oldest first (admin)", "security": _BEARER,
            "parameters": [
                _query("since", {"type": "string"}, "a record id: records after it"),
                _query("limit", {"type": "integer", "minimum": 1}, "at most this many"),
                _query("action", {"type": "string"}, "comma list of actions"),
                _query("sub", {"type": "string"}, "only this token subject's records"),
            ],
            "responses": {"200": _answer("Records", "AuditPage"),
                          **_problems(400, 401, 403, 503)},
        }},
        "/api/v1/tests/{test_id}/cancel": {"post": cancel},
        "/api/v1/config": {"get": {
            "summary": "How the dashboard signs in: the OpenID provider and public client "
                       "(code flow with PKCE), or null; whether the demo runs (public)",
            "responses": {"200": _answer("The sign-in settings", "ClientConfig")},
        }},
        "/api/v1/dev/token": {"post": {
            "summary": "Mint a token (--demo only)",
            "requestBody": {"required": True, **_body("DevTokenRequest")},
            "responses": {"200": _answer("A token", "DevToken"), **_problems(404, 413, 422)},
        }},
        "/api/v1/dev/simulate": {"post": {
            "summary": "Start a simulated test (--demo only)", "security": _BEARER,
            "responses": {"202": _answer("Started", "Simulated"), **_problems(401, 404)},
        }},
        "/health/live": {"get": {"summary": "The process runs",
                                 "responses": {"200": _answer("Alive", "Liveness")}}},
        "/health/ready": {"get": {"summary": "Redis answers, connections are accepted and "
                                             "the OpenID provider's keys (if any) are loaded",
                                  "responses": {"200": _answer("Ready", "Readiness"),
                                                "503": _answer("Not ready", "Readiness")}}},
        "/metrics": {"get": {"summary": "Prometheus text", "responses": {"200": {
            "description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}},
        }}}},
    }
    types = [
        protocol.PublishRequest, protocol.BatchRequest, httpbodies.Problem,
        httpbodies.Accepted, httpbodies.BatchAccepted, httpbodies.EventPage,
        httpbodies.Liveness, httpbodies.Readiness, httpbodies.Connections, httpbodies.AuditPage,
        httpbodies.CancelRequest, httpbodies.CancelAccepted, httpbodies.DevTokenRequest,
        httpbodies.DevToken, httpbodies.Simulated, httpbodies.ClientConfig,
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "secstream HTTP API", "version": __version__,
                 "description": "Contract v2, section 5."},
        "paths": paths,
        "components": {
            "schemas": _components(types),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }


def render(document: dict[str, Any]) -> str:
    """The text checked in under ``docs/api/``: stable key order, two-space indent."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
