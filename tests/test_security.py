"""Issue 9's probes, through real sockets: what reaches the app before it can say no
(frame and body sizes, nesting, slow headers, forged proxy headers), who may connect
(per address, per user, per Origin), and what ``serve`` refuses to start with."""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from joserfc.jwk import RSAKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from live import LiveApp, hs256
from secstream.middleware import CONTENT_SECURITY_POLICY
from secstream.protocol import MAX_FRAME_BYTES, ref_of
from streamclient import ENV, SECRET, token
from support import ServeProcess, eventually

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]
ServeFactory = Callable[..., ServeProcess]
WEB_INDEX = Path(__file__).parent.parent / "src" / "secstream" / "web" / "index.html"


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


async def _status(url: str, **kwargs: Any) -> int:
    """101 when the handshake succeeds, else the HTTP status it was refused with."""
    try:
        async with connect(url, open_timeout=10, **kwargs):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- row 1: frames over 64 KiB close 1009 unparsed; nesting over 32 is bad_request ----------


@pytest.mark.slow
async def test_a_huge_compressed_frame_is_closed_1009_without_growing_the_server(
    serve: ServeFactory, shared_redis_url: str, key_prefix: str
) -> None:
    node = serve(shared_redis_url, env={**ENV, "SECSTREAM_KEY_PREFIX": key_prefix})
    url = f"{node.ws_url}?token={token()}"
    before = _rss_kib(node.pid)
    async with connect(url, compression="deflate", max_size=None) as bystander:
        await bystander.recv()
        for _ in range(3):  # 15 MB each, about 15 KB on the wire
            async with connect(url, compression="deflate", max_size=None) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "ping", "id": "big", "pad": "x" * 15_000_000}))
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        started = time.monotonic()
        await bystander.send(json.dumps({"type": "ping", "id": "still"}))
        assert json.loads(await asyncio.wait_for(bystander.recv(), 5))["ref"] == "still"
        assert time.monotonic() - started < 1.0
    grown_mib = (_rss_kib(node.pid) - before) / 1024
    assert grown_mib < 40, f"RSS grew {grown_mib:.0f} MiB"  # was 89 -> 451 MiB for one frame


async def test_a_rate_limited_sender_of_huge_frames_is_closed_not_decoded(
    live_app: LiveAppFactory,
) -> None:
    async with live_app(client_rate=0.1, client_burst=1) as app, app.ws() as ws:
        await ws.send({"type": "ping", "id": 1})
        await ws.expect("pong", ref=1)
        await ws.send(json.dumps({"type": "ping", "id": 2, "pad": "x" * 100_000}))
        assert await ws.closed_with() == 1009


def test_ref_of_does_not_decode_oversize_or_over_deep_frames() -> None:
    assert ref_of('{"id": "r", "x": 1}') == "r"
    assert ref_of('{"id": "r", "x": 1e400}') == "r"  # a number out of range elsewhere
    assert ref_of('{"id": "r", "pad": "' + "x" * MAX_FRAME_BYTES + '"}') is None
    # over-deep: the id is looked up in the text, one level in and outside strings
    assert ref_of('{"id": "r", "x": ' + _deep(10_000) + "}") == "r"
    assert ref_of('{"x": {"id": 1}, "s": "\\"id\\": 2", "y": ' + _deep(40) + ', "id": 3}') == 3
    assert ref_of("[" + _deep(40) + ', {"id": 4}]') is None


async def test_a_10k_deep_frame_is_a_bad_request_and_the_connection_stays(
    live_app: LiveAppFactory,
) -> None:
    async with live_app() as app, app.ws() as ws:
        frame = '{"type": "ping", "id": "d", "x": ' + _deep(10_000) + "}"
        assert len(frame) < MAX_FRAME_BYTES
        await ws.send(frame)
        error = await ws.expect("error", code="bad_request", ref="d")
        assert "deeper than 32" in error["message"]
        await ws.send({"type": "ping", "id": "after"})
        await ws.expect("pong", ref="after")


# -- row 2: bodies cut at 1 MiB as a stream; SECSTREAM_MAX_EVENT_BYTES ------------------------


