"""Whole-process delivery under load: the replay/live seam while publishing at full speed,
a flooding client, a client that never reads, and a progress storm with an alert in it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from secstream import Publisher
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


def _before_replayed(client: Client) -> int:
    """Events the client got before its (first) ``replayed`` frame."""
    count = 0
    for frame in client.frames:
        if frame["type"] == "replayed":
            return count
        count += len(frame["events"]) if frame["type"] == "batch" else frame["type"] == "event"
    raise AssertionError("no replayed frame")


async def test_replay_live_seam_under_concurrent_publishing(serve: Serve, redis_url: str) -> None:
    node = serve(redis_url, env=ENV)
    rng = random.Random(7)
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=10) as http:
        history = await post_events(http, node.base_url, [status(i) for i in range(300)])
        published = list(history)

        async def publish_at_full_speed() -> None:
            seq = 1000
            while not stop.is_set():
                published.extend(
                    await post_events(http, node.base_url, [status(seq + i) for i in range(25)])
                )
                seq += 25

        publishing = asyncio.create_task(publish_at_full_speed())
        clients: list[tuple[Client, str | None]] = []
        try:
            for i in range(20):
                kind = i % 4
                since = (
                    None if kind == 0
                    else "0" if kind == 1
                    else rng.choice(history) if kind == 2
                    else published[-1]
                )
                client = await open_client(node.ws_url, sub=f"seam-{i}")
                clients.append((client, since))
                await client.subscribe(["*"] if i % 2 else ["system.status"], since=since)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await publishing
        last = published[-1]
        try:
            for client, _ in clients:
                await client.wait_for(
                    lambda c=client: c.ids and key(c.ids[-1]) >= key(last), 20, "the last event"
                )
            log = await log_ids(redis_url)
            assert log == published
            counts = []
            for n, (client, since) in enumerate(clients):
                got = client.ids
                assert_increasing(got, f"client {n} (since={since})")
                if since is None:
                    assert got, f"client {n} got nothing live"
                    want = log[log.index(got[0]):]
                else:
                    want = [i for i in log if key(i) > key(since)]
                assert got == want, (
                    f"client {n} since={since}: {len(got)} events, expected {len(want)}; "
                    f"missing {sorted(set(want) - set(got), key=key)[:5]}, "
                    f"extra {sorted(set(got) - set(want), key=key)[:5]}"
                )
                replayed = next(f for f in client.frames if f["type"] == "replayed")
                assert replayed["count"] == _before_replayed(client)
                counts.append((since is not None, replayed["count"], len(got)))
        finally:
            for client, _ in clients:
                await client.aclose()
    print(
        f"seam: {len(log)} events in the log; per client (replay?, replayed, received): {counts}"
    )


async def test_flooding_client_is_limited_then_closed_4008_beside_a_normal_one(
    serve: Serve, redis_url: str
) -> None:
    node = serve(
        redis_url,
        env={**ENV, "SECSTREAM_CLIENT_RATE": "5", "SECSTREAM_CLIENT_BURST": "10"},
    )
    normal = await open_client(node.ws_url, sub="calm")
    flooder = await open_client(node.ws_url, sub="flood")
    try:
        await normal.subscribe(["system.status"])
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(400):
                if flooder._reader.done():
                    return
                try:
                    await flooder.send({"type": "ping", "id": i})
                except Exception:
                    return
                sent += 1
                await asyncio.sleep(0)

        async with httpx.AsyncClient(timeout=10) as http:
            flooding = asyncio.create_task(flood())
            ids: list[str] = []
            for i in range(10):
                ids += await post_events(http, node.base_url, [status(i)])
                await asyncio.sleep(0.02)
            await flooding
            assert await flooder.wait_closed(10) == 4008
            ids += await post_events(http, node.base_url, [status(99)])
        await normal.wait_for(lambda: len(normal.ids) >= len(ids), what="normal events")
        assert normal.ids == ids
        assert normal.close_code is None
        limited = [f for f in flooder.frames if f.get("code") == "rate_limited"]
        pongs = [f for f in flooder.frames if f["type"] == "pong"]
        assert limited, flooder.frames[-5:]
        assert all(f["type"] == "error" for f in limited)
        assert 1 <= len(pongs) <= 20, len(pongs)  # the burst, not the flood, was answered
        # rate_limited errors come before the close, after the burst
        first_limited = flooder.frames.index(limited[0])
        assert all(f["type"] != "pong" or f["ref"] < 40 for f in flooder.frames[first_limited:])
        print(f"flood: sent {sent}, {len(pongs)} pongs, {len(limited)} rate_limited, then 4008")
    finally:
        await normal.aclose()
        await flooder.aclose()


async def _metric(http: httpx.AsyncClient, base_url: str, name: str) -> float:
    text = (await http.get(f"{base_url}/metrics")).text
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return sum(float(v) for v in values)


async def test_a_client_that_never_reads_is_closed_4009_while_a_reader_keeps_up(
    serve: Serve, redis_url: str
) -> None:
    node = serve(redis_url, env={**ENV, "SECSTREAM_MAX_QUEUE_BYTES": "262144"})
    reader = await open_client(node.ws_url, sub="reader")
    stalled = _raw_subscriber(node.port, ["system.status"])  # never reads again (until the end)
    try:
        await reader.subscribe(["system.status"])
        await asyncio.sleep(0.2)
        blob = "x" * 2000
        published: list[str] = []
        sent_at: dict[str, float] = {}
        async with httpx.AsyncClient(timeout=10) as http:
            for batch in range(400):
                start = time.monotonic()
                ids = await post_events(
                    http, node.base_url, [status(batch * 20 + i, blob=blob) for i in range(20)]
                )
                sent_at.update((i, start) for i in ids)
                published += ids
                if batch % 5 == 4 and await _metric(
                    http, node.base_url, "secstream_slow_consumers_total"
                ):
                    break
                await asyncio.sleep(0.002)
            else:
                raise AssertionError(f"no slow consumer after {len(published) * 2} KB")
            await reader.wait_for(lambda: len(reader.ids) >= len(published), what="reader")
        assert reader.ids == published
        lags = sorted(reader.arrived[i] - sent_at[i] for i in published)
        median = lags[len(lags) // 2]
        assert median < 0.5, f"median publish-to-read {median:.3f} s"
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, _close_code, stalled) == 4009
        assert reader.close_code is None and not reader._reader.done()
        print(
            f"slow consumer: closed 4009 after {len(published)} events ({len(published) * 2} KB);"
            f" reader median lag {median * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms"
        )
    finally:
        await reader.aclose()
        stalled.close()


async def test_one_burst_over_the_queue_limit_does_not_close_a_reader_that_keeps_up(
    serve: Serve, redis_url: str
) -> None:
    """4009 is for bytes that *stay* queued: a single tail read bigger than the
    limit reaches a reader that keeps reading, and it stays connected."""
    node = serve(redis_url, env={**ENV, "SECSTREAM_MAX_QUEUE_BYTES": "65536"})
    reader = await open_client(node.ws_url, sub="bursty")
    try:
        await reader.subscribe(["system.status"])
        blob = "y" * 2000
        async with httpx.AsyncClient(timeout=10) as http:
            published: list[str] = []
            for burst in range(3):  # each one batch of ~200 KB: three times the limit
                published += await post_events(
                    http, node.base_url, [status(burst * 100 + i, blob=blob) for i in range(100)]
                )
            await reader.wait_for(lambda: len(reader.ids) >= len(published), what="reader")
            await asyncio.sleep(2.5)  # past the grace a queue may stay over the limit
            assert await _metric(http, node.base_url, "secstream_slow_consumers_total") == 0
        assert reader.ids == published
        assert reader.close_code is None and not reader._reader.done()
    finally:
        await reader.aclose()


def _raw_subscriber(port: int, event_types: list[str]) -> socket.socket:
    """A WebSocket handshake and one subscribe over a plain socket with a small receive
    buffer; nothing reads from it afterwards, so the server's writes back up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            f"Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: secstream.v1, bearer.{token('stalled')}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "subscribe", "event_types": event_types}).encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    sock.sendall(
        bytes([0x81, 0x80 | len(payload)]) + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )
    return sock


