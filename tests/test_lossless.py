"""Lossless delivery (contract v2 section 4): whatever a client's speed, every matching
event in the log reaches it, in order, once; memory per connection stays bounded.

Each of issue 7's findings is a test here that failed on the first version's hub."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from secstream import Publisher
from secstream.config import Settings
from secstream.eventlog import RedisEventLog
from secstream.protocol import PublishRequest
from streamclient import (
    ENV,
    Client,
    assert_increasing,
    key,
    log_ids,
    open_client,
    post_events,
    status,
    token,
)
from support import ServeProcess

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

Serve = Callable[..., ServeProcess]


def _progress(
    n: int, test_id: str = "t-1", size: int = 400, *, noise: bool = False
) -> dict[str, object]:
    """An output line; with ``noise``, one permessage-deflate cannot shrink."""
    filler = base64.b64encode(os.urandom(size * 3 // 4)).decode() if noise else "x" * size
    line = f"line {n}: " + filler
    return {"event_type": "test.progress",
            "data": {"test_id": test_id, "progress": n % 100, "output": line}}


def _data(n: int) -> dict[str, object]:
    return {"test_id": "t-1", "progress": n % 100, "output": f"line {n}: " + "x" * 400}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_big_replay_reaches_a_small_queue_whole_alert_included(
    serve: Serve, redis_url: str
) -> None:
    """Finding 1: 9,000 events resumed through a 64 KiB queue, oldest first, nothing lost."""
    node = serve(redis_url, env={**ENV, "SECSTREAM_MAX_QUEUE_BYTES": "65536"})
    async with Publisher(redis_url) as pub:
        before = (await pub.publish("system.status", {"n": -1}))
        alert = await pub.publish("system.alert", {"title": "Open port 23"}, priority="critical")
        for start in range(0, 9000, 500):
            await pub.log.append(
                [PublishRequest(event_type="test.progress", data=_data(n))
                 for n in range(start, start + 500)]
            )
    want = [i for i in await log_ids(redis_url) if key(i) > key(before)]
    assert len(want) == 9001
    client = await open_client(node.ws_url, sub="resumer")
    try:
        replayed = await client.subscribe(["test.*", "system.alert"], since=before)
        assert replayed["count"] == 9001 and not replayed["truncated"]
        assert client.ids == want and client.ids[0] == alert
        assert client.close_code is None
    finally:
        await client.aclose()


async def test_a_reader_that_keeps_up_is_never_closed_by_one_big_publish(
    serve: Serve, redis_url: str
) -> None:
    """Finding 2: one batch of 100 events of 4 KB (400 KB) through a 64 KiB queue."""
    node = serve(redis_url, env={**ENV, "SECSTREAM_MAX_QUEUE_BYTES": "65536"})
    reader = await open_client(node.ws_url, sub="bursty")
    try:
        await reader.subscribe(["test.*"])
        async with httpx.AsyncClient(timeout=10) as http:
            published: list[str] = []
            for burst in range(3):
                published += await post_events(
                    http, node.base_url, [_progress(burst * 100 + i, size=4000) for i in range(100)]
                )
        await reader.wait_for(lambda: len(reader.ids) >= len(published), what="every event")
        assert reader.ids == published
        assert reader.close_code is None and not reader._reader.done()
        # Falling behind and catching up is announced, and always ends live.
        def states() -> list[str]:
            return [f["state"] for f in reader.frames if f["type"] == "connection.info"]

        await reader.wait_for(lambda: not states() or states()[-1] == "live", 5, "live")
        assert states()[::2] == ["catching_up"] * len(states()[::2])
    finally:
        await reader.aclose()


SLOW_MB = 30
RSS_BOUND_MIB = 120
"""How much the server's RSS may grow while 30 MB wait for a stalled client (64 KiB queue)."""


