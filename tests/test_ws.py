"""The WebSocket protocol of contract sections 2-4, over real sockets against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from live import SUBPROTOCOL, LiveApp, WsClient, hs256
from secstream.auth import Authenticator
from secstream.protocol import parse_offset

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]


def ids(frames: list[dict[str, Any]]) -> list[str]:
    return [f["id"] for f in frames]


async def handshake_status(app: LiveApp, *, token: str | None, via: str, query: str = "") -> int:
    url = app.ws_url + "?" + query
    protocols = [SUBPROTOCOL]
    if token is not None and via == "query":
        url += f"&token={token}"
    elif token is not None:
        protocols.append(f"bearer.{token}")
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, subprotocols=protocols, open_timeout=5):  # type: ignore[arg-type]
            pass
    return info.value.response.status_code


# -- handshake ---------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["subprotocol", "query"])
async def test_handshake_refuses_bad_tokens_with_401(live_app: LiveAppFactory, via: str) -> None:
    with anyio.fail_after(15):
        async with live_app() as app:
            now = int(time.time())
            other = Authenticator(secret="another-secret-of-enough-length-000000").mint(
                "u-1", ["admin"]
            )[0]
            cases = {
                "missing": None,
                "malformed": "not-a-jwt",
                "bad signature": other,
                "expired": hs256({"sub": "u-1", "roles": ["admin"], "exp": now - 5}),
                "no exp": hs256({"sub": "u-1", "roles": ["admin"]}),
            }
            for why, token in cases.items():
                assert await handshake_status(app, token=token, via=via) == 401, why


@pytest.mark.parametrize("via", ["subprotocol", "query"])
async def test_handshake_refuses_roles_that_receive_nothing_with_403(
    live_app: LiveAppFactory, via: str
) -> None:
    with anyio.fail_after(15):
        async with live_app() as app:
            for roles in ([], ["guest"], ["publisher"]):
                status = await handshake_status(app, token=app.token(roles=roles), via=via)
                assert status == 403, roles


async def test_handshake_refuses_bad_client_id_with_400(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(15):
        async with live_app() as app:
            token = app.token()
            for bad in ("has%20space", "a" * 65, "semi;colon", "dot.ted", ""):
                query = f"client_id={bad}"
                assert await handshake_status(app, token=token, via="query", query=query) == 400
            async with app.ws(client_id="A-z_0" + "9" * 59) as ws:
                assert ws.welcome["type"] == "welcome"


async def test_a_websocket_to_another_path_goes_through_starlette_and_is_refused(
    live_app: LiveAppFactory,
) -> None:
    """``/ws`` skips Starlette's stack (``app.App``); any other WebSocket still reaches
    Starlette's router, which has no route for it: 403 before accept."""
    with anyio.fail_after(10):
        async with live_app() as app:
            for path in ("/wsx", "/ws/", "/api/v1/events"):
                url = f"ws://127.0.0.1:{app.port}{path}?token={app.token()}"
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url, subprotocols=[SUBPROTOCOL]):  # type: ignore[list-item]
                        pass
                assert refused.value.response.status_code == 403, path
            async with app.ws() as ws:
                assert ws.welcome["type"] == "welcome"


@pytest.mark.parametrize("via", ["subprotocol", "query"])
async def test_welcome_and_selected_subprotocol(live_app: LiveAppFactory, via: str) -> None:
    with anyio.fail_after(10):
        async with live_app(heartbeat_interval=7.5) as app:
            token = app.token("u-7", ["viewer", "analyst"])
            async with app.ws(token, via=via) as ws:
                assert ws.conn.subprotocol == SUBPROTOCOL
                welcome = ws.welcome
                assert welcome["user_id"] == "u-7"
                assert sorted(welcome["roles"]) == ["analyst", "viewer"]
                assert welcome["heartbeat_interval"] == 7.5
                assert welcome["resume_from"] is None
                assert isinstance(welcome["connection_id"], str) and welcome["connection_id"]
                assert welcome["server_time"].endswith("Z")


# -- subscribe / unsubscribe ------------------------------------------------------------------


