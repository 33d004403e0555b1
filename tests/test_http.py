"""The HTTP API of contract section 5, over real sockets against a real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from live import SUBPROTOCOL, LiveApp, hs256
from secstream.redis_server import RedisServer

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]


async def xlen(app: LiveApp) -> int:
    return int(await app.service.redis.xlen(app.service.log.log_key))


# -- publishing --------------------------------------------------------------------------------


async def test_publish_returns_202_and_the_id(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token(roles=["publisher"])) as http:
            body = {
                "event_type": "test.progress",
                "data": {"test_id": "t-1", "progress": 3},
                "priority": "high",
                "correlation_id": "c-1",
                "user_id": "u-9",
            }
            response = await http.post("/api/v1/events", json=body)
            assert response.status_code == 202, response.text
            eid = response.json()["id"]
            assert await app.service.log.last_id() == eid
            async with app.http(app.token()) as reader:
                page = (await reader.get("/api/v1/events", params={"since": "0"})).json()
            (event,) = page["events"]
            assert event["id"] == eid and event["type"] == "event"
            assert event["event_type"] == "test.progress" and event["priority"] == "high"
            assert event["user_id"] == "u-9" and event["correlation_id"] == "c-1"
            assert event["data"] == {"test_id": "t-1", "progress": 3}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_type": "test.exploded", "data": {}}, "event_type"),
        ({"event_type": "test.started", "data": {}}, "data.test_id"),
        ({"event_type": "test.started", "data": {"test_id": 5}}, "data.test_id"),
        ({"event_type": "user.notification", "data": {"title": "x"}}, "audience.users"),
        (
            {"event_type": "user.notification", "data": {}, "audience": {"groups": ["g"]}},
            "audience.users",
        ),
        ({"event_type": "system.alert", "data": "text"}, "data"),
        ({"event_type": "system.alert", "data": {}, "priority": "urgent"}, "priority"),
        ({"event_type": 5, "data": {}}, "event_type"),
        ({"data": {}}, "event_type"),
        ({"event_type": "system.alert"}, "data"),
        ({"event_type": "system.alert", "data": {}, "ttl": "soon"}, "ttl"),
        ({"event_type": "system.alert", "data": {}, "ttl": -1}, "ttl"),
        ({"event_type": "system.alert", "data": {}, "audience": {"users": "u"}}, "audience.users"),
    ],
)
async def test_invalid_publish_is_422_naming_the_field(
    live_app: LiveAppFactory, body: dict[str, Any], field: str
) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token(roles=["publisher"])) as http:
            response = await http.post("/api/v1/events", json=body)
            assert response.status_code == 422, response.text
            problem = response.json()
            assert problem["field"] == field, problem
            assert problem["message"]
            assert await xlen(app) == 0


async def test_body_that_is_not_json_is_422(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token(roles=["publisher"])) as http:
            for raw in (b"{not json", b"[1, 2]", b""):
                response = await http.post(
                    "/api/v1/events", content=raw, headers={"Content-Type": "application/json"}
                )
                assert response.status_code == 422, raw
                assert response.json()["field"] == "body", raw
            assert await xlen(app) == 0


async def test_idempotency_key_returns_the_first_id_and_appends_nothing(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(10):
        async with live_app() as app:
            first_body = {"event_type": "system.alert", "data": {"title": "a"}}
            other_body = {"event_type": "system.status", "data": {"ok": True}}
            async with app.http(app.token("p1", ["publisher"])) as http:
                first = await http.post(
                    "/api/v1/events", json=first_body, headers={"Idempotency-Key": "k-1"}
                )
                assert first.status_code == 202
            # the same sub again, whatever the body
            async with app.http(app.token("p1", ["admin"])) as http:
                again = await http.post(
                    "/api/v1/events", json=other_body, headers={"Idempotency-Key": "k-1"}
                )
                assert again.status_code == 202
                assert again.json()["id"] == first.json()["id"]
                assert await xlen(app) == 1
                invalid = await http.post(
                    "/api/v1/events", content=b"not json", headers={"Idempotency-Key": "k-1"}
                )
                assert invalid.status_code == 202
                assert invalid.json()["id"] == first.json()["id"]
                assert await xlen(app) == 1
                fresh = await http.post(
                    "/api/v1/events", json=other_body, headers={"Idempotency-Key": "k-2"}
                )
                assert fresh.json()["id"] != first.json()["id"]
                assert await xlen(app) == 2


async def test_idempotency_keys_of_different_subs_never_collide(
    live_app: LiveAppFactory,
) -> None:
    """Row 12: publisher B's critical alert is not swallowed by A's key."""
    with anyio.fail_after(10):
        async with live_app() as app:
            ids = {}
            # "a:b" + "c" and "a" + "b:c" would share a naive "sub:key" name
            for sub, key in (("pub-a", "k"), ("pub-b", "k"), ("a:b", "c"), ("a", "b:c")):
                body = {
                    "event_type": "system.alert",
                    "data": {"title": f"from {sub}"},
                    "priority": "critical",
                }
                async with app.http(app.token(sub, ["publisher"])) as http:
                    response = await http.post(
                        "/api/v1/events", json=body, headers={"Idempotency-Key": key}
                    )
                    assert response.status_code == 202, response.text
                    ids[sub] = response.json()["id"]
            assert len(set(ids.values())) == 4
            assert await xlen(app) == 4
            async with app.http(app.token("pub-b", ["publisher"])) as http:
                retried = await http.post(
                    "/api/v1/events",
                    json={"event_type": "system.alert", "data": {"title": "retry"}},
                    headers={"Idempotency-Key": "k"},
                )
                assert retried.json()["id"] == ids["pub-b"]
            assert await xlen(app) == 4


async def test_batch_appends_all_in_order(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token(roles=["publisher"])) as http:
            events = [
                {"event_type": "test.started", "data": {"test_id": "t"}},
                {"event_type": "test.progress", "data": {"test_id": "t", "progress": 50}},
                {"event_type": "test.completed", "data": {"test_id": "t"}},
            ]
            response = await http.post("/api/v1/events/batch", json={"events": events})
            assert response.status_code == 202, response.text
            batch_ids = response.json()["ids"]
            assert len(batch_ids) == 3 and len(set(batch_ids)) == 3
            async with app.http(app.token()) as reader:
                page = (await reader.get("/api/v1/events", params={"since": "0"})).json()
            assert [e["id"] for e in page["events"]] == batch_ids
            assert [e["event_type"] for e in page["events"]] == [e["event_type"] for e in events]


async def test_batch_is_all_or_nothing(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token(roles=["publisher"])) as http:
            events = [
                {"event_type": "system.alert", "data": {"title": "ok"}},
                {"event_type": "test.progress", "data": {"progress": 1}},
            ]
            response = await http.post("/api/v1/events/batch", json={"events": events})
            assert response.status_code == 422
            assert "events[1]" in response.json()["field"]
            assert "test_id" in response.json()["field"]
            events[1] = {"event_type": "bogus", "data": {}}
            response = await http.post("/api/v1/events/batch", json={"events": events})
            assert response.status_code == 422
            assert response.json()["field"] == "events[1].event_type"
            assert await xlen(app) == 0


async def test_publish_auth(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app:
            body = {"event_type": "system.alert", "data": {}}
            expired = hs256({"sub": "p", "roles": ["publisher"], "exp": int(time.time()) - 1})
            for token in (None, "garbage", expired):
                async with app.http(token) as http:
                    for path, payload in (
                        ("/api/v1/events", body),
                        ("/api/v1/events/batch", {"events": [body]}),
                    ):
                        response = await http.post(path, json=payload)
                        assert response.status_code == 401, (token, path)
            for roles in (["viewer"], ["analyst"], [], ["viewer", "analyst"]):
                async with app.http(app.token(roles=roles)) as http:
                    response = await http.post("/api/v1/events", json=body)
                    assert response.status_code == 403, roles
            for roles in (["publisher"], ["admin"], ["viewer", "publisher"]):
                async with app.http(app.token(roles=roles)) as http:
                    response = await http.post("/api/v1/events", json=body)
                    assert response.status_code == 202, roles
            assert await xlen(app) == 3


async def test_publish_rate_limit_is_429_with_retry_after(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(publish_rate=0.5, publish_burst=2) as app:
            body = {"event_type": "system.status", "data": {}}
            async with app.http(app.token("p1", ["publisher"])) as http:
                statuses = [(await http.post("/api/v1/events", json=body)) for _ in range(3)]
                assert [r.status_code for r in statuses] == [202, 202, 429]
                assert int(statuses[2].headers["Retry-After"]) >= 1
            # the limit is per token sub
            async with app.http(app.token("p2", ["publisher"])) as http:
                assert (await http.post("/api/v1/events", json=body)).status_code == 202
            assert await xlen(app) == 3
            async with httpx.AsyncClient(base_url=app.base_url) as http:
                metrics = (await http.get("/metrics")).text
            assert any(
                line.startswith("secstream_rate_limited_total") and not line.endswith(" 0.0")
                for line in metrics.splitlines()
            ), metrics


# -- polling -----------------------------------------------------------------------------------


async def poll(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/api/v1/events", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_poll_without_since_returns_the_end_of_the_log(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token()) as http:
            empty = await poll(http)
            assert empty["events"] == [] and empty["truncated"] is False
            await app.publish("system.status", {})
            last = await app.publish("system.status", {})
            page = await poll(http)
            assert page == {"events": [], "next": last, "truncated": False}
            newer = await app.publish("system.status", {})
            page = await poll(http, since=page["next"])
            assert [e["id"] for e in page["events"]] == [newer]
            assert page["next"] == newer


async def test_poll_filters_as_the_socket(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app:
            alert = await app.publish("system.alert", {"title": "a"})
            maint = await app.publish("system.maintenance", {})
            t1 = await app.publish("test.progress", {"test_id": "t-1", "progress": 1})
            t2 = await app.publish("test.progress", {"test_id": "t-2", "progress": 1})
            to_bob = await app.publish(
                "user.notification", {"title": "b"}, audience={"users": ["bob"]}
            )
            to_red = await app.publish("test.started", {"test_id": "t-3"},
                                       audience={"groups": ["red"]})
            to_admins = await app.publish(
                "system.status", {}, audience={"roles": ["admin"]}
            )
            async with app.http(app.token("bob", ["viewer"])) as http:
                page = await poll(http, since="0")
                assert [e["id"] for e in page["events"]] == [maint, t1, t2, to_bob]
                page = await poll(http, since="0", types="test.*")
                assert [e["id"] for e in page["events"]] == [t1, t2]
                page = await poll(http, since="0", types="system.*,user.notification")
                assert [e["id"] for e in page["events"]] == [maint, to_bob]
                page = await poll(http, since="0", test_id="t-2")
                assert [e["id"] for e in page["events"]] == [t2]
                page = await poll(http, since=t1)
                assert [e["id"] for e in page["events"]] == [t2, to_bob]
                refused = await http.get("/api/v1/events", params={"types": "system.alert"})
                assert refused.status_code == 403
            async with app.http(app.token("eve", ["analyst"], ["red"])) as http:
                page = await poll(http, since="0")
                assert [e["id"] for e in page["events"]] == [alert, maint, t1, t2, to_red]
            async with app.http(app.token("root", ["admin"])) as http:
                page = await poll(http, since="0")
                assert [e["id"] for e in page["events"]] == [
                    alert, maint, t1, t2, to_admins
                ]


async def test_poll_limit_pages_through(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token()) as http:
            sent = [await app.publish("system.status", {"n": n}) for n in range(5)]
            page = await poll(http, since="0", limit=2)
            assert [e["id"] for e in page["events"]] == sent[:2]
            assert page["next"] == sent[1]
            page = await poll(http, since=page["next"], limit=2)
            assert [e["id"] for e in page["events"]] == sent[2:4]
            page = await poll(http, since=page["next"], limit=2)
            assert [e["id"] for e in page["events"]] == sent[4:]
            page = await poll(http, since=page["next"], limit=2)
            assert page["events"] == [] and page["next"] == sent[4]


async def test_poll_skips_expired_ttl_events(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token()) as http:
            await app.publish("system.status", {"n": "gone"}, ttl=0.000001)
            kept = await app.publish("system.status", {"n": "kept"}, ttl=3600)
            page = await poll(http, since="0")
            assert [e["id"] for e in page["events"]] == [kept]


async def test_long_poll_returns_when_an_event_is_published(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token()) as http:
            start = (await poll(http))["next"]
            result: dict[str, Any] = {}

            async def long_poll() -> None:
                result.update(await poll(http, since=start, wait=20, types="system.status"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_poll)
                await anyio.sleep(0.3)  # let the poll start waiting
                began = time.monotonic()
                await app.publish("system.alert", {"title": "not matching"})
                eid = await app.publish("system.status", {})
            assert time.monotonic() - began < 5
            assert [e["id"] for e in result["events"]] == [eid]


async def test_poll_rejects_bad_parameters_and_tokens(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app:
            async with app.http() as http:
                assert (await http.get("/api/v1/events")).status_code == 401
            async with app.http("garbage") as http:
                assert (await http.get("/api/v1/events")).status_code == 401
            async with app.http(app.token(roles=["publisher"])) as http:
                assert (await http.get("/api/v1/events")).status_code == 403
            async with app.http(app.token()) as http:
                for params in ({"since": "x"}, {"types": "bogus"}, {"limit": "0"},
                               {"wait": "31"}, {"limit": "many"}):
                    response = await http.get("/api/v1/events", params=params)
                    assert response.status_code == 400, params


# -- operations --------------------------------------------------------------------------------


async def test_health_and_redis_outage(
    live_app: LiveAppFactory, redis_server: RedisServer
) -> None:
    with anyio.fail_after(30):
        async with live_app(redis_url=redis_server.url) as app, httpx.AsyncClient(
            base_url=app.base_url, timeout=10
        ) as http:
            assert (await http.get("/health/live")).status_code == 200
            assert (await http.get("/health/ready")).status_code == 200
            body = {"event_type": "system.status", "data": {}}
            headers = {"Authorization": f"Bearer {app.token(roles=['publisher'])}"}
            redis_server.stop()
            try:
                assert (await http.get("/health/live")).status_code == 200
                assert (await http.get("/health/ready")).status_code == 503
                response = await http.post("/api/v1/events", json=body, headers=headers)
                assert response.status_code == 503
            finally:
                redis_server.start()
            # Redis is back: the first requests must not fail on connections gone stale
            assert (await http.get("/health/ready")).status_code == 200
            response = await http.post("/api/v1/events", json=body, headers=headers)
            assert response.status_code == 202


async def test_metrics_name_the_contract_metrics(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            await ws.subscribe(["*"])
            await app.publish("system.status", {})
            await ws.event()
            async with httpx.AsyncClient(base_url=app.base_url) as http:
                response = await http.get("/metrics")
            assert response.status_code == 200
            text = response.text
            for name in (
                "secstream_connections_active",
                "secstream_events_published_total",
                "secstream_messages_delivered_total",
                "secstream_delivery_latency_seconds_bucket",
                "secstream_rate_limited_total",
                "secstream_auth_failures_total",
            ):
                assert name in text, name
            assert "# TYPE secstream_delivery_latency_seconds histogram" in text


async def test_connections_is_admin_only(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws(app.token("v-1", ["viewer"]), client_id="c1") as ws:
            await ws.subscribe(["test.*"], test_id="t-1")
            await ws.send({"type": "ping", "id": "p"})
            await ws.expect("pong", ref="p")
            async with app.http() as http:
                assert (await http.get("/api/v1/connections")).status_code == 401
            for roles in (["viewer"], ["analyst"], ["publisher"]):
                async with app.http(app.token(roles=roles)) as http:
                    assert (await http.get("/api/v1/connections")).status_code == 403, roles
            async with app.http(app.token(roles=["admin"])) as http:
                response = await http.get("/api/v1/connections")
            assert response.status_code == 200
            (conn,) = response.json()["connections"]
            assert conn["id"] == ws.welcome["connection_id"]
            assert conn["user"] == "v-1" and conn["roles"] == ["viewer"]
            (sub,) = conn["subscriptions"]
            assert sub["event_types"] == ["test.*"] and sub["test_id"] == "t-1"
            assert conn["connected_since"].endswith("Z")
            assert isinstance(conn["queue_bytes"], int) and conn["state"] == "live"
            assert conn["node"] == app.service.node_id and conn["address"] == "127.0.0.1"
            assert conn["received"] == 2 and conn["sent"] >= 0


async def test_dev_endpoints_are_404_without_demo(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.http(app.token()) as http:
            response = await http.post("/api/v1/dev/token", json={"sub": "x", "roles": ["admin"]})
            assert response.status_code == 404
            assert (await http.post("/api/v1/dev/simulate")).status_code == 404


async def test_dev_endpoints_with_demo(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(15):
        async with live_app(demo=True, jwt_secret=None) as app, httpx.AsyncClient(
            base_url=app.base_url, timeout=10
        ) as http:
            response = await http.post(
                "/api/v1/dev/token", json={"sub": "demo", "roles": ["viewer"], "expires_in": 60}
            )
            assert response.status_code == 200, response.text
            issued = response.json()
            assert issued["expires_at"] > time.time()
            token = issued["token"]
            bad = await http.post("/api/v1/dev/token", json={"sub": "d", "roles": ["king"]})
            assert bad.status_code == 422
            headers = {"Authorization": f"Bearer {token}"}
            start = (await http.get("/api/v1/events", headers=headers)).json()["next"]
            started = await http.post("/api/v1/dev/simulate", headers=headers)
            assert started.status_code == 202
            test_id = started.json()["test_id"]
            page = (
                await http.get(
                    "/api/v1/events",
                    params={"since": start, "test_id": test_id, "wait": 5},
                    headers=headers,
                )
            ).json()
            assert page["events"], page
            assert page["events"][0]["event_type"] == "test.started"
            assert all(e["data"]["test_id"] == test_id for e in page["events"])
            # the issued token opens a socket
            async with connect(
                app.ws_url, subprotocols=[SUBPROTOCOL, f"bearer.{token}"]  # type: ignore[list-item]
            ) as ws:
                assert '"welcome"' in str(await ws.recv())


async def test_polls_count_against_the_client_rate_per_sub(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(20):
        async with live_app(client_rate=1, client_burst=3) as app:
            async with app.http(app.token("poller", roles=["viewer"])) as http:
                codes = [(await http.get("/api/v1/events?since=0")).status_code for _ in range(6)]
                limited = await http.get("/api/v1/events?since=0")
            assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
            # Another sub has its own bucket.
            async with app.http(app.token("other", roles=["viewer"])) as other:
                assert (await other.get("/api/v1/events?since=0")).status_code == 200
