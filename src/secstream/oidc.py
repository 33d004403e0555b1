"""An OpenID provider's signing keys: discovery, the JWKS cache, rotation.

``SECSTREAM_OIDC_ISSUER`` names the provider. At start ``run`` fetches
``<issuer>/.well-known/openid-configuration`` (checked with authlib's
``OpenIDProviderMetadata``; its ``issuer`` must equal the setting exactly), then the
document's ``jwks_uri``, and keeps its public signature keys (RS*, PS*, ES*). Until
that succeeds it retries with a backoff capped at ``retry_cap`` seconds and the
service is not ready. Afterwards the keys are fetched again:

- on their age: the JWKS answer's ``Cache-Control: max-age`` bounded to
  [``min_age``, ``max_age``], or ``default_age`` without one;
- when a token names a ``kid`` no key has (a rotation): at most once per
  ``unknown_kid_interval`` seconds, and concurrent tokens share one fetch, so forged
  ``kid`` values cannot make this process hammer the provider.

A failed refresh keeps the keys already held (they keep working while the provider
is down), is logged at most once a minute, and is counted in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from authlib.oidc.discovery import OpenIDProviderMetadata

from secstream.auth import VerifyKey, provider_keys

logger = logging.getLogger(__name__)

MAX_DISCOVERY_BYTES: Final = 64 * 1024
MAX_JWKS_BYTES: Final = 256 * 1024
FETCH_TIMEOUT: Final = 10.0
"""Seconds one fetch (connect, headers and body together) may take."""
UNKNOWN_KID_INTERVAL: Final = 30.0
MIN_AGE: Final = 300.0
MAX_AGE: Final = 86_400.0
DEFAULT_AGE: Final = 3600.0
RETRY_FIRST: Final = 1.0
RETRY_CAP: Final = 30.0
LOG_EVERY: Final = 60.0
_MAX_AGE_RE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d{1,10})\"?", re.IGNORECASE)
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.\-]+(?::\d{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")


class FetchError(Exception):
    """The provider did not give a usable answer; the message says what, for operators."""


def origin_of(url: object) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, or None (also for anything that could
    break a header it is written into)."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower().rpartition('@')[2]}"
    return origin if _ORIGIN_RE.match(origin) else None


class OidcKeys:
    """The key source of ``auth.Authenticator`` for one OpenID provider."""

    def __init__(
        self,
        issuer: str,
        *,
        unknown_kid_interval: float = UNKNOWN_KID_INTERVAL,
        min_age: float = MIN_AGE,
        max_age: float = MAX_AGE,
        default_age: float = DEFAULT_AGE,
        retry_first: float = RETRY_FIRST,
        retry_cap: float = RETRY_CAP,
        timeout: float = FETCH_TIMEOUT,
        on_refresh: Callable[[str], None] | None = None,
    ) -> None:
        """``on_refresh(outcome)``: called after every JWKS fetch, ``ok`` or ``failed``."""
        self._issuer = issuer
        self.discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        self.metadata: dict[str, Any] | None = None
        self._by_alg: dict[str, tuple[VerifyKey, ...]] = {}
        self._kids: frozenset[str] = frozenset()
        self.key_count = 0
        self.error: str | None = None
        """The last failure, None once a fetch succeeds."""
        self.fetched_at: float | None = None
        """``time.monotonic()`` of the last successful JWKS fetch."""
        self._next_age = default_age
        self._unknown_kid_interval = unknown_kid_interval
        self._last_unknown_kid: float | None = None
        self._ages = (min_age, max_age, default_age)
        self._retry = (retry_first, retry_cap)
        self._timeout = timeout
        self._on_refresh = on_refresh
        self._inflight: asyncio.Task[None] | None = None
        self._failures_unlogged = 0
        self._failure_logged: float | None = None
        """When a failure was last logged; None: the next one is logged at once."""
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
            headers={"Accept": "application/json"},
            # HTTPS_PROXY / NO_PROXY and SSL_CERT_FILE / SSL_CERT_DIR apply: a provider
            # behind the company's egress proxy, or with a certificate of an internal CA.
            trust_env=True,
        )

    # -- what auth.Authenticator reads ---------------------------------------------------

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def loaded(self) -> bool:
        return self.fetched_at is not None

    def keys(self, alg: str) -> tuple[VerifyKey, ...]:
        return self._by_alg.get(alg, ())

    def age(self) -> float | None:
        """Seconds since the keys were last fetched; None before the first time."""
        return None if self.fetched_at is None else time.monotonic() - self.fetched_at

    async def refresh_for(self, kid: str) -> None:
        if kid in self._kids:
            return
        if self._inflight is not None:  # a fetch is under way: its answer may hold the kid
            await self._join()
            return
        now = time.monotonic()
        if (
            self._last_unknown_kid is not None
            and now - self._last_unknown_kid < self._unknown_kid_interval
        ):
            return
        self._last_unknown_kid = now
        await self._fetch(discover=False)

    # -- the browser's view (CSP) --------------------------------------------------------

    def browser_origins(self) -> tuple[list[str], list[str]]:
        """(origins the dashboard fetches from, origins it navigates or posts forms to):
        the issuer's, and once discovered, those of the endpoints a browser client uses."""
        issuer = origin_of(self._issuer)
        connect = [issuer] if issuer else []
        forms = list(connect)
        meta = self.metadata or {}
        for name in ("token_endpoint", "userinfo_endpoint", "revocation_endpoint"):
            origin = origin_of(meta.get(name))
            if origin and origin not in connect:
                connect.append(origin)
        for name in ("authorization_endpoint", "end_session_endpoint"):
            origin = origin_of(meta.get(name))
            if origin and origin not in forms:
                forms.append(origin)
        return connect, forms

    # -- background -------------------------------------------------------------------------

    async def run(self) -> None:
        """Load the keys (retrying until the provider answers), then keep them fresh."""
        first, cap = self._retry
        delay = first
        while True:
            try:
                await self._fetch(discover=True, raise_errors=True)
            except FetchError:
                await asyncio.sleep(delay * random.uniform(0.8, 1.0))
                delay = min(delay * 2, cap)
                continue
            delay = first
            await asyncio.sleep(self._next_age)

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(BaseException):
                await self._inflight
        await self._client.aclose()

    # -- fetching ---------------------------------------------------------------------------

    async def _join(self) -> None:
        assert self._inflight is not None
        with contextlib.suppress(FetchError):
            await asyncio.shield(self._inflight)

    async def _fetch(self, *, discover: bool, raise_errors: bool = False) -> None:
        """One fetch at a time: a caller arriving during one shares its outcome."""
        task = self._inflight
        if task is None:
            task = asyncio.ensure_future(self._load(discover or self.metadata is None))
            self._inflight = task
            task.add_done_callback(self._landed)
        if raise_errors:
            await asyncio.shield(task)
        else:
            await self._join()

    def _landed(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here; callers see it through shield

    async def _load(self, discover: bool) -> None:
        try:
            if discover:
                self.metadata = await self._discover()
            assert self.metadata is not None
            await self._load_jwks(self.metadata["jwks_uri"])
        except FetchError as exc:
            self._failed(str(exc))
            raise
        except Exception as exc:  # a bug or an odd answer must not kill the loop
            self._failed(f"unexpected error: {type(exc).__name__}: {exc}")
            raise FetchError(str(exc)) from exc

    async def _discover(self) -> dict[str, Any]:
        document = await self._get_json(self.discovery_url, MAX_DISCOVERY_BYTES)
        if not isinstance(document, dict):
            raise FetchError(f"{self.discovery_url}: not a JSON object")
        metadata = OpenIDProviderMetadata(document)
        try:
            metadata.validate()
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise FetchError(f"{self.discovery_url}: invalid discovery document: {exc}") from None
        if document.get("issuer") != self._issuer:
            raise FetchError(
                f"{self.discovery_url}: its issuer {document.get('issuer')!r} is not "
                f"SECSTREAM_OIDC_ISSUER {self._issuer!r} (they must be equal, to the slash)"
            )
        return document

    async def _load_jwks(self, url: str) -> None:
        response, document = await self._get(url, MAX_JWKS_BYTES)
        try:
            keys, skipped = provider_keys(document)
        except ValueError as exc:
            raise FetchError(f"{url}: {exc}") from None
        if not keys:
            raise FetchError(f"{url}: no public RS/PS/ES signature key in the key set")
        by_alg: dict[str, tuple[VerifyKey, ...]] = {}
        for vk in keys:
            by_alg[vk.alg] = (*by_alg.get(vk.alg, ()), vk)
        kids = frozenset(vk.kid for vk in keys if vk.kid is not None)
        rotated = self.loaded and kids != self._kids
        self._by_alg, self._kids, self.key_count = by_alg, kids, len(keys)
        self._next_age = self._age_of(response.headers.get("cache-control"))
        first = self.fetched_at is None
        self.fetched_at = time.monotonic()
        recovered = self.error is not None
        self.error = None
        self._failures_unlogged = 0
        self._failure_logged = None
        if self._on_refresh is not None:
            self._on_refresh("ok")
        if first or recovered or rotated:
            logger.info(
                "OIDC signing keys loaded",
                extra={
                    "issuer": self._issuer, "keys": len(keys), "skipped": skipped,
                    "kids": sorted(kids), "refresh_in": round(self._next_age),
                },
            )

    def _age_of(self, cache_control: str | None) -> float:
        low, high, default = self._ages
        match = _MAX_AGE_RE.search(cache_control or "")
        if match is None:
            return default
        return min(max(float(match.group(1)), low), high)

    async def _get_json(self, url: str, limit: int) -> object:
        return (await self._get(url, limit))[1]

    async def _get(self, url: str, limit: int) -> tuple[httpx.Response, object]:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise FetchError(f"{url} answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > limit:
                        raise FetchError(f"{url}: answer over {limit} bytes, refused")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > limit:
                            raise FetchError(f"{url}: answer over {limit} bytes, refused")
        except TimeoutError:
            raise FetchError(f"{url} did not answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
        try:
            return response, json.loads(body)
        except ValueError:
            raise FetchError(f"{url}: the answer is not JSON") from None

    def _failed(self, reason: str) -> None:
        self.error = reason
        if self._on_refresh is not None:
            self._on_refresh("failed")
        now = time.monotonic()
        self._failures_unlogged += 1
        if self._failure_logged is not None and now - self._failure_logged < LOG_EVERY:
            return
        state = "keeping the keys held" if self.loaded else "no keys yet: tokens get 503"
        logger.warning(
            "cannot fetch the OIDC provider's keys (%s); %s; retrying",
            reason,
            state,
            extra={"issuer": self._issuer, "failures": self._failures_unlogged},
        )
        self._failures_unlogged = 0
        self._failure_logged = now
