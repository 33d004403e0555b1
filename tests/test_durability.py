"""Whole-process durability: offsets per client_id, restarts of the service and of Redis,
several nodes on one Redis, a node killed, a Redis outage, SIGTERM draining."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from secstream import Publisher
from secstream.redis_server import RedisServer
from streamclient import (
    ENV,
    Client,
    assert_increasing,
    log_ids,
    open_client,
    post_event,
    post_events,
    status,
    token,
)
from support import ServeProcess

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

Serve = Callable[..., ServeProcess]


async def _ack_last(client: Client) -> str:
    last = client.ids[-1]
    reply = await client.request({"type": "ack", "offset": last})
    assert reply == {"type": "acked", "offset": last, "ref": reply["ref"]}, reply
    return last


async def test_offline_delivery_resumes_from_the_acked_offset(serve: Serve, redis_url: str) -> None:
    node = serve(redis_url, env=ENV)
    async with httpx.AsyncClient(timeout=10) as http:
        first = await post_events(http, node.base_url, [status(i) for i in range(5)])
        client = await open_client(node.ws_url, client_id="desk-1")
        try:
            assert client.welcome["resume_from"] is None
            replayed = await client.subscribe(since="0")
            assert replayed["count"] == 5
            assert client.ids == first
            acked = await _ack_last(client)
        finally:
            await client.aclose()

        missed = await post_events(http, node.base_url, [status(i) for i in range(5, 12)])
        again = await open_client(node.ws_url, client_id="desk-1")
        try:
            assert again.welcome["resume_from"] == acked
            replayed = await again.subscribe()  # no since: from the stored offset
            assert replayed["count"] == len(missed), replayed
            assert again.ids == missed
            # and live afterwards, with nothing doubled
            live = await post_events(http, node.base_url, [status(99)])
            await again.wait_for(lambda: len(again.ids) == len(missed) + 1, what="live event")
            assert again.ids == missed + live
        finally:
            await again.aclose()

        # another user's client with the same client_id has no stored offset
        other = await open_client(node.ws_url, sub="u-other", client_id="desk-1")
        try:
            assert other.welcome["resume_from"] is None
        finally:
            await other.aclose()


async def test_sigterm_drains_closes_1001_flushes_acks_and_exits_0(
    serve: Serve, redis_url: str
) -> None:
    node = serve(redis_url, env=ENV)
    async with httpx.AsyncClient(timeout=10) as http:
        ids = await post_events(http, node.base_url, [status(i) for i in range(3)])
    clients = [await open_client(node.ws_url, client_id=f"c{i}") for i in range(3)]
    try:
        for c in clients:
            await c.subscribe(since="0")
            await c.wait_for(lambda c=c: len(c.ids) == 3, what="replay")
        # ack, then SIGTERM straight after the reply: the ack is still only pending in memory
        durable = clients[0]
        reply = await durable.request({"type": "ack", "offset": ids[1]})
        assert reply["type"] == "acked"
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, node.terminate, 10)
        elapsed = time.monotonic() - started
        assert code == 0, node.log_tail()
        assert elapsed < 10, elapsed
        for c in clients:
            assert await c.wait_closed(5) == 1001
    finally:
        for c in clients:
            await c.aclose()
    print(f"SIGTERM to exit: {elapsed:.2f} s with 3 sockets")

    node.start()
    again = await open_client(node.ws_url, client_id="c0")
    try:
        assert again.welcome["resume_from"] == ids[1]
        await again.subscribe()
        assert again.ids == ids[2:]
    finally:
        await again.aclose()


async def test_sigterm_answers_long_polls_at_once_and_exits_0(
    serve: Serve, redis_url: str
) -> None:
    """A draining node answers an open long-poll (an empty page and ``next``, so the
    client polls again elsewhere) instead of leaving it to be cut off."""
    node = serve(redis_url, env=ENV)
    headers = {"Authorization": f"Bearer {token('poller', ['viewer'])}"}
    async with httpx.AsyncClient(base_url=node.base_url, headers=headers, timeout=40) as http:
        end = (await http.get("/api/v1/events")).json()["next"]
        poll = asyncio.create_task(http.get("/api/v1/events", params={"since": end, "wait": 30}))
        await asyncio.sleep(0.5)
        assert not poll.done()
        started = time.monotonic()
        code = await asyncio.get_running_loop().run_in_executor(None, node.terminate, 10)
        response = await poll
        elapsed = time.monotonic() - started
    assert code == 0, node.log_tail()
    assert response.status_code == 200, response.text
    assert response.json() == {"events": [], "next": end, "truncated": False}
    assert elapsed < 5, f"{elapsed:.1f} s to answer the long-poll and exit"


async def test_service_and_redis_restart_lose_nothing_for_a_durable_client(
    serve: Serve, redis_server: RedisServer
) -> None:
    url = redis_server.url
    node = serve(url, env=ENV)
    async with httpx.AsyncClient(timeout=10) as http:
        before = await post_events(http, node.base_url, [status(i) for i in range(4)])
    client = await open_client(node.ws_url, client_id="durable")
    try:
        await client.subscribe(since="0")
        await client.wait_for(lambda: client.ids == before, what="first events")
        acked = await _ack_last(client)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        assert await loop.run_in_executor(None, node.terminate, 10) == 0
        stop_s = time.monotonic() - started
        assert await client.wait_closed(5) == 1001
    finally:
        await client.aclose()

    # published while the service is down, straight into the log
    async with Publisher(url) as pub:
        offline = [await pub.publish("system.status", {"seq": 100 + i}) for i in range(3)]
    redis_server.stop()
    redis_server.start()  # the same port; AOF brings the log and the offsets back
    async with Publisher(url) as pub:
        offline.append(await pub.publish("system.alert", {"title": "after"}, priority="critical"))

    started = time.monotonic()
    node.start()
    node.wait_http("/health/ready")
    start_s = time.monotonic() - started
    again = await open_client(node.ws_url, client_id="durable")
    try:
        assert again.welcome["resume_from"] == acked
        replayed = await again.subscribe()
        assert replayed == {**replayed, "count": len(offline), "truncated": False}
        assert again.ids == offline
    finally:
        await again.aclose()
    assert await log_ids(url) == before + offline
    print(f"service stop {stop_s:.2f} s, start to ready {start_s:.2f} s")


async def test_two_nodes_on_one_redis(serve: Serve, redis_url: str) -> None:
    a = serve(redis_url, env=ENV, name="a")
    b = serve(redis_url, env=ENV, name="b")
    on_b = await open_client(b.ws_url)
    on_a = await open_client(a.ws_url)
    try:
        await on_b.subscribe(["system.*"])
        await on_a.subscribe(["system.*"])
        async with httpx.AsyncClient(timeout=10) as http:
            via_a = await post_events(http, a.base_url, [status(i) for i in range(5)])
            via_b = await post_events(http, b.base_url, [status(i) for i in range(5, 10)])
        want = via_a + via_b
        for c in (on_a, on_b):
            await c.wait_for(lambda c=c: len(c.ids) >= 10, what="events of both nodes")
            assert c.ids == want
    finally:
        await on_a.aclose()
        await on_b.aclose()


async def test_sigkill_of_one_node_resume_on_the_other(serve: Serve, redis_url: str) -> None:
    a = serve(redis_url, env=ENV, name="a")
    b = serve(redis_url, env=ENV, name="b")
    stop = asyncio.Event()
    published: list[str] = []

    async def publish_forever() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            seq = 0
            while not stop.is_set():
                batch = [status(seq), status(seq + 1)]
                published.extend(await post_events(http, b.base_url, batch))
                seq += 2
                await asyncio.sleep(0.005)

    client = await open_client(a.ws_url)
    await client.subscribe(["system.status"], since="0")
    task = asyncio.create_task(publish_forever())
    try:
        await client.wait_for(lambda: len(client.ids) >= 40, what="events before the kill")
        a.kill()
        await client.wait_closed(5)
        seen = list(client.ids)
        await client.aclose()
        resumed = await open_client(b.ws_url)
        try:
            await resumed.subscribe(["system.status"], since=seen[-1])
            await asyncio.sleep(0.5)
            stop.set()
            await task
            await resumed.wait_for(
                lambda: resumed.ids and resumed.ids[-1] == published[-1], what="the last event"
            )
            got = seen + resumed.ids
        finally:
            await resumed.aclose()
    finally:
        stop.set()
        await task
        await client.aclose()
    assert len(got) == len(set(got)), "duplicates across the failover"
    assert_increasing(got, "failover")
    assert got == await log_ids(redis_url)
    assert len(seen) >= 40 and len(got) > len(seen)


async def test_redis_outage(serve: Serve, redis_server: RedisServer) -> None:
    url = redis_server.url
    node = serve(url, env=ENV)
    async with httpx.AsyncClient(timeout=10) as http:
        client = await open_client(node.ws_url)
        try:
            await client.subscribe(["system.*"])
            before = await post_events(http, node.base_url, [status(1), status(2)])
            await client.wait_for(lambda: client.ids == before, what="events before the outage")

            redis_server.stop()
            ready = await http.get(f"{node.base_url}/health/ready")
            assert ready.status_code == 503, ready.text
            published = await post_event(http, node.base_url, status(3))
            assert published.status_code == 503, published.text
            assert published.json()["error"] == "unavailable"
            assert published.headers.get("Retry-After")
            # the socket stays open and answers
            await asyncio.sleep(1.0)
            pong = await client.request({"type": "ping"})
            assert pong["type"] == "pong"
            assert client.close_code is None and not client._reader.done()

            redis_server.start()
            # events appended straight to the log while the tail may still be reconnecting
            async with Publisher(url) as pub:
                during = [await pub.publish("system.status", {"seq": 10 + i}) for i in range(5)]
            after: list[str] = []
            deadline = time.monotonic() + 10
            while not after:  # publish right after the restart, as soon as the node takes it
                response = await post_event(http, node.base_url, status(20))
                if response.status_code == 202:
                    after.append(response.json()["id"])
                else:
                    assert response.status_code == 503 and time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            ready = await http.get(f"{node.base_url}/health/ready")
            assert ready.status_code == 200
            want = before + during + after
            await client.wait_for(lambda: len(client.ids) >= len(want), what="events after outage")
            await asyncio.sleep(0.2)
            assert client.ids == want
            assert await log_ids(url) == want
        finally:
            await client.aclose()