def _close_code(sock: socket.socket) -> int | None:
    """Read what the server sent until its close frame; that frame's code."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
        pos = 0
        while pos + 2 <= len(data):
            opcode, size = data[pos] & 0x0F, data[pos + 1] & 0x7F
            pos += 2
            if size == 126:
                size, pos = int.from_bytes(data[pos:pos + 2]), pos + 2
            elif size == 127:
                size, pos = int.from_bytes(data[pos:pos + 8]), pos + 8
            if opcode == 0x8 and pos + 2 <= len(data):
                return int.from_bytes(data[pos:pos + 2])
            pos += size
    return None


ALERT_BOUND = 0.05
N_STORM = 6000
"""The contract's target for a critical alert under a storm."""


async def test_progress_storm_is_coalesced_and_a_critical_alert_overtakes_it(
    serve: Serve, redis_url: str
) -> None:
    node = serve(redis_url, env={**ENV, "SECSTREAM_MAX_QUEUE_BYTES": "262144"})
    slow = await open_client(node.ws_url, sub="slow", rcvbuf=8192, max_queue=1)
    try:
        await slow.subscribe(["test.*", "system.alert"])
        # It stops reading for the first half of the storm, and reads again from the
        # moment the alert is published.
        slow.stall()
        output = "Running port scan on 192.168.1.1... " * 24
        storm = [
            {"event_type": "test.progress",
             "data": {"test_id": "t-storm", "progress": i % 100, "output": output}}
            for i in range(N_STORM)
        ]
        async with httpx.AsyncClient(timeout=10) as http, Publisher(redis_url) as pub:
            for start in range(0, N_STORM // 2, 250):
                await post_events(http, node.base_url, storm[start:start + 250])
            await asyncio.sleep(0.3)
            sent = time.monotonic()
            alert = await pub.publish(
                "system.alert", {"title": "Open port 23"}, priority="critical"
            )
            slow.unstall()
            for start in range(N_STORM // 2, N_STORM, 250):
                await post_events(http, node.base_url, storm[start:start + 250])
            last = (await log_ids(redis_url))[-1]
        await slow.wait_for(lambda: alert in slow.arrived, 10, "the alert")
        latency = slow.arrived[alert] - sent
        await slow.wait_for(lambda: slow.ids and slow.ids[-1] == last, 20, "the end of the storm")
        assert_increasing(slow.ids, "storm")
        notices = [e for e in slow.events if e["event_type"] == "connection.info"]
        assert notices, "the storm was not coalesced"
        assert all(n["data"]["reason"] == "coalesced" for n in notices)
        skipped = sum(n["data"]["skipped"] for n in notices)
        assert skipped > 0
        progress = [e for e in slow.events if e["event_type"] == "test.progress"]
        # every storm event is either delivered or counted in a notice
        assert len(progress) + skipped == len(storm), (len(progress), skipped)
        print(
            f"storm: alert latency {latency * 1000:.1f} ms, {len(progress)} progress delivered, "
            f"{skipped} coalesced in {len(notices)} notices"
        )
        assert latency < ALERT_BOUND, f"critical alert took {latency * 1000:.1f} ms under a storm"
    finally:
        await slow.aclose()
