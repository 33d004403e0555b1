"""Whole-process delivery under load: the replay/live seam while publishing at full speed,
and a flooding client beside a normal one (slow readers: test_lossless.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import httpx
import pytest

from streamclient import (
    ENV,
    Client,
    assert_increasing,
    key,
    log_ids,
    open_client,
    post_events,
    status,
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
