"""Settings: read once from the environment (contract section 1), then passed explicitly."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from secstream.errors import ConfigError

T = TypeVar("T")

_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s]+")
SENTINEL_SCHEME = "redis+sentinel://"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)
_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$"
)
_MASTER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_SENTINELS = 16
DEFAULT_OIDC_SCOPE = "openid profile offline_access"
SECSTREAM_ROLES: frozenset[str] = frozenset({"admin", "analyst", "viewer", "publisher"})
"""The role table's names (contract section 2); a ROLE_MAP entry must map to one."""
MAX_ROLE_MAP_ENTRIES = 256
MAX_CLAIM_PATH = 256
MAX_ROLE_NAME = 256
_FLAG_ONLY = frozenset({"demo"})
"""Set by a flag alone: the demo (dev tokens for anyone) is never on by environment."""


@dataclasses.dataclass(frozen=True, slots=True)
class SentinelURL:
    """``redis+sentinel://[[user]:password@]host:port[,host:port]/<master>[/<db>]``.

    The password (and user) are the data nodes'; the sentinels are asked without one.
    """

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Raises ValueError saying what is wrong."""
        if not url.startswith(SENTINEL_SCHEME):
            raise ValueError(f"must start with {SENTINEL_SCHEME}")
        rest = url[len(SENTINEL_SCHEME) :]
        if "?" in rest or "#" in rest:
            raise ValueError("takes no query or fragment")
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username, password = unquote(user) or None, unquote(secret) if colon else None
        sentinels = []
        for item in hosts.split(","):
            match = _HOST_PORT.match(item)
            if match is None or not 0 < int(match["port"]) <= 65535:
                raise ValueError(f"{item!r} is not host:port")
            sentinels.append((match["v6"] or match["host"], int(match["port"])))
        if len(sentinels) > MAX_SENTINELS:
            raise ValueError(f"at most {MAX_SENTINELS} sentinels")
        master, _, db = path.partition("/")
        if not _MASTER_NAME.match(master):
            raise ValueError("needs /<master name> after the sentinels ([A-Za-z0-9_.-])")
        if db and not (db.isdigit() and int(db) < 2**16):
            raise ValueError(f"the database {db!r} is not a number")
        return cls(tuple(sentinels), master, int(db or 0), username, password)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    """None: start the embedded Redis under ``data_dir``."""
    min_replicas: int = 0
    """Replicas that must confirm a published event (Redis ``WAIT``, 1 s) before 202."""
    data_dir: Path = Path(".secstream")
    demo: bool = False
    key_prefix: str = "secstream"
    jwt_secret: str | None = None
    jwt_public_key_file: Path | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = 0.0
    """Seconds of clock skew allowed on ``exp``/``nbf``."""
    # -- OpenID Connect and claims (issue 12) --
    oidc_issuer: str | None = None
    """An OpenID provider: its discovery document's ``jwks_uri`` gives the keys."""
    oidc_client_id: str | None = None
    """The public client the dashboard signs in with; served at ``GET /api/v1/config``."""
    oidc_scope: str = DEFAULT_OIDC_SCOPE
    """Scopes the dashboard asks for (Entra ID needs its API's scope here)."""
    roles_claim: str = "roles"
    groups_claim: str = "groups"
    role_map: tuple[tuple[str, str], ...] = ()
    """``(provider role, secstream role)`` pairs, applied before the role table."""
    heartbeat_interval: float = 20.0
    heartbeat_timeout: float = 10.0
    token_expiry_warning: float = 60.0
    client_rate: float = 20.0
    client_burst: int = 40
    retention_seconds: int = 86400
    retention_maxlen: int = 1_000_000
    replay_limit: int = 10_000
    trim_interval: float = 60.0
    max_queue_bytes: int = 1_048_576
    stall_timeout: float = 30.0
    publish_rate: float = 1000.0
    publish_burst: int = 2000
    critical_retention_seconds: int = 604_800
    max_connections: int = 10_000
    max_connections_per_user: int = 100
    """Open connections per token ``sub`` on one process; 0: no cap."""
    handshake_rate: float = 10.0
    """Refused handshakes per second per client address (burst: twice that)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses/CIDRs whose ``X-Forwarded-For``/``Forwarded`` name the client."""
    allowed_origins: tuple[str, ...] = ()
    """``Origin`` values a browser handshake may carry; empty: any."""
    max_event_bytes: int = 65536
    """Largest encoded event a publish accepts."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a request's headers."""
    max_pending_connections: int = 1000
    """Connections still sending their headers; past it the oldest is closed."""
    body_timeout: float = 60.0
    """Seconds a request's body may take to arrive after its headers."""
    static_dir: Path | None = None
    """The built front end; None: the package's ``web/`` folder."""
    # -- observability (issue 8) --
    log_format: str = "text"
    log_level: str = "info"
    audit_retention_seconds: int = 7_776_000
    status_interval: float = 30.0
    """Seconds between the service's own ``system.status`` events; 0: none."""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Read ``SECSTREAM_*`` variables; keyword overrides (CLI flags) win when not None.

        Raises ConfigError naming the variable when one does not parse.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in _FLAG_ONLY:
                continue
            key = f"SECSTREAM_{field.name.upper()}"
            raw = env.get(key)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(key, raw, _PARSERS.get(field.name, str))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.redis_url is not None and not self.redis_url.startswith(_REDIS_SCHEMES):
            raise ConfigError(
                "SECSTREAM_REDIS_URL",
                "must start with redis://, rediss://, unix:// or redis+sentinel://",
            )
        if self.redis_url is not None and self.redis_url.startswith(SENTINEL_SCHEME):
            try:
                SentinelURL.parse(self.redis_url)
            except ValueError as exc:
                raise ConfigError("SECSTREAM_REDIS_URL", str(exc)) from None
        if not 0 <= self.min_replicas <= 16:
            raise ConfigError("SECSTREAM_MIN_REPLICAS", "must be 0 to 16")
        keyed = (
            self.jwt_secret is not None
            or self.jwt_public_key_file is not None
            or self.oidc_issuer is not None
        )
        if not keyed and not self.demo:
            raise ConfigError(
                "SECSTREAM_JWT_SECRET",
                "no JWT key: set SECSTREAM_JWT_SECRET, SECSTREAM_JWT_PUBLIC_KEY_FILE or "
                "SECSTREAM_OIDC_ISSUER, or run with --demo",
            )
        if self.jwt_public_key_file is not None and not self.jwt_public_key_file.is_file():
            raise ConfigError("SECSTREAM_JWT_PUBLIC_KEY_FILE", "no such file")
        if self.demo and keyed:
            raise ConfigError(
                "SECSTREAM_OIDC_ISSUER" if self.oidc_issuer is not None else "SECSTREAM_JWT_SECRET",
                "--demo signs tokens with a random key of its own: unset "
                "SECSTREAM_JWT_SECRET, SECSTREAM_JWT_PUBLIC_KEY_FILE and SECSTREAM_OIDC_ISSUER "
                "to run the demo",
            )
        self._validate_oidc()
        if self.demo and not _is_loopback(self.host):
            raise ConfigError("--host", "--demo serves a loopback address only (127.0.0.1, ::1)")
        positive = (
            "heartbeat_interval", "heartbeat_timeout", "client_rate", "client_burst",
            "retention_seconds", "retention_maxlen", "replay_limit", "trim_interval",
            "max_queue_bytes", "stall_timeout", "publish_rate", "publish_burst",
            "critical_retention_seconds", "max_connections", "handshake_rate",
            "max_event_bytes", "header_timeout", "max_pending_connections", "body_timeout",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"SECSTREAM_{name.upper()}", "must be greater than 0")
        for name in ("token_expiry_warning", "jwt_leeway", "max_connections_per_user"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SECSTREAM_{name.upper()}", "must not be negative")
        for address in self.trusted_proxies:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ConfigError(
                    "SECSTREAM_TRUSTED_PROXIES", f"{address!r} is not an address or CIDR"
                ) from None
        for origin in self.allowed_origins:
            if not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    "SECSTREAM_ALLOWED_ORIGINS", f"{origin!r} is not scheme://host[:port]"
                )
        if not self.key_prefix or any(c in self.key_prefix for c in " {}"):
            raise ConfigError("SECSTREAM_KEY_PREFIX", "must be non-empty, without spaces or braces")
        self._validate_observability()
        if not 0 <= self.port <= 65535:
            raise ConfigError("SECSTREAM_PORT", "must be a port number")


    def _validate_oidc(self) -> None:
        if self.oidc_issuer is not None:
            problem = issuer_problem(self.oidc_issuer)
            if problem:
                raise ConfigError("SECSTREAM_OIDC_ISSUER", problem)
            if self.jwt_audience is None:
                raise ConfigError(
                    "SECSTREAM_JWT_AUDIENCE",
                    "is required with SECSTREAM_OIDC_ISSUER: the provider signs tokens for "
                    "other applications too; give this service's audience",
                )
        if self.oidc_client_id is not None:
            if self.oidc_issuer is None:
                raise ConfigError("SECSTREAM_OIDC_CLIENT_ID", "needs SECSTREAM_OIDC_ISSUER")
            if len(self.oidc_client_id) > MAX_ROLE_NAME or not self.oidc_client_id.isprintable():
                raise ConfigError("SECSTREAM_OIDC_CLIENT_ID", "must be printable, at most 256")
        scopes = self.oidc_scope.split()
        if "openid" not in scopes or len(self.oidc_scope) > 1024:
            raise ConfigError("SECSTREAM_OIDC_SCOPE", "must include openid (at most 1024 chars)")
        for name in ("roles_claim", "groups_claim"):
            problem = claim_path_problem(getattr(self, name))
            if problem:
                raise ConfigError(f"SECSTREAM_{name.upper()}", problem)
        for provider_role, role in self.role_map:
            if role not in SECSTREAM_ROLES:
                raise ConfigError(
                    "SECSTREAM_ROLE_MAP",
                    f"{provider_role!r} maps to {role!r}, not one of "
                    + ", ".join(sorted(SECSTREAM_ROLES)),
                )

    def _validate_observability(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ConfigError("SECSTREAM_LOG_FORMAT", "must be text or json")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("SECSTREAM_LOG_LEVEL", "must be debug, info, warning or error")
        if self.audit_retention_seconds <= 0:
            raise ConfigError("SECSTREAM_AUDIT_RETENTION_SECONDS", "must be greater than 0")
        if self.status_interval < 0:
            raise ConfigError("SECSTREAM_STATUS_INTERVAL", "must not be negative")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse(key: str, raw: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(key, f"cannot parse {raw!r}: {exc}") from None


def _positive_int(raw: str) -> int:
    return int(raw.strip())


def _finite(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def issuer_problem(issuer: str) -> str | None:
    """What is wrong with an issuer URL: https (plain http on a loopback host only), a
    host, no query, fragment or credentials."""
    try:
        parts = urlsplit(issuer)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return "is not a URL"
    if len(issuer) > 2048:
        return "is longer than 2048 characters"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL"
    if parts.scheme == "http" and not _is_loopback(host):
        return "must use https:// (plain http only on a loopback address, for tests)"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "takes no query, fragment or credentials"
    return None


def claim_path_problem(path: str) -> str | None:
    if not path or len(path) > MAX_CLAIM_PATH:
        return f"must be a claim name or dotted path, 1 to {MAX_CLAIM_PATH} characters"
    if path.startswith(".") or path.endswith(".") or ".." in path:
        return "has an empty part: write names joined by single dots (realm_access.roles)"
    return None


def _role_map(raw: str) -> tuple[tuple[str, str], ...]:
    """``provider-role=secstream-role,...``; a provider role may be listed more than once."""
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        provider_role, eq, role = (part.strip() for part in item.partition("="))
        if not eq or not provider_role or not role:
            raise ValueError(f"{item.strip()!r} is not provider-role=secstream-role")
        if len(provider_role) > MAX_ROLE_NAME or "=" in role:
            raise ValueError(f"{item.strip()!r} is not provider-role=secstream-role")
        pairs.append((provider_role, role))
    if len(pairs) > MAX_ROLE_MAP_ENTRIES:
        raise ValueError(f"at most {MAX_ROLE_MAP_ENTRIES} entries")
    return tuple(pairs)


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "port": _positive_int,
    "min_replicas": _positive_int,
    "data_dir": Path,
    "jwt_public_key_file": Path,
    "static_dir": Path,
    "heartbeat_interval": _finite,
    "heartbeat_timeout": _finite,
    "token_expiry_warning": _finite,
    "client_rate": _finite,
    "client_burst": _positive_int,
    "retention_seconds": _positive_int,
    "retention_maxlen": _positive_int,
    "replay_limit": _positive_int,
    "trim_interval": _finite,
    "max_queue_bytes": _positive_int,
    "stall_timeout": _finite,
    "publish_rate": _finite,
    "publish_burst": _positive_int,
    "critical_retention_seconds": _positive_int,
    "max_connections": _positive_int,
    "handshake_rate": _finite,
    "jwt_leeway": _finite,
    "max_connections_per_user": _positive_int,
    "trusted_proxies": _comma_list,
    "oidc_issuer": lambda raw: raw.strip(),
    "oidc_client_id": lambda raw: raw.strip(),
    "oidc_scope": lambda raw: " ".join(raw.split()),
    "roles_claim": lambda raw: raw.strip(),
    "groups_claim": lambda raw: raw.strip(),
    "role_map": _role_map,
    "allowed_origins": _comma_list,
    "max_event_bytes": _positive_int,
    "header_timeout": _finite,
    "max_pending_connections": _positive_int,
    "body_timeout": _finite,
    "log_format": lambda raw: raw.strip().lower(),
    "log_level": lambda raw: raw.strip().lower(),
    "audit_retention_seconds": _positive_int,
    "status_interval": _finite,
}
