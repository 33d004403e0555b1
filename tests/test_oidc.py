"""Signing in through an OpenID provider (issue 12), against a real one: the certified
``oidc-provider`` package run by ``frontend/e2e/oidc/provider.mjs`` (see oidc_provider.py).

Discovery, key rotation without restart, the unknown-``kid`` refresh limit, ``iss`` and
``aud``, claim paths and the role map, the provider down at start and later, and a
token from the provider's own sign-in opening a socket that receives an event.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import oidc_provider
from live import SUBPROTOCOL, LiveApp, hs256
from oidc_provider import AUDIENCE, CLIENT_ID, Provider
from secstream.auth import Authenticator
from secstream.claims import RoleMap
from secstream.errors import AuthError, KeysUnavailable
from secstream.oidc import MAX_JWKS_BYTES, OidcKeys, origin_of
from support import ServeProcess, eventually

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]

_missing = oidc_provider.available()
if _missing is not None:
    if os.environ.get("CI"):  # scripts/test installs node packages: never skip there
        raise RuntimeError(f"the OIDC provider tests cannot run: {_missing}")
    pytest.skip(f"the OIDC provider cannot run: {_missing}", allow_module_level=True)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    """A started provider; stopped at teardown (``stop()``/``start()`` keep its port)."""
    p = Provider(tmp_path / "provider")
    try:
        yield p.start()
    finally:
        p.stop()


def oidc_settings(provider: Provider, **more: Any) -> dict[str, Any]:
    return {
        "oidc_issuer": provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "jwt_audience": AUDIENCE,
        "roles_claim": "realm_access.roles",
        "role_map": (("soc-lead", "admin"), ("soc-analyst", "analyst")),
        **more,
    }


@asynccontextmanager
async def oidc_app(
    live_app: LiveAppFactory, provider: Provider, **more: Any
) -> AsyncIterator[LiveApp]:
    """The app with ``provider`` configured, once it has loaded the provider's keys."""
    async with live_app(**oidc_settings(provider, **more)) as app:
        oidc = app.service.oidc
        assert oidc is not None
        await eventually(lambda: oidc.loaded)
        yield app


@asynccontextmanager
async def key_source(provider: Provider, **kwargs: Any) -> AsyncIterator[OidcKeys]:
    """``OidcKeys`` running against ``provider``, its first key set loaded."""
    keys = OidcKeys(provider.issuer, **kwargs)
    async with anyio.create_task_group() as tg:
        tg.start_soon(keys.run)
        try:
            await eventually(lambda: keys.loaded)
            yield keys
        finally:
            tg.cancel_scope.cancel()
            await keys.aclose()


def authenticator(keys: OidcKeys, **kwargs: Any) -> Authenticator:
    kwargs.setdefault("audience", AUDIENCE)
    kwargs.setdefault("roles_claim", "realm_access.roles")
    kwargs.setdefault("role_map", RoleMap([("soc-lead", "admin")]))
    return Authenticator(key_source=keys, **kwargs)


async def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(AuthError) as info:
        await auth.verify(token)
    return str(info.value)


async def handshake_status(url: str, token: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            url, subprotocols=[SUBPROTOCOL, f"bearer.{token}"], open_timeout=10  # type: ignore[list-item]
        ):
            pass
    return info.value.response.status_code


# -- discovery and verification -----------------------------------------------------------


async def test_discovery_loads_the_keys_and_tokens_verify(provider: Provider) -> None:
    before = provider.stats()
    async with key_source(provider) as keys:
        stats = provider.stats()
        assert stats["discovery"] - before["discovery"] == 1
        assert stats["jwks"] - before["jwks"] == 1
        assert keys.metadata is not None and keys.metadata["issuer"] == provider.issuer
        assert keys.key_count == 1 and keys.error is None
        assert [vk.kid for vk in keys.keys("RS256")] == ["key-1"]
        age = keys.age()
        assert age is not None and 0 <= age < 10
        auth = authenticator(keys)
        principal = await auth.verify(
            provider.mint({"realm_access": {"roles": ["soc-lead"]}, "groups": ["blue-team"]})
        )
        assert principal.sub == "alice"
        assert principal.roles == {"admin"}
        assert principal.groups == {"blue-team"}