async def test_subscribe_and_unsubscribe_replies_carry_ref(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            subscribed, replayed = await ws.subscribe(["test.*", "system.alert"], ref="r1")
            assert subscribed["event_types"] == ["test.*", "system.alert"]
            assert replayed["count"] == 0 and replayed["truncated"] is False
            sid = subscribed["subscription"]
            await ws.send({"type": "subscribe", "id": 7, "event_types": ["*"]})
            assert (await ws.expect("subscribed"))["ref"] == 7
            assert (await ws.expect("replayed"))["ref"] == 7
            await ws.send({"type": "unsubscribe", "id": "r2", "subscription": sid})
            await ws.expect("unsubscribed", ref="r2", subscription=sid)
            await ws.send({"type": "unsubscribe", "id": "r3", "subscription": sid})
            await ws.expect("error", ref="r3", code="not_found")


async def test_unsubscribe_stops_delivery(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            subscribed, _ = await ws.subscribe(["system.alert"], ref="a")
            await ws.subscribe(["system.status"], ref="b")
            first = await app.publish("system.alert", {"title": "1"})
            assert (await ws.event())["id"] == first
            await ws.send(
                {"type": "unsubscribe", "id": "u", "subscription": subscribed["subscription"]}
            )
            await ws.expect("unsubscribed", ref="u")
            await app.publish("system.alert", {"title": "2"})
            sentinel = await app.publish("system.status", {})
            assert (await ws.event())["id"] == sentinel


async def test_forbidden_exact_type_subscribes_nothing_of_that_frame(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws(app.token("v", ["viewer"])) as ws:
            await ws.send(
                {"type": "subscribe", "id": "f", "event_types": ["test.progress", "system.alert"]}
            )
            await ws.expect("error", ref="f", code="forbidden")
            await ws.subscribe(["system.maintenance"], ref="ok")
            await app.publish("test.progress", {"test_id": "t-1", "progress": 1})
            await app.publish("system.alert", {"title": "no"})
            sentinel = await app.publish("system.maintenance", {"window": "now"})
            assert (await ws.event())["id"] == sentinel


async def test_wildcards_cover_allowed_types_only(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws(app.token("v", ["viewer"])) as ws:
            await ws.subscribe(["system.*"], ref="a")
            await ws.subscribe(["*"], ref="b")
            await app.publish("system.alert", {"title": "no"})
            await app.publish("system.status", {"ok": True})
            allowed = [
                await app.publish("system.maintenance", {}),
                await app.publish("test.started", {"test_id": "t"}),
                await app.publish("connection.info", {}),
            ]
            got = await ws.events(3)
            assert ids(got) == allowed
            assert [e["event_type"] for e in got] == [
                "system.maintenance", "test.started", "connection.info"
            ]


async def test_test_id_filter(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            await ws.subscribe(["test.*"], test_id="t-1")
            await app.publish("test.progress", {"test_id": "t-2", "progress": 5})
            mine = await app.publish("test.progress", {"test_id": "t-1", "progress": 6})
            event = await ws.event()
            assert event["id"] == mine and event["data"]["test_id"] == "t-1"


async def test_event_envelope(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            await ws.subscribe(["test.progress", "system.status"])
            data = {"test_id": "t-42", "progress": 45, "output": "scan", "module": "m"}
            first = await app.publish(
                "test.progress", data, user_id="u-7", correlation_id="req-1", priority="high"
            )
            second = await app.publish("system.status", {"ok": True})
            event = await ws.event()
            assert event == {
                "type": "event",
                "id": first,
                "event_type": "test.progress",
                "timestamp": event["timestamp"],
                "priority": "high",
                "data": data,
                "user_id": "u-7",
                "correlation_id": "req-1",
            }
            assert event["timestamp"].endswith("Z")
            plain = await ws.event()
            assert plain["id"] == second and parse_offset(second) > parse_offset(first)
            assert plain["priority"] == "normal"
            assert plain["user_id"] is None and plain["correlation_id"] is None


# -- replay ---------------------------------------------------------------------------------


async def test_since_offset_replays_then_replayed_then_live(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            old = [await app.publish("system.status", {"n": n}) for n in range(4)]
            await app.publish("system.alert", {"title": "other type"})
            await ws.send(
                {"type": "subscribe", "id": "s", "event_types": ["system.status"], "since": old[0]}
            )
            await ws.expect("subscribed", ref="s")
            assert ids(await ws.events(3)) == old[1:]
            await ws.expect("replayed", ref="s", count=3, truncated=False)
            live = await app.publish("system.status", {"n": 4})
            assert (await ws.event())["id"] == live


async def test_since_zero_replays_everything_retained(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            old = [await app.publish("test.started", {"test_id": f"t-{n}"}) for n in range(3)]
            await ws.send({"type": "subscribe", "id": "s", "event_types": ["*"], "since": "0"})
            await ws.expect("subscribed", ref="s")
            assert ids(await ws.events(3)) == old
            await ws.expect("replayed", ref="s", count=3, truncated=False)


async def test_replay_seam_has_no_gap_and_no_duplicate(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(20):
        async with live_app() as app, app.ws() as ws:
            published: list[str] = []
            some_published = anyio.Event()

            async def publish_many() -> None:
                for n in range(60):
                    published.append(await app.publish("system.status", {"n": n}))
                    if n == 20:
                        some_published.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(publish_many)
                await some_published.wait()
                await ws.send(
                    {"type": "subscribe", "id": "s", "event_types": ["*"], "since": "0"}
                )
            await ws.expect("subscribed", ref="s")
            received: list[str] = []
            seen_replayed = False
            while len(received) < 60 or not seen_replayed:
                frame = await ws.recv()
                if frame["type"] == "replayed":
                    assert not seen_replayed
                    seen_replayed = True
                    assert frame["count"] == len(received)
                else:
                    assert frame["type"] == "event", frame
                    received.append(frame["id"])
            assert received == published


async def test_replay_limit_keeps_newest_and_every_critical(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(replay_limit=3) as app, app.ws() as ws:
            c1 = await app.publish("system.alert", {"title": "c1"}, priority="critical")
            n = [await app.publish("system.status", {"n": i}) for i in range(3)]
            c2 = await app.publish("system.alert", {"title": "c2"}, priority="critical")
            n4 = await app.publish("system.status", {"n": 4})
            await ws.send({"type": "subscribe", "id": "s", "event_types": ["*"], "since": "0"})
            await ws.expect("subscribed", ref="s")
            got = ids(await ws.events(3))
            assert got == [c1, c2, n4], (got, c1, n, c2, n4)
            await ws.expect("replayed", ref="s", count=3, truncated=True)
            assert n  # the normal ones were skipped


async def test_replay_limit_keeps_newest_critical_when_they_alone_exceed(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(10):
        async with live_app(replay_limit=2) as app, app.ws() as ws:
            crit = [
                await app.publish("system.alert", {"n": i}, priority="critical") for i in range(3)
            ]
            await app.publish("system.status", {})
            await ws.send({"type": "subscribe", "id": "s", "event_types": ["*"], "since": "0"})
            await ws.expect("subscribed", ref="s")
            assert ids(await ws.events(2)) == crit[1:]
            await ws.expect("replayed", ref="s", count=2, truncated=True)


async def test_replay_within_limit_is_not_truncated(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(replay_limit=3) as app, app.ws() as ws:
            sent = [await app.publish("system.status", {"n": i}) for i in range(3)]
            await ws.send({"type": "subscribe", "id": "s", "event_types": ["*"], "since": "0"})
            await ws.expect("subscribed", ref="s")
            assert ids(await ws.events(3)) == sent
            await ws.expect("replayed", ref="s", count=3, truncated=False)


# -- client_id offsets and acks ----------------------------------------------------------------


async def test_absent_since_resumes_from_stored_client_offset(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(15):
        async with live_app() as app:
            sent = [await app.publish("system.status", {"n": i}) for i in range(4)]
            async with app.ws(client_id="dev-1") as ws:
                assert ws.welcome["resume_from"] is None
                await ws.send({"type": "ack", "id": "a", "offset": sent[1]})
                await ws.expect("acked", ref="a", offset=sent[1])
            async with app.ws(client_id="dev-1") as ws:
                assert ws.welcome["resume_from"] == sent[1]
                await ws.send({"type": "subscribe", "id": "s", "event_types": ["*"]})
                await ws.expect("subscribed", ref="s")
                assert ids(await ws.events(2)) == sent[2:]
                await ws.expect("replayed", ref="s", count=2)
            # another user's client of the same name has its own offset
            async with app.ws(app.token("u-2"), client_id="dev-1") as ws:
                assert ws.welcome["resume_from"] is None
                _, replayed = await ws.subscribe(["*"])
                assert replayed["count"] == 0
            # without a client_id, no since means live only
            async with app.ws() as ws:
                _, replayed = await ws.subscribe(["*"])
                assert replayed["count"] == 0


async def test_ack_stores_the_max_offset(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(15):
        async with live_app() as app:
            sent = [await app.publish("system.status", {"n": i}) for i in range(3)]
            async with app.ws(client_id="c") as ws:
                await ws.send({"type": "ack", "id": 1, "offset": sent[2]})
                await ws.expect("acked", ref=1, offset=sent[2])
                await ws.send({"type": "ack", "id": 2, "offset": sent[0]})
                await ws.expect("acked", ref=2, offset=sent[2])
            async with app.ws(client_id="c") as ws:
                assert ws.welcome["resume_from"] == sent[2]
                await ws.send({"type": "ack", "id": 3, "offset": sent[1]})
                await ws.expect("acked", ref=3)
            async with app.ws(client_id="c") as ws:
                assert ws.welcome["resume_from"] == sent[2]
            stored = await app.service.log.stored_offset("u-1", "c")
            assert stored == sent[2]


async def test_ack_without_client_id(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            await ws.send({"type": "ack", "id": "a", "offset": "1-0"})
            await ws.expect("error", ref="a", code="no_client_id")


# -- ping / pong, heartbeats, token expiry ---------------------------------------------------


async def test_ping_gets_pong_with_ref(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            await ws.send({"type": "ping", "id": "p1"})
            await ws.expect("pong", ref="p1")
            await ws.send({"type": "ping", "id": 2})
            await ws.expect("pong", ref=2)


async def test_heartbeat_timeout_closes_4002(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(heartbeat_interval=0.2, heartbeat_timeout=0.3) as app:
            async with app.ws() as ws:
                ping = await ws.expect("ping")
                assert isinstance(ping["ts"], int | float)
                assert await ws.closed_with() == 4002


async def test_heartbeat_answered_keeps_the_socket_open(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(heartbeat_interval=0.2, heartbeat_timeout=0.3) as app:
            async with app.ws() as ws:
                started = time.monotonic()
                pings = 0
                while time.monotonic() - started < 1.5:
                    await ws.expect("ping")
                    pings += 1
                    await ws.send({"type": "pong"})
                assert pings >= 4
                await ws.send({"type": "ping", "id": "alive"})
                while (frame := await ws.recv(pings=True))["type"] == "ping":
                    await ws.send({"type": "pong"})
                assert frame == {"type": "pong", "ref": "alive"}


async def test_token_expiring_then_close_4001(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(token_expiry_warning=1.0, heartbeat_timeout=0.4) as app:
            token, exp = app.auth.mint("u-1", ["admin"], None, 1.5)
            async with app.ws(token) as ws:
                warning = await ws.expect("token.expiring")
                assert 0 < warning["expires_in"] <= 1.0
                assert exp - time.time() <= 1.2
                assert await ws.closed_with() == 4001
                assert time.time() >= exp - 0.05


async def test_refresh_with_same_sub_extends_the_session(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(token_expiry_warning=1.0, heartbeat_timeout=0.4) as app:
            token, exp = app.auth.mint("u-1", ["admin"], None, 1.5)
            async with app.ws(token) as ws:
                await ws.expect("token.expiring")
                await ws.send({"type": "refresh", "id": "r", "token": app.token("u-1")})
                refreshed = await ws.expect("refreshed", ref="r")
                assert refreshed["expires_at"] > exp
                await anyio.sleep(max(0.0, exp - time.time()) + 0.5)
                await ws.send({"type": "ping", "id": "p"})
                await ws.expect("pong", ref="p")


async def test_refused_refresh_keeps_the_old_token(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(token_expiry_warning=1.0, heartbeat_timeout=0.4) as app:
            token, _ = app.auth.mint("u-1", ["admin"], None, 1.5)
            async with app.ws(token) as ws:
                await ws.subscribe(["*"])
                await ws.send({"type": "refresh", "id": "x", "token": app.token("someone-else")})
                await ws.expect("error", ref="x", code="invalid_token")
                await ws.send({"type": "refresh", "id": "y", "token": "garbage"})
                await ws.expect("error", ref="y", code="invalid_token")
                expired = hs256({"sub": "u-1", "roles": ["admin"], "exp": int(time.time()) - 1})
                await ws.send({"type": "refresh", "id": "z", "token": expired})
                await ws.expect("error", ref="z", code="invalid_token")
                # the old token still works, and still expires
                eid = await app.publish("system.status", {})
                assert (await ws.event())["id"] == eid
                await ws.expect("token.expiring")
                assert await ws.closed_with() == 4001


# -- malformed frames and rate limits ----------------------------------------------------------


async def test_malformed_frames_get_bad_request_and_break_nothing(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            bad: list[str | bytes] = [
                "not json",
                "[1, 2]",
                json.dumps({"type": "no-such-type", "id": "u"}),
                json.dumps({"id": "no-type"}),
                json.dumps({"type": "subscribe", "id": "w", "event_types": "test.*"}),
                json.dumps({"type": "subscribe", "id": "w2", "event_types": ["nope.*"]}),
                json.dumps({"type": "subscribe", "id": "w3", "event_types": []}),
                json.dumps({"type": "subscribe", "id": "w4", "event_types": ["*"], "since": "x"}),
                json.dumps({"type": "ack", "id": "a"}),
                json.dumps({"type": "unsubscribe", "id": 5, "subscription": 5}),
                '{"type": "ping", "id": "deep", "x": ' + "[" * 10_000 + "]" * 10_000 + "}",
                json.dumps({"type": "ping", "id": "d33", "x": _nested(33)}),
                b"\xff\xfe",
            ]
            for frame in bad:
                await ws.send(frame)
                error = await ws.expect("error")
                assert error["code"] == "bad_request", (frame[:80], error)
            await ws.subscribe(["system.status"])
            eid = await app.publish("system.status", {})
            assert (await ws.event())["id"] == eid
            await ws.send({"type": "ping", "id": "still"})
            await ws.expect("pong", ref="still")


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_a_frame_32_deep_is_served_33_deep_is_a_bad_request(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            # the frame object is one level; its "x" the rest
            await ws.send(json.dumps({"type": "ping", "id": "ok", "x": _nested(30)}))
            await ws.expect("pong", ref="ok")
            await ws.send(json.dumps({"type": "ping", "id": "no", "x": _nested(32)}))
            error = await ws.expect("error", code="bad_request")
            assert "deeper than 32" in error["message"]


async def test_a_frame_over_64_kib_closes_1009_and_others_carry_on(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws, app.ws() as other:
            fits = json.dumps({"type": "ping", "id": "fits", "pad": ""})
            fits = fits.replace('""', '"' + "x" * (64 * 1024 - len(fits)) + '"')
            assert len(fits) == 64 * 1024
            await ws.send(fits)
            await ws.expect("pong", ref="fits")
            await ws.send(json.dumps({"type": "ping", "id": "big", "pad": "x" * (64 * 1024)}))
            assert await ws.closed_with() == 1009
            await other.send({"type": "ping", "id": "still"})
            await other.expect("pong", ref="still")


async def test_bad_request_carries_ref_when_the_frame_has_an_id(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            await ws.send({"type": "subscribe", "id": "r9", "event_types": "test.*"})
            await ws.expect("error", ref="r9", code="bad_request")


async def test_frames_over_the_rate_are_refused_then_closed_4008(
    live_app: LiveAppFactory,
) -> None:
    with anyio.fail_after(10):
        async with live_app(client_rate=0.5, client_burst=3) as app, app.ws() as ws:
            for n in range(6):
                await ws.send({"type": "ping", "id": n})
            replies = [await ws.recv() for _ in range(6)]
            assert replies[:3] == [{"type": "pong", "ref": n} for n in range(3)]
            for n, reply in enumerate(replies[3:], start=3):
                assert reply["type"] == "error" and reply["code"] == "rate_limited", reply
                assert reply["ref"] == n
            # refused frames are not acted on: a refused subscribe subscribes nothing
            await ws.send({"type": "subscribe", "id": "s", "event_types": ["*"]})
            assert await ws.closed_with() == 4008


async def test_rate_limited_subscribe_is_not_acted_on(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app(client_rate=0.5, client_burst=1) as app, app.ws() as ws:
            await ws.subscribe(["system.status"], ref="ok")
            await ws.send({"type": "subscribe", "id": "r", "event_types": ["system.alert"]})
            await ws.expect("error", ref="r", code="rate_limited")
            await app.publish("system.alert", {"title": "not subscribed"})
            eid = await app.publish("system.status", {})
            assert (await ws.event())["id"] == eid


# -- audience, at-most-once, ttl ----------------------------------------------------------------


async def test_audience_users_groups_roles(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(15):
        async with live_app() as app:
            clients = {
                "admin": app.ws(app.token("adm", ["admin"])),
                "alice": app.ws(app.token("alice", ["viewer"])),
                "bob": app.ws(app.token("bob", ["viewer"], ["red-team"])),
                "carol": app.ws(app.token("carol", ["analyst"])),
            }
            conns: dict[str, WsClient] = {}
            for name, cm in clients.items():
                conns[name] = await cm.__aenter__()
            try:
                for ws in conns.values():
                    await ws.subscribe(["test.*", "user.notification", "system.maintenance"])
                to_alice = await app.publish(
                    "user.notification", {"title": "hi"}, audience={"users": ["alice"]}
                )
                to_group = await app.publish(
                    "test.started", {"test_id": "t"}, audience={"groups": ["red-team"]}
                )
                to_role = await app.publish(
                    "test.started", {"test_id": "t"}, audience={"roles": ["analyst"]}
                )
                to_admins = await app.publish(
                    "test.started", {"test_id": "t"}, audience={"roles": ["admin"]}
                )
                everyone = await app.publish("system.maintenance", {})
                expected = {
                    "admin": [to_admins, everyone],
                    "alice": [to_alice, everyone],
                    "bob": [to_group, everyone],
                    "carol": [to_role, everyone],
                }
                for name, want in expected.items():
                    assert ids(await conns[name].events(2)) == want, name
            finally:
                for cm in clients.values():
                    await cm.__aexit__(None, None, None)


async def test_audience_applies_to_replay(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app:
            await app.publish("user.notification", {"title": "x"}, audience={"users": ["bob"]})
            mine = await app.publish(
                "user.notification", {"title": "y"}, audience={"users": ["u-1"]}
            )
            async with app.ws() as ws:
                await ws.send({"type": "subscribe", "id": "s", "event_types": ["*"], "since": "0"})
                await ws.expect("subscribed", ref="s")
                assert (await ws.event())["id"] == mine
                await ws.expect("replayed", ref="s", count=1)


async def test_event_reaches_a_connection_at_most_once(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app, app.ws() as ws:
            first = await app.publish("test.progress", {"test_id": "t-1", "progress": 1})
            await ws.subscribe(["test.*"], ref="a")
            await ws.subscribe(["test.progress"], ref="b", test_id="t-1")
            await ws.subscribe(["*"], ref="c")
            live = await app.publish("test.progress", {"test_id": "t-1", "progress": 2})
            sentinel = await app.publish("system.status", {})
            assert ids(await ws.events(2)) == [live, sentinel]
            # a later subscription's replay skips what this connection already got
            await ws.send({"type": "subscribe", "id": "d", "event_types": ["test.*"], "since": "0"})
            await ws.expect("subscribed", ref="d")
            assert (await ws.event())["id"] == first
            await ws.expect("replayed", ref="d", count=1)


async def test_expired_ttl_events_are_not_delivered_or_replayed(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(10):
        async with live_app() as app:
            async with app.ws() as ws:
                await ws.subscribe(["system.status"])
                await app.publish("system.status", {"n": "expired"}, ttl=0.000001)
                kept = await app.publish("system.status", {"n": "kept"}, ttl=3600)
                assert (await ws.event())["id"] == kept
                await ws.send({"type": "subscribe", "id": "r", "event_types": ["*"], "since": "0"})
                await ws.expect("subscribed", ref="r")
                await ws.expect("replayed", ref="r", count=0)
            async with app.ws() as ws:
                await ws.send({"type": "subscribe", "id": "r", "event_types": ["*"], "since": "0"})
                await ws.expect("subscribed", ref="r")
                assert (await ws.event())["id"] == kept
                await ws.expect("replayed", ref="r", count=1)
