"""Exceptions and the contract's WebSocket close codes.

    ServiceError                 close code 1011
    ├── ConfigError              a setting that does not parse (``serve`` exits 2)
    ├── ProtocolError            a bad client frame: ``error`` code ``bad_request``
    ├── AuthError                401 at the handshake, ``invalid_token`` after it
    │   ├── Forbidden            403 at the handshake, ``forbidden`` after it
    │   └── KeysUnavailable      503: the OpenID provider's keys have not arrived yet
    ├── LogUnavailable           Redis does not answer: HTTP 503
    │   └── NotReplicated        fewer replicas than SECSTREAM_MIN_REPLICAS confirmed a write
    ├── EventInvalid             a publish body that fails validation: HTTP 422
    ├── TokenExpired             close 4001
    ├── HeartbeatTimeout         close 4002
    ├── ClosedByAdmin            close 4003
    ├── RateLimited              close 4008
    └── SlowConsumer             close 4009
"""

from __future__ import annotations

WS_1000_NORMAL_CLOSURE = 1000
WS_1001_GOING_AWAY = 1001
WS_1008_POLICY_VIOLATION = 1008
WS_1011_INTERNAL_ERROR = 1011
WS_4001_TOKEN_EXPIRED = 4001
WS_4002_HEARTBEAT_TIMEOUT = 4002
WS_4003_CLOSED_BY_ADMIN = 4003
WS_4008_RATE_LIMITED = 4008
WS_4009_SLOW_CONSUMER = 4009


class ServiceError(Exception):
    code: int = WS_1011_INTERNAL_ERROR


class ConfigError(ServiceError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class ProtocolError(ServiceError):
    """A client frame the server cannot act on."""

    error_code = "bad_request"


class AuthError(ServiceError):
    error_code = "invalid_token"
    status_code = 401


class Forbidden(AuthError):
    error_code = "forbidden"
    status_code = 403


class KeysUnavailable(AuthError):
    """The token needs the OpenID provider's keys and none are loaded yet: not the
    token's fault, so 503 (retry), never 401 (which tells a client to sign in again)."""

    error_code = "unavailable"
    status_code = 503


class LogUnavailable(ServiceError):
    """The event log (Redis) did not answer."""


class NotReplicated(LogUnavailable):
    """The primary holds the write, but fewer replicas than asked confirmed it in time."""

    def __init__(self, wanted: int, confirmed: int) -> None:
        super().__init__(f"{confirmed} of {wanted} replicas confirmed the write within 1 s")
        self.wanted = wanted
        self.confirmed = confirmed


class EventInvalid(ServiceError):
    """A published event failed validation; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class TokenExpired(ServiceError):
    code = WS_4001_TOKEN_EXPIRED


class HeartbeatTimeout(ServiceError):
    code = WS_4002_HEARTBEAT_TIMEOUT


class ClosedByAdmin(ServiceError):
    code = WS_4003_CLOSED_BY_ADMIN


class RateLimited(ServiceError):
    code = WS_4008_RATE_LIMITED


class SlowConsumer(ServiceError):
    code = WS_4009_SLOW_CONSUMER