async def test_wrong_issuer_or_audience_is_refused(provider: Provider) -> None:
    async with key_source(provider) as keys:
        auth = authenticator(keys)
        roles = {"realm_access": {"roles": ["soc-lead"]}}
        assert (await auth.verify(provider.mint(roles))).sub == "alice"
        assert await refused(auth, provider.mint(roles, iss="https://evil.example")) == (
            "invalid issuer"
        )
        assert await refused(auth, provider.mint(roles, iss=None)) == "invalid issuer"
        assert await refused(auth, provider.mint(roles, iss=provider.issuer + "/")) == (
            "invalid issuer"
        )
        assert await refused(auth, provider.mint(roles, aud="another-app")) == (
            "invalid audience"
        )
        assert await refused(auth, provider.mint(roles, aud=None)) == "invalid audience"
        assert await refused(auth, provider.mint(roles, expires_in=-5)) == "token expired"
        # A stranger's RSA key under the provider's kid: the signature fails.
        stranger = oidc_provider.new_key("key-1")
        assert await refused(auth, provider.mint(roles, key=stranger)) == "bad signature"
        # No HMAC without a secret, and never "none".
        assert await refused(auth, hs256({"sub": "alice", "exp": time.time() + 60})) == (
            "unsupported algorithm"
        )
        assert await refused(auth, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.") == (
            "unsupported algorithm"
        )


