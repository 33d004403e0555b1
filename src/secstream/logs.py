"""Log output: one redacting formatter, text or JSON, on the one handler every logger reaches.

Redaction works on the finished line (message, ``extra`` fields, tracebacks alike), so
no token, signature or secret gets out whichever logger wrote it (uvicorn's access and
error logs, the websockets library's debug dump of a handshake, our own) and however
the query spelled it (``?token=``, ``?TOKEN=``, ``?%74oken=``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, Final, TextIO
from urllib.parse import unquote

LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
REDACTED: Final = "[redacted]"

_SECRET_PARAMS: Final = frozenset(
    {"token", "access_token", "id_token", "refresh_token", "jwt", "secret", "password", "key"}
)
_B64: Final = r"[A-Za-z0-9_\-]"
_DOT: Final = r"(?:\.|%2[eE])"
# A compact JWS/JWT (its header is base64 of ``{"``): percent-encoded dots too.
_JWT: Final = re.compile(rf"eyJ{_B64}{{4,}}{_DOT}{_B64}{{4,}}{_DOT}{_B64}*")
# The WebSocket subprotocol ``bearer.<jwt>`` and the ``Bearer <token>`` of an
# Authorization header (any case, quoted or not).
_BEARER: Final = re.compile(r"(?i)\b(bearer(?:\.|%2e|\s+))[^\s\"',;\\&]+")
# ``name=value`` in a query string or a form, the name in any spelling.
_PARAM: Final = re.compile(
    r"((?:^|(?<=[?&;\s\"'(]))[A-Za-z0-9%_.\-]{1,64})(=|%3[dD])([^&\s\"'\\]*)"
)
# ``"token": "..."`` in JSON (a ``refresh`` frame in the websockets debug dump) or a repr.
_FIELD: Final = re.compile(
    r"""(?i)(\\?["'](?:token|access_token|id_token|refresh_token|jwt|secret|password)"""
    r"""\\?["']\s*:\s*\\?["'])[^"'\\]+"""
)
_HEADER: Final = re.compile(r"(?i)\b(authorization|cookie|x-api-key)(\"?\s*[:=,]\s*\"?)[^\"\n]+")
# What each pattern cannot match without, lower case: a line without any skips it.
_HEADER_NAMES: Final = ("authorization", "cookie", "x-api-key")
_FIELD_NAMES: Final = ("token", "jwt", "secret", "password")
_PARAM_NAMES: Final = ("token", "jwt", "secret", "password", "key")

_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName", "color_message"}
"""Record attributes that are not ``extra`` (uvicorn's ANSI ``color_message`` included)."""


class Redactor:
    """Removes tokens, signatures and configured secrets from a line of text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        """A literal that must never appear (a JWT secret): at least 6 characters."""
        if secret and len(secret) >= 6 and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """Each pattern runs only on a line holding what it cannot match without (a
        line per publish or request at ``info``: the five scans cost more than the rest
        of writing it). A line that is not ASCII gets every scan: ``(?i)`` matches some
        non-ASCII letters (the long s, the Kelvin sign) that ``lower()`` does not map."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        if not text.isascii():
            return _redact_all(text)
        lower = text.lower()
        if any(name in lower for name in _HEADER_NAMES):
            text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        if any(name in lower for name in _FIELD_NAMES):
            text = _FIELD.sub(lambda m: m.group(1) + REDACTED, text)
        if "bearer" in lower:
            text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        if ("=" in text or "%3d" in lower) and (
            "%" in text or any(name in lower for name in _PARAM_NAMES)
        ):  # a secret parameter's name is in the line, or percent-encoded
            text = _PARAM.sub(_param, text)
        return _JWT.sub(REDACTED, text) if "eyJ" in text else text


def _redact_all(text: str) -> str:
    text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _FIELD.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _PARAM.sub(_param, text)
    return _JWT.sub(REDACTED, text)


def _param(match: re.Match[str]) -> str:
    name = unquote(unquote(match.group(1))).lower().lstrip("?&;")
    if name in _SECRET_PARAMS and match.group(3):
        return match.group(1) + match.group(2) + REDACTED
    return match.group(0)


REDACT: Final = Redactor()
"""The process's redactor; ``configure`` adds the configured secrets to it."""


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}


class RedactingFormatter(logging.Formatter):
    """Text (``extra`` appended as key=value) or one JSON object a line, then redacted."""

    def __init__(self, fmt: str = "text", redactor: Redactor = REDACT) -> None:
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.json = fmt == "json"
        self.redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self._json(record) if self.json else self._text(record))

    def _text(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = extra_fields(record)
        if not extra:
            return line
        head, sep, tail = line.partition("\n")
        pairs = " ".join(f"{k}={_short(v)}" for k, v in extra.items())
        return f"{head} {pairs}{sep}{tail}"

    def _json(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":"))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text


def _iso(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def configure(
    fmt: str = "text",
    level: str = "info",
    *,
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """One handler on the root logger; every other logger (uvicorn's included) reaches it.

    Loggers that keep handlers of their own (uvicorn's dictConfig, if it ran) lose
    them and propagate instead, so nothing is written around the redaction.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    for secret in secrets:
        REDACT.add_secret(secret)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets"):
        other = logging.getLogger(name)
        for old in list(other.handlers):
            other.removeHandler(old)
        other.propagate = True
        other.setLevel(logging.NOTSET)
    # httpx logs every request at INFO: the OIDC key fetches say what matters themselves.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    return handler
