"""Settings: read once from the environment (contract section 1), then passed explicitly."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from secstream.errors import ConfigError

T = TypeVar("T")

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_FLAG_ONLY = frozenset({"demo"})
"""Set by a flag alone: the demo (dev tokens for anyone) is never on by environment."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    """None: start the embedded Redis under ``data_dir``."""
    data_dir: Path = Path(".secstream")
    demo: bool = False
    key_prefix: str = "secstream"
    jwt_secret: str | None = None
    jwt_public_key_file: Path | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
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
    publish_rate: float = 1000.0
    publish_burst: int = 2000
    critical_retention_seconds: int = 604_800
    max_connections: int = 10_000
    handshake_rate: float = 50.0
    """Handshakes per second per client address (burst: twice that)."""
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
                "SECSTREAM_REDIS_URL", "must start with redis://, rediss:// or unix://"
            )
        if self.jwt_secret is None and self.jwt_public_key_file is None and not self.demo:
            raise ConfigError(
                "SECSTREAM_JWT_SECRET",
                "no JWT key: set SECSTREAM_JWT_SECRET or SECSTREAM_JWT_PUBLIC_KEY_FILE, "
                "or run with --demo",
            )
        if self.jwt_public_key_file is not None and not self.jwt_public_key_file.is_file():
            raise ConfigError("SECSTREAM_JWT_PUBLIC_KEY_FILE", "no such file")
        positive = (
            "heartbeat_interval", "heartbeat_timeout", "client_rate", "client_burst",
            "retention_seconds", "retention_maxlen", "replay_limit", "trim_interval",
            "max_queue_bytes", "publish_rate", "publish_burst",
            "critical_retention_seconds", "max_connections", "handshake_rate",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"SECSTREAM_{name.upper()}", "must be greater than 0")
        if self.token_expiry_warning < 0:
            raise ConfigError("SECSTREAM_TOKEN_EXPIRY_WARNING", "must not be negative")
        if not self.key_prefix or any(c in self.key_prefix for c in " {}"):
            raise ConfigError("SECSTREAM_KEY_PREFIX", "must be non-empty, without spaces or braces")
        self._validate_observability()
        if not 0 <= self.port <= 65535:
            raise ConfigError("SECSTREAM_PORT", "must be a port number")


    def _validate_observability(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ConfigError("SECSTREAM_LOG_FORMAT", "must be text or json")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("SECSTREAM_LOG_LEVEL", "must be debug, info, warning or error")
        if self.audit_retention_seconds <= 0:
            raise ConfigError("SECSTREAM_AUDIT_RETENTION_SECONDS", "must be greater than 0")
        if self.status_interval < 0:
            raise ConfigError("SECSTREAM_STATUS_INTERVAL", "must not be negative")


def _parse(key: str, raw: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(key, f"cannot parse {raw!r}: {exc}") from None


def _positive_int(raw: str) -> int:
    return int(raw.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "port": _positive_int,
    "data_dir": Path,
    "jwt_public_key_file": Path,
    "static_dir": Path,
    "heartbeat_interval": float,
    "heartbeat_timeout": float,
    "token_expiry_warning": float,
    "client_rate": float,
    "client_burst": _positive_int,
    "retention_seconds": _positive_int,
    "retention_maxlen": _positive_int,
    "replay_limit": _positive_int,
    "trim_interval": float,
    "max_queue_bytes": _positive_int,
    "publish_rate": float,
    "publish_burst": _positive_int,
    "critical_retention_seconds": _positive_int,
    "max_connections": _positive_int,
    "handshake_rate": float,
    "log_format": lambda raw: raw.strip().lower(),
    "log_level": lambda raw: raw.strip().lower(),
    "audit_retention_seconds": _positive_int,
    "status_interval": float,
}