async def test_an_issuer_that_differs_from_the_discovery_document_is_not_trusted(
    provider: Provider,
) -> None:
    keys = OidcKeys(provider.issuer + "/", retry_first=0.05, retry_cap=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(keys.run)
        await eventually(lambda: keys.error is not None)
        tg.cancel_scope.cancel()
    await keys.aclose()
    assert not keys.loaded
    assert "is not SECSTREAM_OIDC_ISSUER" in keys.error
    auth = authenticator(keys)
    with pytest.raises(KeysUnavailable):
        await auth.verify(provider.mint())


# -- rotation and the refresh limit ----------------------------------------------------------


async def test_a_rotated_key_is_fetched_once_for_many_concurrent_tokens(
    provider: Provider,
) -> None:
    async with key_source(provider) as keys:
        auth = authenticator(keys)
        old = provider.mint()
        provider.rotate("key-2")
        before = provider.stats()["jwks"]
        fresh = [provider.mint({"sub": f"u-{i}"}) for i in range(20)]
        async with anyio.create_task_group() as tg:
            results: list[str] = []

            async def check(token: str) -> None:
                results.append((await auth.verify(token)).sub)

            for token in fresh:
                tg.start_soon(check, token)
        assert sorted(results) == sorted(f"u-{i}" for i in range(20))
        assert provider.stats()["jwks"] - before == 1, "concurrent new-kid tokens share a fetch"
        assert {vk.kid for vk in keys.keys("RS256")} == {"key-1", "key-2"}
        assert (await auth.verify(old)).sub == "alice", "the old key still verifies"


async def test_forged_kids_fetch_at_most_once_per_interval(provider: Provider) -> None:
    interval = 1.0
    async with key_source(provider, unknown_kid_interval=interval) as keys:
        auth = authenticator(keys)
        base = provider.stats()["jwks"]

        async def forge(n: int) -> list[str]:
            out: list[str] = []
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    token = provider.mint(kid=f"forged-{time.monotonic_ns()}-{i}")

                    async def one(token: str = token) -> None:
                        out.append(await refused(auth, token))

                    tg.start_soon(one)
            return out

        assert set(await forge(30)) == {"unknown signing key"}
        assert provider.stats()["jwks"] - base == 1
        started = time.monotonic()
        while time.monotonic() - started < interval * 0.6:
            assert set(await forge(5)) == {"unknown signing key"}
        assert provider.stats()["jwks"] - base == 1, "no second fetch within the interval"
        await anyio.sleep(interval)
        assert set(await forge(10)) == {"unknown signing key"}
        assert provider.stats()["jwks"] - base == 2, "one more fetch once the interval passed"


async def test_the_real_30_second_limit_holds_over_http(
    live_app: LiveAppFactory, provider: Provider
) -> None:
    """Default timing, through the service: a burst of forged kids a second long costs
    the provider one JWKS fetch; a genuine rotation is still picked up... once per 30 s."""
    async with oidc_app(live_app, provider) as app:
        base = provider.stats()["jwks"]
        statuses: list[int] = []
        started = time.monotonic()
        async with app.http() as http:
            while time.monotonic() - started < 1.0:
                async with anyio.create_task_group() as tg:
                    for i in range(5):
                        token = provider.mint(kid=f"forged-{time.monotonic_ns()}-{i}")

                        async def poll(token: str = token) -> None:
                            answer = await http.get(
                                "/api/v1/events", headers={"Authorization": f"Bearer {token}"}
                            )
                            assert answer.json()["message"] == "unknown signing key"
                            statuses.append(answer.status_code)

                        tg.start_soon(poll)
        assert len(statuses) >= 10 and set(statuses) == {401}
        assert provider.stats()["jwks"] - base == 1
        async with app.http() as http:
            metrics = (await http.get("/metrics")).text
        assert 'secstream_oidc_jwks_refresh_total{outcome="ok"} 2.0' in metrics
        assert "secstream_oidc_jwks_age_seconds " in metrics


async def test_keys_are_refreshed_on_their_age(provider: Provider) -> None:
    async with key_source(provider, default_age=0.3, min_age=0.3) as keys:
        base = provider.stats()
        provider.rotate("key-2")
        await eventually(lambda: {vk.kid for vk in keys.keys("RS256")} == {"key-1", "key-2"})
        stats = provider.stats()
        assert stats["jwks"] > base["jwks"] and stats["discovery"] > base["discovery"]


def test_cache_control_max_age_is_honoured_within_bounds() -> None:
    keys = OidcKeys("https://idp.example", min_age=300, max_age=86400, default_age=3600)
    assert keys._age_of(None) == 3600
    assert keys._age_of("no-cache") == 3600
    assert keys._age_of("public, max-age=7200") == 7200
    assert keys._age_of("max-age=5") == 300
    assert keys._age_of("max-age=99999999") == 86400
    assert keys._age_of("public, s-maxage=10, max-age=600") == 600


# -- bad providers: a server of the test's own that answers what it is told ------------------


class _Crafted(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}

    def do_GET(self) -> None:
        status, body, headers = self.routes.get(self.path, (404, b"{}", {}))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def crafted() -> Iterator[tuple[str, dict[str, tuple[int, bytes, dict[str, str]]]]]:
    """(issuer, routes): a plain HTTP server serving ``routes[path]``."""
    routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
    handler = type("Handler", (_Crafted,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


def discovery(issuer: str, **more: Any) -> bytes:
    return json.dumps({
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        **more,
    }).encode()


def public(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k in ("kty", "kid", "alg", "use", "n", "e", "crv",
                                                   "x", "y")}


async def load_once(issuer: str) -> OidcKeys:
    keys = OidcKeys(issuer)
    try:
        await keys._fetch(discover=True)
    finally:
        await keys.aclose()
    return keys


async def test_a_huge_or_keyless_jwks_is_refused(
    crafted: tuple[str, dict[str, tuple[int, bytes, dict[str, str]]]],
) -> None:
    issuer, routes = crafted
    routes["/.well-known/openid-configuration"] = (200, discovery(issuer), {})
    good = public(oidc_provider.new_key("good"))
    padding = "x" * (MAX_JWKS_BYTES + 1)
    routes["/jwks"] = (200, json.dumps({"keys": [good], "pad": padding}).encode(), {})
    keys = await load_once(issuer)
    assert not keys.loaded and "over 262144 bytes" in (keys.error or "")

    routes["/jwks"] = (200, json.dumps({"keys": [good] * 101}).encode(), {})
    keys = await load_once(issuer)
    assert not keys.loaded and "at most 100" in (keys.error or "")

    # HMAC and "none" keys, an encryption key and a leaked private key: none is used.
    secret = {"kty": "oct", "kid": "hs", "alg": "HS256", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"}
    leaked = oidc_provider.new_key("leaked")
    unsafe = [secret, {**good, "kid": "none", "alg": "none"}, {**good, "use": "enc"}, leaked]
    routes["/jwks"] = (200, json.dumps({"keys": unsafe}).encode(), {})
    keys = await load_once(issuer)
    assert not keys.loaded and "no public RS/PS/ES signature key" in (keys.error or "")

    routes["/jwks"] = (200, json.dumps({"keys": [*unsafe, good]}).encode(), {})
    keys = await load_once(issuer)
    assert keys.loaded and [vk.kid for vk in keys.keys("RS256")] == ["good"]

    routes["/jwks"] = (500, b"oops", {})
    keys = await load_once(issuer)
    assert not keys.loaded and keys.error == f"{issuer}/jwks answered HTTP 500"


async def test_a_bad_discovery_document_is_refused(
    crafted: tuple[str, dict[str, tuple[int, bytes, dict[str, str]]]],
) -> None:
    issuer, routes = crafted
    routes["/.well-known/openid-configuration"] = (200, b"x" * (64 * 1024 + 1), {})
    assert "over 65536 bytes" in ((await load_once(issuer)).error or "")
    routes["/.well-known/openid-configuration"] = (200, b"not json", {})
    assert "not JSON" in ((await load_once(issuer)).error or "")
    document = json.loads(discovery(issuer))
    del document["jwks_uri"]
    routes["/.well-known/openid-configuration"] = (200, json.dumps(document).encode(), {})
    assert "jwks_uri" in ((await load_once(issuer)).error or "")
    routes["/.well-known/openid-configuration"] = (
        200, discovery(issuer, jwks_uri="http://keys.example/jwks"), {}
    )
    assert "https" in ((await load_once(issuer)).error or ""), "plain http off loopback"


async def test_csp_names_the_provider_origins_once_discovered(
    crafted: tuple[str, dict[str, tuple[int, bytes, dict[str, str]]]],
) -> None:
    issuer, routes = crafted
    port = issuer.rsplit(":", 1)[1]
    other = f"http://localhost:{port}"
    routes["/.well-known/openid-configuration"] = (200, discovery(
        issuer, token_endpoint=f"{other}/token",
        end_session_endpoint=f"{other}/logout", userinfo_endpoint=f"{issuer}/me",
    ), {})
    routes["/jwks"] = (200, json.dumps({"keys": [public(oidc_provider.new_key("k"))]}).encode(), {})
    keys = OidcKeys(issuer)
    assert keys.browser_origins() == ([issuer], [issuer])
    await keys._fetch(discover=True)
    await keys.aclose()
    assert keys.browser_origins() == ([issuer, other], [issuer, other])
    assert origin_of("https://a.example:8443/x?y#z") == "https://a.example:8443"
    assert origin_of("https://a.example; script-src *") is None
    assert origin_of("javascript:alert(1)") is None


# -- the service: claims, config, the socket ---------------------------------------------------


async def test_a_code_flow_token_opens_a_socket_with_mapped_roles_and_groups(
    live_app: LiveAppFactory, provider: Provider
) -> None:
    async with oidc_app(live_app, provider) as app:
        alice = provider.sign_in("alice")["access_token"]
        bob = provider.sign_in("bob")["access_token"]
        async with app.ws(alice) as a, app.ws(bob) as b:
            assert a.welcome["user_id"] == "alice"
            assert "admin" in a.welcome["roles"] and "soc-lead" not in a.welcome["roles"]
            assert b.welcome["user_id"] == "bob" and b.welcome["roles"] == ["analyst"]
            await a.subscribe(["test.*"])
            await b.subscribe(["test.*"])
            # For the blue team only: alice's group, from the groups claim.
            await app.publish(
                "test.started", {"test_id": "t-oidc"}, audience={"groups": ["blue-team"]}
            )
            await app.publish("test.started", {"test_id": "t-all"})
            assert (await a.event())["data"]["test_id"] == "t-oidc"
            assert (await a.event())["data"]["test_id"] == "t-all"
            assert (await b.event())["data"]["test_id"] == "t-all"
        # HS256 tokens of the secret (publishers, services) keep working beside OIDC;
        # their roles are read at the same claim path.
        publisher = hs256({"sub": "svc", "exp": time.time() + 60, "aud": AUDIENCE,
                           "realm_access": {"roles": ["publisher"]}})
        async with app.http(publisher) as http:
            answer = await http.post(
                "/api/v1/events", json={"event_type": "test.started", "data": {"test_id": "t"}}
            )
            assert answer.status_code == 202


async def test_a_rotated_key_is_accepted_without_restarting(
    live_app: LiveAppFactory, provider: Provider
) -> None:
    async with oidc_app(live_app, provider) as app:
        before = provider.sign_in("alice")["access_token"]
        async with app.ws(before) as client:
            assert client.welcome["user_id"] == "alice"
        base = provider.stats()["jwks"]
        provider.rotate("key-2", kind="EC")
        after = provider.sign_in("alice")["access_token"]
        assert json.loads(_b64(after.split(".")[0]))["kid"] == "key-2"
        async with app.ws(after) as client:
            assert client.welcome["user_id"] == "alice"
            assert "admin" in client.welcome["roles"]
            # The socket's token is replaced in-band by one of the new key as well.
            await client.send({"type": "refresh", "token": after, "id": "r"})
            await client.expect("refreshed", ref="r")
        assert provider.stats()["jwks"] - base == 1
        async with app.ws(before) as client:  # the old key stays published: still good
            assert client.welcome["user_id"] == "alice"


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def test_wrong_audience_or_issuer_is_refused_at_the_handshake(
    live_app: LiveAppFactory, provider: Provider
) -> None:
    async with oidc_app(live_app, provider) as app:
        roles = {"realm_access": {"roles": ["soc-lead"]}}
        async with app.ws(provider.mint(roles)) as client:
            assert client.welcome["user_id"] == "alice"
        assert await handshake_status(app.ws_url, provider.mint(roles, aud="other")) == 401
        assert await handshake_status(app.ws_url, provider.mint(roles, iss="https://x")) == 401
        # No role that receives anything: 403, as for any token.
        assert await handshake_status(app.ws_url, provider.mint({"realm_access": {}})) == 403


async def get(app: LiveApp, path: str) -> httpx.Response:
    async with app.http() as http:
        return await http.get(path)


async def test_client_config_says_how_to_sign_in(
    live_app: LiveAppFactory, provider: Provider
) -> None:
    async with live_app() as app:
        answer = await get(app, "/api/v1/config")
        assert answer.status_code == 200
        assert answer.json() == {"oidc": None, "demo": False}
    async with oidc_app(live_app, provider, oidc_client_id=None) as app:
        assert (await get(app, "/api/v1/config")).json() == {"oidc": None, "demo": False}
    async with oidc_app(live_app, provider) as app:
        assert (await get(app, "/api/v1/config")).json() == {
            "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID,
                     "scope": "openid profile offline_access"},
            "demo": False,
        }
        csp = (await get(app, "/health/live")).headers["content-security-policy"]
        assert f"connect-src 'self' {provider.issuer};" in csp
        assert f"form-action 'self' {provider.issuer};" in csp
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    async with live_app(jwt_secret=None, demo=True) as app:
        assert (await get(app, "/api/v1/config")).json() == {"oidc": None, "demo": True}


# -- whole processes: the provider down at start, and later -----------------------------------


def serve_env(provider: Provider) -> dict[str, str]:
    return {
        "SECSTREAM_OIDC_ISSUER": provider.issuer,
        "SECSTREAM_OIDC_CLIENT_ID": CLIENT_ID,
        "SECSTREAM_JWT_AUDIENCE": AUDIENCE,
        "SECSTREAM_ROLES_CLAIM": "realm_access.roles",
        "SECSTREAM_ROLE_MAP": "soc-lead=admin",
    }


async def fetch(process: ServeProcess, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=process.base_url, timeout=20) as http:
        return await http.get(path, headers=headers)


@pytest.mark.slow
async def test_provider_down_at_start_then_up(
    serve: Callable[..., ServeProcess], redis_url: str, tmp_path: Path
) -> None:
    provider = Provider(tmp_path / "late-provider")  # port chosen, not started
    process = serve(redis_url, env=serve_env(provider))
    try:
        answer = await fetch(process, "/health/ready")
        assert answer.status_code == 503
        body = answer.json()
        assert "oidc" in body["reasons"]
        assert body["oidc"]["issuer"] == provider.issuer
        assert body["oidc"]["keys_loaded"] is False
        assert provider.discovery_url in body["oidc"]["error"]
        token = provider.mint({"realm_access": {"roles": ["soc-lead"]}})
        polled = await fetch(process, "/api/v1/events", token)
        assert polled.status_code == 503 and polled.json()["error"] == "unavailable"
        assert polled.headers["retry-after"] == "5"
        assert await handshake_status(process.ws_url, token) == 503
        assert process.returncode is None, "serve keeps running without the provider"
        await anyio.sleep(2)  # a few retries fail first
        provider.start()
        started = time.monotonic()
        with anyio.fail_after(35):
            while (answer := await fetch(process, "/health/ready")).status_code != 200:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        waited = time.monotonic() - started
        assert waited < 32, "the retry backoff is capped at 30 s"
        assert answer.json()["oidc"]["keys_loaded"] is True
        async with connect(
            process.ws_url, subprotocols=[SUBPROTOCOL, f"bearer.{token}"],  # type: ignore[list-item]
            open_timeout=10,
        ) as ws:
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome" and "admin" in welcome["roles"]
        log = process.log()
        assert "cannot fetch the OIDC provider's keys" in log
        assert log.count("cannot fetch the OIDC provider's keys") == 1, "one line a minute"
        metrics = (await fetch(process, "/metrics")).text
        assert 'secstream_oidc_jwks_refresh_total{outcome="ok"} 1.0' in metrics
        assert 'secstream_oidc_jwks_refresh_total{outcome="failed"}' in metrics
    finally:
        provider.stop()


@pytest.mark.slow
async def test_provider_down_later_cached_keys_keep_working(
    serve: Callable[..., ServeProcess], redis_url: str, provider: Provider
) -> None:
    process = serve(redis_url, env=serve_env(provider))
    process.wait_http("/health/ready", timeout=15)
    token = provider.sign_in("alice")["access_token"]
    provider.stop()
    assert (await fetch(process, "/api/v1/events", token)).status_code == 200
    # A token naming a key nobody has: the refresh fails, is counted, and changes nothing.
    answer = await fetch(process, "/api/v1/events", provider.mint(kid="not-there"))
    assert answer.status_code == 401 and answer.json()["message"] == "unknown signing key"
    metrics = (await fetch(process, "/metrics")).text
    assert 'secstream_oidc_jwks_refresh_total{outcome="failed"} 1.0' in metrics
    answer = await fetch(process, "/health/ready")
    assert answer.status_code == 200, "cached keys: still ready"
    body = answer.json()
    assert body["oidc"]["keys_loaded"] is True and "cannot reach" in body["oidc"]["error"]
    async with connect(
        process.ws_url, subprotocols=[SUBPROTOCOL, f"bearer.{token}"],  # type: ignore[list-item]
        open_timeout=10,
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
