"""ASGI middleware: security headers on every HTTP response, and the client address
named by a trusted proxy's ``Forwarded`` header.

uvicorn itself applies ``X-Forwarded-For`` from ``SECSTREAM_TRUSTED_PROXIES`` (see
``server``); ``Forwarded`` (RFC 7239) is handled here, for the same proxies only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def content_security_policy(connect: Sequence[str] = (), forms: Sequence[str] = ()) -> str:
    """No inline script; styles may be inline (React's ``style`` props); never framed.

    ``connect``: origins besides 'self' that scripts may fetch from (an OpenID
    provider's discovery document and token endpoint); ``forms``: origins forms may
    post to (its authorization and sign-out endpoints). Origins only (``oidc.origin_of``).
    """
    connect_src = " ".join(("'self'", *connect))
    form_action = " ".join(("'self'", *forms))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data:; connect-src {connect_src}; object-src 'none'; "
        f"base-uri 'none'; form-action {form_action}; frame-ancestors 'none'"
    )


CONTENT_SECURITY_POLICY = content_security_policy()
OTHER_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    *OTHER_SECURITY_HEADERS,
)


class PolicyHeaders:
    """The security headers for the CSP ``policy()`` gives now, made again only when it
    changes (``SecurityHeaders``, and ``publish_route`` that answers past it)."""

    def __init__(self, policy: Callable[[], str] | None = None) -> None:
        """``policy``: the CSP now (it may change once a provider is discovered)."""
        self._policy = policy or (lambda: CONTENT_SECURITY_POLICY)
        self._cached: tuple[str, tuple[tuple[bytes, bytes], ...]] = ("", ())

    def __call__(self) -> tuple[tuple[bytes, bytes], ...]:
        policy = self._policy()
        if policy != self._cached[0]:
            headers = ((b"content-security-policy", policy.encode()), *OTHER_SECURITY_HEADERS)
            self._cached = (policy, headers)
        return self._cached[1]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, policy: Callable[[], str] | None = None) -> None:
        self.app = app
        self._headers = PolicyHeaders(policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        security_headers = self._headers()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in security_headers if k not in present]
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