async def test_a_slow_reader_gets_everything_beside_a_normal_one_in_bounded_memory(
    serve: Serve, redis_url: str
) -> None:
    """Findings 2 and 3: 30 MB of output lines to a stalled client and a normal one. The
    normal one gets each promptly; the stalled one gets every line, in order, once it
    reads again; no line is coalesced away; the server's memory stays bounded."""
    node = serve(
        redis_url,
        env={**ENV, "SECSTREAM_MAX_QUEUE_BYTES": "65536", "SECSTREAM_STALL_TIMEOUT": "300",
             "SECSTREAM_PUBLISH_RATE": "100000", "SECSTREAM_PUBLISH_BURST": "100000"},
    )
    normal = await open_client(node.ws_url, sub="normal")
    slow = await open_client(node.ws_url, sub="slow", rcvbuf=8192, max_queue=1)
    try:
        await normal.subscribe(["test.*"])
        await slow.subscribe(["test.*"])
        slow.stall()
        rss_start = _rss_kib(node.pid)
        rss_peak = rss_start
        published: list[str] = []
        sent_at: dict[str, float] = {}
        size = 4000
        batches = SLOW_MB * 1_000_000 // (size * 100)
        async with httpx.AsyncClient(timeout=30) as http:
            for b in range(batches):
                start = time.monotonic()
                ids = await post_events(
                    http, node.base_url,
                    [_progress(b * 100 + i, size=size, noise=True) for i in range(100)],
                )
                sent_at.update((i, start) for i in ids)
                published += ids
                rss_peak = max(rss_peak, _rss_kib(node.pid))
                await asyncio.sleep(0.1)  # ~3 MB/s: the normal client can keep up with that
        await normal.wait_for(lambda: len(normal.ids) >= len(published), 60, "normal: all")
        assert normal.ids == published
        lags = sorted(normal.arrived[i] - sent_at[i] for i in published)
        median = lags[len(lags) // 2]
        assert median < 1.0, f"normal client's median publish-to-read {median:.3f} s"
        slow.unstall()
        started = time.monotonic()
        await slow.wait_for(lambda: len(slow.ids) >= len(published), 120, "slow: all")
        caught_up = time.monotonic() - started
        rss_peak = max(rss_peak, _rss_kib(node.pid))
        assert slow.ids == published  # every line, in order, exactly once
        assert slow.close_code is None
        states = [f["state"] for f in slow.frames if f["type"] == "connection.info"]
        assert states and states[0] == "catching_up"
        await slow.wait_for(
            lambda: [f["state"] for f in slow.frames if f["type"] == "connection.info"][-1]
            == "live", 10, "live again",
        )
        growth = (rss_peak - rss_start) / 1024
        print(
            f"slow reader: {len(published)} events ({SLOW_MB} MB); normal median lag "
            f"{median * 1000:.0f} ms; slow caught up in {caught_up:.1f} s; "
            f"server RSS {rss_start / 1024:.0f} -> peak {rss_peak / 1024:.0f} MiB"
        )
        assert growth < RSS_BOUND_MIB, f"server RSS grew {growth:.0f} MiB"
    finally:
        await normal.aclose()
        await slow.aclose()


async def test_a_client_that_stops_reading_is_closed_4009_after_the_stall_timeout(
    serve: Serve, redis_url: str
) -> None:
    node = serve(
        redis_url,
        env={**ENV, "SECSTREAM_MAX_QUEUE_BYTES": "65536", "SECSTREAM_STALL_TIMEOUT": "2",
             "SECSTREAM_PUBLISH_RATE": "100000", "SECSTREAM_PUBLISH_BURST": "100000"},
    )
    stalled = await open_client(node.ws_url, sub="stalled", rcvbuf=4096, max_queue=1)
    reader = await open_client(node.ws_url, sub="reader")
    try:
        await stalled.subscribe(["test.*"])
        await reader.subscribe(["test.*"])
        stalled.stall()
        published: list[str] = []
        async with httpx.AsyncClient(timeout=10) as http:

            async def metric() -> str:
                return (await http.get(f"{node.base_url}/metrics")).text

            # Publish until the kernel's buffers are full and the server's sends stop.
            started = time.monotonic()
            while "secstream_slow_consumers_total 1.0" not in await metric():
                assert len(published) < 10_000, "no 4009 after 40 MB"
                published += await post_events(
                    http, node.base_url,
                    [_progress(len(published) + i, size=4000, noise=True) for i in range(100)],
                )
                await asyncio.sleep(0.2)
            waited = time.monotonic() - started
            await reader.wait_for(lambda: len(reader.ids) >= len(published), what="reader")
            stalled.unstall()
            code = await stalled.wait_closed(15)
        assert code == 4009, code
        assert waited > 1.5, waited
        assert reader.ids == published and reader.close_code is None
        # What it got before the close is a prefix of the log, in order.
        assert stalled.ids == published[: len(stalled.ids)]
        print(f"stall: 4009 after {waited:.1f} s and {len(published)} events; "
              f"it had read {len(stalled.ids)}")
    finally:
        await reader.aclose()
        await stalled.aclose()


async def test_acked_survives_the_node_being_killed_right_after(
    serve: Serve, redis_url: str
) -> None:
    """Finding 4: ``acked`` is sent once the offset is in Redis."""
    first = serve(redis_url, env=ENV, name="first")
    second = serve(redis_url, env=ENV, name="second")
    async with httpx.AsyncClient(timeout=10) as http:
        ids = await post_events(http, first.base_url, [status(i) for i in range(5)])
    for offset in ids:
        client = await open_client(first.ws_url, sub="durable", client_id="laptop")
        reply = await client.request({"type": "ack", "offset": offset})
        assert reply["type"] == "acked" and reply["offset"] == offset
        first.kill()
        other = await open_client(second.ws_url, sub="durable", client_id="laptop")
        assert other.welcome["resume_from"] == offset
        await other.aclose()
        await client.aclose()
        first = serve(redis_url, env=ENV, name=f"first-{offset}")


async def test_retention_reaches_every_copy_of_an_event(redis_url: str) -> None:
    """Finding 6: trimming the log trims the per-test copies by the same rule."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    log = RedisEventLog(redis, prefix="ret", maxlen=1000, retention_seconds=60)
    try:
        def progress(test_id: str, n: int) -> PublishRequest:
            return PublishRequest(event_type="test.progress", data={"test_id": test_id, "n": n})

        old = await log.append([progress("old", n) for n in range(5)])
        both = await log.append([progress("long", n) for n in range(5)])
        await log.trim(now=time.time() + 120)  # everything so far is past retention
        later = await log.append([progress("long", n) for n in range(5, 8)])

        def everything(_: object) -> bool:
            return True

        page = await log.read_page("0", everything, limit=100, test_id="old")
        assert page.entries == [] and page.truncated
        assert not await redis.exists(log.test_key("old"))
        page = await log.read_page("0", everything, limit=100, test_id="long")
        assert [e.id for e in page.entries] == later and page.truncated
        # A test whose events are all retained is not reported truncated.
        fresh = await log.append([progress("fresh", 1)])
        page = await log.read_page("0", everything, limit=100, test_id="fresh")
        assert [e.id for e in page.entries] == fresh and not page.truncated
        assert old and both
    finally:
        await redis.aclose()


async def test_retention_by_length_reaches_the_per_test_copies(redis_url: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    log = RedisEventLog(redis, prefix="len", maxlen=100)
    try:
        ids = await log.append(
            [PublishRequest(event_type="test.progress", data={"test_id": "t", "n": n})
             for n in range(400)]
        )
        await log.trim()
        retained = [e.id for e in (await log.read_page("0", lambda e: True, limit=1000)).entries]
        per_test = await log.read_page("0", lambda e: True, limit=1000, test_id="t")
        assert [e.id for e in per_test.entries] == retained == ids[-len(retained):]
        assert per_test.truncated
    finally:
        await redis.aclose()


CHURN_CLIENTS = 200
CHURN_RATE = 300
CHURN_SECONDS = 20


async def test_churn_every_client_ends_with_every_event_once_in_order(
    serve: Serve, redis_url: str
) -> None:
    """200 clients living 0.2 to 2 s each, resuming from their last id, while 300 events/s
    are published for 20 s."""
    node = serve(redis_url, env={**ENV, "SECSTREAM_HANDSHAKE_RATE": "10000"})
    from secstream.churn import Churn

    churn = Churn(node.ws_url, redis_url, token=lambda sub: token(sub, ["viewer"]),
                  clients=CHURN_CLIENTS, rate=CHURN_RATE, seconds=CHURN_SECONDS, seed=11)
    report = await churn.run()
    print(f"churn: {report.summary()}")
    assert report.gaps == 0 and report.duplicates == 0 and report.disordered == 0
    assert report.complete == CHURN_CLIENTS
    assert report.reconnects > CHURN_CLIENTS * 5


async def test_subscribe_latest_keeps_only_the_newest_waiting_progress(
    serve: Serve, redis_url: str
) -> None:
    node = serve(redis_url, env={**ENV, "SECSTREAM_MAX_QUEUE_BYTES": "1048576"})
    widget = await open_client(node.ws_url, sub="widget", rcvbuf=8192, max_queue=1)
    try:
        await widget.subscribe(["test.progress"], latest=True)
        widget.stall()
        async with httpx.AsyncClient(timeout=10) as http:
            published = await post_events(
                http, node.base_url, [_progress(i, size=1000) for i in range(300)]
            )
        await asyncio.sleep(0.5)
        widget.unstall()
        await widget.wait_for(lambda: widget.ids and widget.ids[-1] == published[-1], 10, "last")
        assert_increasing(widget.ids, "latest")
        assert len(widget.ids) < len(published)  # older waiting ones were replaced
        assert set(widget.ids) <= set(published)
        assert json.loads(json.dumps(widget.events[-1]))["data"]["output"].startswith("line 299")
    finally:
        await widget.aclose()


async def test_settings_know_the_stall_timeout() -> None:
    assert Settings.from_env({"SECSTREAM_STALL_TIMEOUT": "7.5", "SECSTREAM_JWT_SECRET": "x" * 32},
                             ).stall_timeout == 7.5


_ = Client
