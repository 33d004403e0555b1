"""The publish routes past Starlette's layers (``publish_route``): the same headers,
addresses and audit records as every other route, over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest

from live import LiveApp
from secstream.middleware import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]
EVENT = {"event_type": "system.status", "data": {"ok": True}}


async def audit_records(app: LiveApp, action: str) -> list[dict[str, Any]]:
    await app.service.audit.flush()
    found, _ = await app.service.audit.query(actions=[action], limit=1000)
    return found


async def test_every_publish_answer_has_the_security_headers(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(20):
        async with live_app(publish_rate=1, publish_burst=1) as app:
            async with app.http(app.token("p", ["publisher"])) as http:
                answers = [
                    await http.post("/api/v1/events", json=EVENT),  # 202
                    await http.post("/api/v1/events", json=EVENT),  # 429
                    await http.post("/api/v1/events/batch", json={"events": []}),  # 429 too
                ]
            async with app.http(app.token("v", ["viewer"])) as http:
                answers.append(await http.post("/api/v1/events", json=EVENT))  # 403
            async with app.http("not-a-token") as http:
                answers.append(await http.post("/api/v1/events", json=EVENT))  # 401
                answers.append(await http.get("/api/v1/events/batch"))  # 405
        assert [r.status_code for r in answers] == [202, 429, 429, 403, 401, 405]
        for response in answers:
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["content-type"] == "application/json"
            assert "error" in response.json() or "id" in response.json()
        assert answers[1].headers["retry-after"] == "1"
        assert answers[4].headers["www-authenticate"] == "Bearer"
        assert answers[5].headers["allow"] == "POST"


async def test_large_answers_are_gzipped_when_asked(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(20):
        async with live_app() as app, app.http(app.token("p", ["publisher"])) as http:
            batch = {"events": [EVENT] * 200}
            zipped = await http.post("/api/v1/events/batch", json=batch,
                                     headers={"Accept-Encoding": "gzip"})
            plain = await http.post("/api/v1/events/batch", json=batch,
                                    headers={"Accept-Encoding": "identity"})
            small = await http.post("/api/v1/events", json=EVENT,
                                    headers={"Accept-Encoding": "gzip"})
        assert zipped.status_code == plain.status_code == small.status_code == 202
        assert zipped.headers["content-encoding"] == "gzip" and len(zipped.json()["ids"]) == 200
        assert int(zipped.headers["content-length"]) < len(json.dumps(zipped.json()))
        assert "content-encoding" not in plain.headers and len(plain.json()["ids"]) == 200
        assert "content-encoding" not in small.headers


async def test_the_audit_has_the_address_a_trusted_proxy_names(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(20):
        async with live_app(trusted_proxies=("127.0.0.1",)) as app:
            async with app.http(app.token("p", ["publisher"])) as http:
                ok = await http.post("/api/v1/events", json=EVENT,
                                     headers={"Forwarded": "for=10.1.2.3"})
            async with app.http("bad") as http:
                await http.post("/api/v1/events", json=EVENT,
                                headers={"X-Forwarded-For": "10.4.5.6"})
            found = await audit_records(app, "publish")
        allowed = [r for r in found if r["outcome"] == "allowed"]
        denied = [r for r in found if r["outcome"] == "denied"]
        assert [r["event_ids"] for r in allowed] == [[ok.json()["id"]]]
        assert allowed[0]["address"] == "10.1.2.3" and allowed[0]["sub"] == "p"
        assert denied[0]["address"] == "10.4.5.6" and denied[0]["reason"] == "malformed token"


async def test_one_write_responses_are_whole(live_app: LiveAppFactory) -> None:
    """A response's head waits for its body: HEAD (no body) and pipelined requests too."""
    with anyio.fail_after(20):
        async with live_app() as app:
            reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
            token = app.token("p", ["publisher"])
            body = json.dumps(EVENT).encode()
            post = (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    + token.encode() + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
            writer.write(b"HEAD /health/live HTTP/1.1\r\nHost: x\r\n\r\n" + post * 3)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"content-length" in head.lower()
            ids = []
            for _ in range(3):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 202"), head
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                ids.append(json.loads(await reader.readexactly(length))["id"])
            writer.close()
        assert len(set(ids)) == 3


async def test_a_client_that_leaves_mid_body_publishes_nothing(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(20):
        async with live_app() as app:
            token = app.token("p", ["publisher"])
            body = json.dumps(EVENT).encode()
            _reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
            writer.write(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         + token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % (len(body) + 10)
                         + body)  # a whole JSON object, but 10 bytes short of its length
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            await asyncio.sleep(0.2)
            async with app.http(app.token("p", ["publisher"])) as http:
                after = await http.post("/api/v1/events", json=EVENT)
            assert after.status_code == 202
            assert await app.service.redis.xlen(app.service.log.log_key) == 1