def _raw_chunked_post(port: int, auth: str, total: int) -> tuple[bytes, int]:
    """POST up to ``total`` bytes chunked (no Content-Length), reading between chunks;
    the response and how many bytes were sent before it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + auth.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b" " * 16384
        sent = 0
        response = b""
        while sent < total and b"\r\n\r\n" not in response:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break
            sent += len(chunk)
            while select.select([sock], [], [], 0.01)[0]:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
        return response, sent


async def test_a_chunked_body_over_1_mib_is_413_and_reading_stops(
    live_app: LiveAppFactory,
) -> None:
    async with live_app() as app:
        auth = app.token("pub", ["publisher"])
        response, sent = await anyio.to_thread.run_sync(
            _raw_chunked_post, app.port, auth, 6 * 1024 * 1024
        )
        head = response.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 413"), response[:200]
        assert b"connection: close" in head  # the rest of the body is never read
        assert sent < 3 * 1024 * 1024  # the 6 MiB were not all taken
        async with app.http(auth) as http:
            declared = await http.post(
                "/api/v1/events", content=b" " * (1024 * 1024 + 1),
                headers={"Content-Type": "application/json"},
            )
            assert declared.status_code == 413 and declared.json()["field"] == "body"


async def test_an_event_over_max_event_bytes_is_422(live_app: LiveAppFactory) -> None:
    async with live_app(max_event_bytes=4096) as app, app.http(
        app.token("pub", ["publisher"])
    ) as http:
        small = {"event_type": "system.status", "data": {"x": "y" * 100}}
        big = {"event_type": "system.status", "data": {"x": "y" * 5000}}
        assert (await http.post("/api/v1/events", json=small)).status_code == 202
        refused = await http.post("/api/v1/events", json=big)
        assert refused.status_code == 422 and refused.json()["field"] == "body", refused.text
        assert "SECSTREAM_MAX_EVENT_BYTES" in refused.json()["message"]
        batch = await http.post("/api/v1/events/batch", json={"events": [small, big]})
        assert batch.status_code == 422 and batch.json()["field"] == "events[1]"


# -- row 3: the demo is loopback-only and signs with a key of its own ------------------------


def _serve_exit(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SECSTREAM_")}
    proc = subprocess.run(
        [sys.executable, "-m", "secstream", "serve", "--port", "0", *args],
        cwd=tmp_path, env={**clean, **env}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=30,
    )
    return proc.returncode, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--demo"], {"SECSTREAM_JWT_SECRET": SECRET}, "SECSTREAM_JWT_SECRET"),
        (["--demo", "--host", "0.0.0.0"], {}, "--host"),
        (["--demo", "--host", "192.168.1.1"], {}, "--host"),
        ([], {"SECSTREAM_JWT_SECRET": "x"}, "SECSTREAM_JWT_SECRET"),
        ([], {"SECSTREAM_JWT_SECRET": "x" * 31}, "SECSTREAM_JWT_SECRET"),
    ],
)
def test_serve_refuses_an_unsafe_demo_or_a_short_secret(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    code, stderr = _serve_exit(tmp_path, *args, **env)
    assert code == 2, stderr
    assert named in stderr


@pytest.mark.slow
def test_serve_refuses_a_jwks_holding_a_private_key(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [RSAKey.generate_key(2048).as_dict(private=True)]}))
    code, stderr = _serve_exit(tmp_path, SECSTREAM_JWT_PUBLIC_KEY_FILE=str(jwks))
    assert code == 2, stderr
    assert "SECSTREAM_JWT_PUBLIC_KEY_FILE" in stderr and "private" in stderr


@pytest.mark.slow
async def test_demo_tokens_are_signed_with_a_key_of_that_process_alone(
    serve: ServeFactory, shared_redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = {"SECSTREAM_KEY_PREFIX": key_prefix}
    one = serve(shared_redis_url, env=env, extra=["--demo"], workdir=tmp_path / "one")
    two = serve(shared_redis_url, env=env, extra=["--demo"], workdir=tmp_path / "two")
    async with httpx.AsyncClient(timeout=10) as http:
        issued = await http.post(
            f"{one.base_url}/api/v1/dev/token", json={"sub": "d", "roles": ["admin"]}
        )
        assert issued.status_code == 200
        bearer = {"Authorization": f"Bearer {issued.json()['token']}"}
        assert (await http.get(f"{one.base_url}/api/v1/events", headers=bearer)).status_code == 200
        assert (await http.get(f"{two.base_url}/api/v1/events", headers=bearer)).status_code == 401
    kept = await anyio.to_thread.run_sync(lambda: list(tmp_path.rglob("demo-jwt-secret")))
    assert not kept  # nothing kept on disk


# -- rows 5 and 7: addresses, proxies, refused-handshake limit -------------------------------


async def test_forged_forwarded_headers_are_ignored_without_trusted_proxies(
    live_app: LiveAppFactory,
) -> None:
    async with live_app(handshake_rate=1) as app:
        statuses = [
            await _status(
                f"{app.ws_url}?token=forged",
                additional_headers={
                    "X-Forwarded-For": f"10.{i}.{random.randint(0, 255)}.1",
                    "Forwarded": f"for=10.{i}.0.2",
                },
            )
            for i in range(10)
        ]
    # a burst of 2 refusals for the one real address, then 429 (1 refill per second)
    assert statuses[:2] == [401, 401] and statuses[2:].count(429) >= 6, statuses


async def test_a_trusted_proxy_names_the_client_address(live_app: LiveAppFactory) -> None:
    async with live_app(handshake_rate=1, trusted_proxies=("127.0.0.1",)) as app:
        url = f"{app.ws_url}?token=forged"
        for header in ("X-Forwarded-For", "Forwarded"):
            statuses = []
            for i in range(10):  # ten clients behind the proxy, one refusal each
                value = f"10.0.0.{i}" if header == "X-Forwarded-For" else f"for=10.0.1.{i}"
                statuses.append(await _status(url, additional_headers={header: value}))
            assert statuses == [401] * 10, (header, statuses)
        # one client behind it refused again and again: that client alone is limited
        one = {"X-Forwarded-For": "10.9.9.9"}
        assert [await _status(url, additional_headers=one) for _ in range(3)] == [401, 401, 429]
        valid = f"{app.ws_url}?token={app.token('u', ['viewer'])}"
        assert await _status(valid, additional_headers={"X-Forwarded-For": "10.9.9.8"}) == 101


@pytest.mark.slow
async def test_a_thousand_valid_clients_from_one_address_all_get_in(
    serve: ServeFactory, shared_redis_url: str, key_prefix: str
) -> None:
    node = serve(shared_redis_url, env={**ENV, "SECSTREAM_KEY_PREFIX": key_prefix})
    tokens = [token(f"fleet-{i}", ("viewer",)) for i in range(1000)]
    limit = asyncio.Semaphore(50)
    opened: list[ClientConnection] = []

    async def join(tok: str) -> int:
        async with limit:
            try:
                opened.append(await connect(f"{node.ws_url}?token={tok}", open_timeout=30))
            except InvalidStatus as exc:
                return exc.response.status_code
            return 101

    try:
        statuses = await asyncio.gather(*(join(t) for t in tokens))
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    assert statuses.count(101) == 1000, {s: statuses.count(s) for s in set(statuses)}


def _slow_header_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    return socks


def _closed_within(socks: list[socket.socket], bound: float, trickle: float) -> list[float]:
    """Keep sending a header line every ``trickle`` s; when each socket was closed."""
    started = time.monotonic()
    closed: dict[int, float] = {}
    while len(closed) < len(socks) and time.monotonic() - started < bound:
        time.sleep(trickle)
        for i, sock in enumerate(socks):
            if i in closed:
                continue
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                sock.setblocking(False)
                data = sock.recv(4096)
                if data == b"" or data.startswith(b"HTTP/1.1 408"):
                    closed[i] = time.monotonic() - started
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = time.monotonic() - started
            finally:
                sock.setblocking(True)
    return [closed.get(i, float("inf")) for i in range(len(socks))]


@pytest.mark.slow
def test_slowloris_sockets_are_closed_within_the_header_timeout(
    serve: ServeFactory, shared_redis_url: str, key_prefix: str
) -> None:
    node = serve(
        shared_redis_url,
        env={**ENV, "SECSTREAM_KEY_PREFIX": key_prefix, "SECSTREAM_HEADER_TIMEOUT": "3"},
    )
    socks = _slow_header_sockets(node.port, 50)
    try:
        started = time.monotonic()
        assert node.get_status("/health/live") == 200  # others are served meanwhile
        assert time.monotonic() - started < 1
        closed = _closed_within(socks, bound=20, trickle=0.5)
    finally:
        for sock in socks:
            sock.close()
    # bound: the timeout (3 s) plus a trickle period and slack for a busy machine
    assert max(closed) < 3 + 4, closed
    assert min(closed) > 2, closed  # not closed before their time


@pytest.mark.slow
def test_past_the_pending_cap_the_oldest_slow_sockets_are_closed(
    serve: ServeFactory, shared_redis_url: str, key_prefix: str
) -> None:
    node = serve(
        shared_redis_url,
        env={**ENV, "SECSTREAM_KEY_PREFIX": key_prefix, "SECSTREAM_MAX_PENDING_CONNECTIONS": "20"},
    )
    socks = _slow_header_sockets(node.port, 50)
    try:
        assert node.get_status("/health/live") == 200  # a new client still gets in
        closed = _closed_within(socks, bound=3, trickle=0.3)
    finally:
        for sock in socks:
            sock.close()
    early = [t for t in closed if t < 3]
    assert len(early) >= 30, closed  # the 30 oldest (and the health check's slot) went
    assert all(t < 3 for t in closed[:30]), closed


async def test_request_headers_over_64_kib_get_431(live_app: LiveAppFactory) -> None:
    async with live_app() as app:
        def send() -> bytes:
            with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
                try:
                    for _ in range(100):
                        sock.sendall(b"X-Pad: " + b"p" * 1024 + b"\r\n")
                except OSError:
                    pass
                return sock.recv(4096)

        response = await anyio.to_thread.run_sync(send)
        assert response.startswith(b"HTTP/1.1 431"), response[:100]


async def test_a_body_that_trickles_is_cut_at_the_body_timeout(live_app: LiveAppFactory) -> None:
    async with live_app(body_timeout=1.5) as app:
        auth = app.token("pub", ["publisher"])

        def trickle(path: str) -> float:
            """Declare 1000 bytes, send one a tenth of a second; when the server closed."""
            with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\n"
                    "Content-Length: 1000\r\n\r\n".encode()
                )
                started = time.monotonic()
                while time.monotonic() - started < 10:
                    try:
                        sock.sendall(b" ")
                        if select.select([sock], [], [], 0.1)[0] and not sock.recv(65536):
                            break
                    except OSError:
                        break
                return time.monotonic() - started

        # read by the app (a publish), and not read at all (answered 405 at once)
        for path in ("/api/v1/events", "/health/live"):
            took = await anyio.to_thread.run_sync(trickle, path)
            assert 1.2 < took < 4, (path, took)
        async with app.http(auth) as http:  # a body sent at once is not affected
            body = {"event_type": "system.status", "data": {}}
            assert (await http.post("/api/v1/events", json=body)).status_code == 202


# -- row 6: connections per user -------------------------------------------------------------


async def test_connections_per_user_are_capped_with_429(live_app: LiveAppFactory) -> None:
    async with live_app(max_connections_per_user=3) as app:
        viewer = app.token("greedy", ["viewer"])
        async with app.ws(viewer), app.ws(viewer), app.ws(viewer) as third:
            with pytest.raises(InvalidStatus) as refused:
                async with app.ws(viewer):
                    pass
            assert refused.value.response.status_code == 429
            assert b"too_many_connections" in refused.value.response.body
            async with app.ws(app.token("root", ["admin"])) as admin:  # others get in
                assert admin.welcome["user_id"] == "root"
            await third.conn.close()
            await eventually(lambda: app.service.user_slots.held("greedy") == 2)
            async with app.ws(viewer) as again:  # a closed connection frees its slot
                assert again.welcome["user_id"] == "greedy"
        await eventually(lambda: app.service.user_slots.held("greedy") == 0)


async def test_zero_means_no_cap_per_user(live_app: LiveAppFactory) -> None:
    async with live_app(max_connections_per_user=0) as app:
        viewer = f"{app.ws_url}?token={app.token('many', ['viewer'])}"
        conns = [await connect(viewer) for _ in range(120)]
        try:
            assert len(app.service.hub.connections) == 120
        finally:
            for ws in conns:
                await ws.close()


# -- row 9: every input error is a 4xx naming the field --------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=5%0A", "since"),
        ("since=99999999999999999999", "since"),
        ("since=18446744073709551616-0", "since"),
        ("since=1-99999999999999999999", "since"),
        ("limit=abc", "limit"),
        ("limit=1e3", "limit"),
        ("limit=0", "limit"),
        ("limit=99999999999999999999999999", "limit"),
        ("wait=nan", "wait"),
        ("wait=inf", "wait"),
        ("wait=-1", "wait"),
        ("wait=1e400", "wait"),
        ("types=nope", "types"),
        ("test_id=" + "t" * 300, "test_id"),
    ],
)
async def test_malformed_poll_parameters_get_400_naming_the_field(
    live_app: LiveAppFactory, query: str, field: str
) -> None:
    async with live_app() as app, app.http(app.token()) as http:
        response = await http.get(f"/api/v1/events?{query}")
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"event_type": "system.status", "data": {}, "ttl": 1e308}', "ttl"),
        ('{"event_type": "system.status", "data": {}, "ttl": 1e400}', "ttl"),
        ('{"event_type": "system.status", "data": {}, "ttl": -1}', "ttl"),
        ('{"event_type": "system.status", "data": ' + '{"a": ' * 10_000 + "1" + "}" * 10_001,
         "body"),
        ('{"event_type": "system.status", "data": {"a": ' + _deep(40) + "}}", "body"),
        ('{"events": [{"event_type": "system.status", "data": {"a": ' + _deep(10_000) + "}}]}",
         "body"),
    ],
)
async def test_hostile_publish_bodies_get_422_naming_the_field(
    live_app: LiveAppFactory, body: str, field: str
) -> None:
    async with live_app() as app, app.http(app.token("pub", ["publisher"])) as http:
        path = "/api/v1/events/batch" if body.startswith('{"events"') else "/api/v1/events"
        response = await http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
        # and the log still reads
        assert (await http.get("/api/v1/events?since=0")).status_code in (200, 403)


async def test_a_client_id_with_a_trailing_newline_is_refused(live_app: LiveAppFactory) -> None:
    async with live_app() as app:
        base = f"{app.ws_url}?token={app.token()}"
        assert await _status(f"{base}&client_id=ab%0A") == 400
        assert await _status(f"{base}&client_id=ab") == 101


async def test_a_subscribe_since_an_overflowing_offset_is_a_bad_request(
    live_app: LiveAppFactory,
) -> None:
    async with live_app() as app, app.ws() as ws:
        for since in ("5\n", "99999999999999999999"):
            await ws.send({"type": "subscribe", "id": "s", "event_types": ["*"], "since": since})
            await ws.expect("error", ref="s", code="bad_request")
        await ws.send({"type": "ack", "id": "a", "offset": "99999999999999999999-1"})
        await ws.expect("error", ref="a")


# -- row 13: leeway, and the missing audience warned about -----------------------------------


async def test_jwt_leeway_accepts_a_token_that_expired_within_it(
    live_app: LiveAppFactory,
) -> None:
    expired = hs256({"sub": "late", "roles": ["viewer"], "exp": int(time.time()) - 10})
    async with live_app() as strict:
        assert await _status(f"{strict.ws_url}?token={expired}") == 401
    async with live_app(jwt_leeway=30) as lenient:
        assert await _status(f"{lenient.ws_url}?token={expired}") == 101


@pytest.mark.slow
def test_serve_warns_when_no_audience_is_set(
    serve: ServeFactory, shared_redis_url: str, key_prefix: str
) -> None:
    env = {**ENV, "SECSTREAM_KEY_PREFIX": key_prefix}
    without = serve(shared_redis_url, env=env, name="no-aud")
    with_aud = serve(shared_redis_url, env={**env, "SECSTREAM_JWT_AUDIENCE": "secstream"},
                     name="aud")
    assert "SECSTREAM_JWT_AUDIENCE is not set" in without.log()
    assert "SECSTREAM_JWT_AUDIENCE is not set" not in with_aud.log()


# -- row 15: security headers; the Origin allow-list -----------------------------------------


async def test_responses_carry_csp_and_nosniff(live_app: LiveAppFactory, tmp_path: Path) -> None:
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text(WEB_INDEX.read_text() if WEB_INDEX.is_file() else "<p>x")
    async with live_app(static_dir=web) as app, app.http(app.token()) as http:
        for path in ("/", "/health/live", "/api/v1/events", "/no-such-file"):
            response = await http.get(path)
            csp = response.headers["content-security-policy"]
            assert csp == CONTENT_SECURITY_POLICY, path
            assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp.split(";")[1]
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.skipif(not WEB_INDEX.is_file(), reason="the front end is not built")
def test_the_built_app_has_no_inline_script() -> None:
    html = WEB_INDEX.read_text()
    scripts = html.split("<script")[1:]
    assert scripts, "no script at all?"
    for script in scripts:
        tag, _, rest = script.partition(">")
        assert "src=" in tag, tag
        assert rest.split("</script>")[0].strip() == "", "inline script"
    assert " on" not in html.replace("\n", " ").split("<body")[1].split(">")[0]


async def test_only_allowed_origins_may_open_a_browser_handshake(
    live_app: LiveAppFactory,
) -> None:
    async with live_app(allowed_origins=("https://app.example",)) as app:
        url = f"{app.ws_url}?token={app.token()}"
        assert await _status(url, origin="https://evil.example") == 403  # type: ignore[arg-type]
        assert await _status(url, origin="https://app.example") == 101  # type: ignore[arg-type]
        assert await _status(url) == 101  # no Origin: not a browser
    async with live_app() as app:  # empty: any
        url = f"{app.ws_url}?token={app.token()}"
        assert await _status(url, origin="https://evil.example") == 101  # type: ignore[arg-type]
