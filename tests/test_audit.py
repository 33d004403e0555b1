"""The audit trail (contract section 8): a record for every decision, denied ones included,
in Redis (GET /api/v1/audit) and on the ``secstream.audit`` logger."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from live import LiveApp, hs256
from secstream.audit import UNAVAILABLE, Audit, token_kid

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]
pytestmark = pytest.mark.anyio


async def records(app: LiveApp, **params: str) -> list[dict[str, Any]]:
    """Every record so far (after a flush), through the admin route."""
    await app.service.audit.flush()
    async with app.http(app.token("root", ["admin"])) as http:
        response = await http.get("/api/v1/audit", params={"limit": "1000", **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["records"]
    return found


def one(found: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    matching = [r for r in found if all(r.get(k) == v for k, v in fields.items())]
    assert len(matching) == 1, (fields, found)
    return matching[0]


async def refused_handshake(app: LiveApp, query: str) -> int:
    try:
        async with connect(f"{app.ws_url}?{query}", open_timeout=5):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_ws_connect_allowed_and_denied_then_close_with_code(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(40):
        async with live_app() as app:
            claims = {"sub": "u-x", "roles": ["viewer"], "exp": 1000}
            expired = hs256(claims, app.settings.jwt_secret or "")
            kid_token = app.token("u-k", ["viewer"])
            assert await refused_handshake(app, f"token={expired}") == 401
            assert await refused_handshake(app, f"token={app.token('p', ['publisher'])}") == 403
            assert await refused_handshake(app, "client_id=bad!id") == 400
            async with app.ws(kid_token, client_id="c1") as ws:
                conn_id = ws.welcome["connection_id"]
            found = await records(app, action="ws.connect,ws.close")
            denied = [r for r in found if r["outcome"] == "denied"]
            assert {r["reason"] for r in denied} == {
                "token expired", "no role that may receive events", "bad client_id"
            }
            assert all(r["sub"] is None and r["address"] == "127.0.0.1" for r in denied)
            allowed = one(found, action="ws.connect", outcome="allowed")
            assert allowed["sub"] == "u-k" and allowed["connection_id"] == conn_id
            assert allowed["node"] == app.service.node_id and allowed["client_id"] == "c1"
            with anyio.fail_after(5):
                while not any(r["action"] == "ws.close" for r in found):
                    await anyio.sleep(0.05)
                    found = await records(app, action="ws.close")
            closed = one(found, action="ws.close")
            assert closed["connection_id"] == conn_id and closed["code"] == 1000
            for record in found:
                assert record["id"] and record["time"].endswith("Z")


async def test_token_refresh_expiry_and_forbidden_subscribe(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(40):
        async with live_app(token_expiry_warning=0.5) as app:
            async with app.ws(app.token("u-r", ["viewer"])) as ws:
                await ws.send({"type": "subscribe", "id": "s1", "event_types": ["system.alert"]})
                await ws.expect("error", ref="s1", code="forbidden")
                other = app.token("u-other", ["viewer"])
                await ws.send({"type": "refresh", "id": "r1", "token": other})
                await ws.expect("error", ref="r1", code="invalid_token")
                await ws.send({"type": "refresh", "id": "r2", "token": "not-a-jwt"})
                await ws.expect("error", ref="r2", code="invalid_token")
                same = app.token("u-r", ["viewer"])
                await ws.send({"type": "refresh", "id": "r3", "token": same})
                await ws.expect("refreshed", ref="r3")
            async with app.ws(app.token("u-e", ["viewer"], expires_in=1.5)) as ws:
                assert await ws.closed_with(within=10) == 4001
            found = await records(app)
            forbidden = one(found, action="subscribe.forbidden")
            assert forbidden["sub"] == "u-r" and "system.alert" in forbidden["reason"]
            refresh = [r for r in found if r["action"] == "token.refresh"]
            assert [r["outcome"] for r in refresh] == ["denied", "denied", "allowed"]
            assert refresh[0]["reason"] == "another sub"
            with anyio.fail_after(5):
                while not any(r["action"] == "token.expired" for r in found):
                    await anyio.sleep(0.05)
                    found = await records(app)
            assert one(found, action="token.expired")["sub"] == "u-e"
            assert one(found, action="ws.close", sub="u-e")["code"] == 4001


async def test_publish_poll_admin_and_dev_token_records(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(40):
        async with live_app(publish_rate=1, publish_burst=1) as app:
            event = {"event_type": "system.status", "data": {}}
            async with app.http(app.token("pub", ["publisher"])) as http:
                first = await http.post("/api/v1/events", json=event)
                assert first.status_code == 202
                assert (await http.post("/api/v1/events", json=event)).status_code == 429
            async with app.http(app.token("viewer", ["viewer"])) as http:
                assert (await http.post("/api/v1/events", json=event)).status_code == 403
                params = {"types": "system.alert", "since": "0"}
                bad = await http.get("/api/v1/events", params=params)
                assert bad.status_code == 403
                assert (await http.get("/api/v1/connections")).status_code == 403
                assert (await http.delete("/api/v1/connections/nope")).status_code == 403
                assert (await http.get("/api/v1/audit")).status_code == 403
            async with app.http("garbage") as http:
                assert (await http.get("/api/v1/events", params={"since": "0"})).status_code == 401
            async with app.http(app.token("root", ["admin"])) as http:
                assert (await http.get("/api/v1/connections")).status_code == 200
                assert (await http.delete("/api/v1/connections/nope")).status_code == 404
            found = await records(app)
            allowed = one(found, action="publish", outcome="allowed")
            assert allowed["sub"] == "pub" and allowed["event_ids"] == [first.json()["id"]]
            assert one(found, action="publish", reason="rate_limited")["sub"] == "pub"
            assert one(found, action="publish", sub="viewer")["outcome"] == "denied"
            polls = [r for r in found if r["action"] == "poll.forbidden"]
            assert {(r["sub"], r["outcome"]) for r in polls} == {
                ("viewer", "denied"), (None, "denied")
            }
            assert one(found, action="admin.connections", outcome="allowed")["sub"] == "root"
            assert one(found, action="admin.connections", outcome="denied")["sub"] == "viewer"
            assert one(found, action="admin.close", sub="root")["outcome"] == "denied"
            assert one(found, action="admin.audit", outcome="denied")["sub"] == "viewer"


async def test_dev_token_is_audited(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(40):
        async with live_app(demo=True) as app:
            async with app.http() as http:
                body = {"sub": "d-1", "roles": ["viewer"]}
                response = await http.post("/api/v1/dev/token", json=body)
                assert response.status_code == 200
            record = one(await records(app, action="dev.token"))
            assert record["sub"] == "d-1" and record["roles"] == ["viewer"]
            assert response.json()["token"] not in json.dumps(record)


async def test_audit_query_filters_and_pages(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(40):
        async with live_app() as app:
            audit = app.service.audit
            for i in range(30):
                audit.record("publish", "allowed", sub=f"s{i % 3}", event_ids=[f"{i}-0"])
            audit.record("dev.token", "allowed", sub="s0")
            await audit.flush()
            page = await records(app, sub="s0", action="publish")
            assert len(page) == 10 and all(r["sub"] == "s0" for r in page)
            seen: list[str] = []
            since = None
            async with app.http(app.token("root", ["admin"])) as http:
                while True:
                    params = {"limit": "7", "action": "publish"}
                    if since:
                        params["since"] = since
                    body = (await http.get("/api/v1/audit", params=params)).json()
                    seen += [r["event_ids"][0] for r in body["records"]]
                    if not body["records"]:
                        break
                    since = body["next"]
                    assert since == body["records"][-1]["id"]
                for bad in ({"limit": "0"}, {"limit": "x"}, {"since": "nope"}, {"action": "hack"}):
                    assert (await http.get("/api/v1/audit", params=bad)).status_code == 400, bad
            assert seen == [f"{i}-0" for i in range(30)]


async def test_audit_lines_on_the_secstream_audit_logger(
    live_app: LiveAppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(40):
        async with live_app() as app:
            with caplog.at_level(logging.INFO, logger="secstream.audit"):
                token = app.token("u-l", ["viewer"])
                async with app.ws(token):
                    pass
                assert await refused_handshake(app, f"token={token}x") == 401
            lines = [r for r in caplog.records if r.name == "secstream.audit"]
            actions = [(r.audit["action"], r.audit["outcome"]) for r in lines]  # type: ignore[attr-defined]
            assert ("ws.connect", "allowed") in actions and ("ws.connect", "denied") in actions
            for r in lines:
                assert token not in json.dumps(r.audit)  # type: ignore[attr-defined]


@pytest.fixture
async def redis(shared_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(shared_redis_url)
    yield client
    await client.aclose()


async def test_retention_trims_old_records_and_records_survive_an_outage(
    redis: Redis, key_prefix: str
) -> None:
    audit = Audit(redis, prefix=key_prefix, node="n1", retention_seconds=1)
    audit.record("dev.token", "allowed", sub="old")
    await audit.flush()
    await anyio.sleep(1.2)
    audit.record("dev.token", "allowed", sub="new")
    await audit.flush()
    found, _ = await audit.query()
    assert [r["sub"] for r in found] == ["new"]
    # Redis away: records wait in memory (bounded), then go in one batch.
    dead = Redis.from_url("redis://127.0.0.1:1/0")
    offline = Audit(dead, prefix=key_prefix, node="n2", retention_seconds=60)
    offline.record("ws.connect", "denied", reason="x")
    with pytest.raises(UNAVAILABLE):
        await offline.flush()
    assert offline.pending == 1
    await dead.aclose()
    offline.redis = redis
    assert await offline.flush() == 1 and offline.pending == 0


def test_unknown_action_is_a_bug() -> None:
    audit = Audit(Redis(), prefix="p", node="n", retention_seconds=1)
    with pytest.raises(RuntimeError):
        audit.record("something.else", "allowed")


def test_kid_comes_from_the_header_only() -> None:
    token = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0.c2ln"
    assert token_kid(token) == "k1"
    assert token_kid("garbage") is None and token_kid(None) is None
    assert token_kid("!!!.x.y") is None
