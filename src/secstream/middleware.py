"""ASGI middleware: security headers on every HTTP response, and the client address
named by a trusted proxy's ``Forwarded`` header.

uvicorn itself applies ``X-Forwarded-For`` from ``SECSTREAM_TRUSTED_PROXIES`` (see
``server``); ``Forwarded`` (RFC 7239) is handled here, for the same proxies only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""No inline script; styles may be inline (React's ``style`` props); never framed."""
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(addresses: Iterable[str]) -> tuple[Network, ...]:
    """``SECSTREAM_TRUSTED_PROXIES`` entries (addresses or CIDRs) as networks."""
    return tuple(ipaddress.ip_network(a, strict=False) for a in addresses)


def trusted(host: str | None, proxies: tuple[Network, ...]) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(address in net for net in proxies)


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_FOR = re.compile(r'for="?\[?([0-9A-Fa-f.:]+)\]?(?::\d+)?"?', re.IGNORECASE)


class ForwardedHeader:
    """Sets the client address from ``Forwarded: for=...`` when the peer is a trusted
    proxy and sent no ``X-Forwarded-For``: the right-most ``for`` that is not itself a
    trusted proxy (what the first untrusted hop said, not what the client wrote)."""

    def __init__(self, app: ASGIApp, proxies: tuple[Network, ...]) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            host = client[0] if client else None
            headers = dict(scope["headers"])
            forwarded = headers.get(b"forwarded")
            if forwarded and b"x-forwarded-for" not in headers and trusted(host, self.proxies):
                hops = _FOR.findall(forwarded.decode("latin-1"))
                for hop in reversed(hops):
                    if not _is_address(hop):
                        break
                    if not trusted(hop, self.proxies):
                        scope = {**scope, "client": (hop, 0)}
                        break
        await self.app(scope, receive, send)
