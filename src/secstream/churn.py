"""Clients that come and go while events are published: none may miss or repeat one.

Each client watches one test's output (events spread over ``tests`` test ids),
lives a random time, closes its socket and reconnects with ``since`` set to
the last id it received, until the publishing is over and it has the last
event. Then every client's ids are compared with the log's: gaps, duplicates,
disorder; and how long each reconnect took to catch up with what had been
published when it began.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from secstream.protocol import PublishRequest, parse_offset
from secstream.publisher import Publisher


@dataclasses.dataclass
class Report:
    clients: int
    published: int
    reconnects: int = 0
    complete: int = 0
    gaps: int = 0
    duplicates: int = 0
    disordered: int = 0
    catch_up: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        values = sorted(self.catch_up)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(q * len(values)))]

    def summary(self) -> str:
        median = statistics.median(self.catch_up) if self.catch_up else 0.0
        return (
            f"{self.clients} clients, {self.published} events in {self.seconds:.0f} s, "
            f"{self.reconnects} reconnects; {self.gaps} gaps, {self.duplicates} duplicates, "
            f"{self.disordered} out of order; {self.complete} complete; catch-up after a "
            f"reconnect median {median * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms"
        )


class Churn:
    def __init__(
        self,
        ws_url: str,
        redis_url: str,
        *,
        token: Callable[[str], str],
        clients: int = 200,
        rate: float = 300,
        seconds: float = 20,
        tests: int = 20,
        lifetime: tuple[float, float] = (0.2, 2.0),
        rng: random.Random | None = None,
        key_prefix: str | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.redis_url = redis_url
        self.token = token
        self.clients = clients
        self.rate = rate
        self.seconds = seconds
        self.tests = [f"churn-{i}" for i in range(tests)]
        self.lifetime = lifetime
        self.rng = rng or random.Random()
        self.key_prefix = key_prefix
        self.published: dict[str, list[str]] = {t: [] for t in self.tests}
        self.newest: dict[str, str] = {}
        self.done = asyncio.Event()
        self.report = Report(clients, 0)
        self.results: list[list[str]] = []

    async def run(self) -> Report:
        started = time.monotonic()
        async with Publisher(self.redis_url, self.key_prefix) as pub:
            start = await pub.log.last_id()
            report = self.report = Report(self.clients, 0)
            results = self.results = [[] for _ in range(self.clients)]
            runners = [
                asyncio.create_task(self._client(i, start, results[i], report))
                for i in range(self.clients)
            ]
            try:
                await self._publish(pub)
                self.done.set()
                await asyncio.wait_for(asyncio.gather(*runners), 120)
            finally:
                for task in runners:
                    task.cancel()
        report.seconds = time.monotonic() - started
        report.published = sum(len(ids) for ids in self.published.values())
        for i, got in enumerate(results):
            want = self.published[self.tests[i % len(self.tests)]]
            report.duplicates += len(got) - len(set(got))
            report.disordered += sum(
                1 for a, b in itertools.pairwise(got) if parse_offset(b) <= parse_offset(a)
            )
            report.gaps += len(set(want) - set(got))
            report.complete += got == want
        return report

    async def _publish(self, pub: Publisher) -> None:
        tick = 0.1
        per_tick = max(1, round(self.rate * tick))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        n = 0
        while loop.time() < deadline:
            began = loop.time()
            events = []
            for _ in range(per_tick):
                test_id = self.tests[n % len(self.tests)]
                events.append(PublishRequest(
                    event_type="test.progress",
                    data={"test_id": test_id, "progress": n % 100, "output": f"line {n}"},
                ))
                n += 1
            ids = await pub.log.append(events)
            for event, offset in zip(events, ids, strict=True):
                test_id = event.data["test_id"]
                self.published[test_id].append(offset)
                self.newest[test_id] = offset
            await asyncio.sleep(max(0.0, tick - (loop.time() - began)))

    async def _client(self, n: int, start: str, got: list[str], report: Report) -> None:
        test_id = self.tests[n % len(self.tests)]
        token = self.token(f"churn-{n}")
        await asyncio.sleep(self.rng.uniform(0, self.lifetime[1]))
        while True:
            target = self.newest.get(test_id)
            since = got[-1] if got else start
            began = time.monotonic()
            try:
                async with websockets.connect(
                    self.ws_url,
                    subprotocols=["secstream.v1", f"bearer.{token}"],  # type: ignore[list-item]
                    max_size=None,
                    open_timeout=10,
                    ping_interval=None,
                ) as ws:
                    await ws.send(json.dumps({
                        "type": "subscribe", "id": 1, "event_types": ["test.progress"],
                        "test_id": test_id, "since": since,
                    }))
                    life = self.rng.uniform(*self.lifetime)
                    await self._read(ws, got, began + life, target, began, report)
            except (InvalidStatus, OSError, ConnectionClosed, TimeoutError):
                await asyncio.sleep(self.rng.uniform(0.05, 0.5))
            report.reconnects += 1
            final = self.published[test_id][-1] if self.published[test_id] else None
            if self.done.is_set() and (final is None or (got and got[-1] == final)):
                return

    async def _read(
        self,
        ws: websockets.ClientConnection,
        got: list[str],
        until: float,
        target: str | None,
        began: float,
        report: Report,
    ) -> None:
        """Record event ids until ``until``; note when ``target`` arrived."""
        caught_up = target is None
        while (left := until - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                return
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "ping":
                await ws.send('{"type":"pong"}')
                continue
            events = frame["events"] if kind == "batch" else [frame] if kind == "event" else []
            got.extend(event["id"] for event in events)
            if not caught_up and got and target is not None and (
                parse_offset(got[-1]) >= parse_offset(target)
            ):
                caught_up = True
                report.catch_up.append(time.monotonic() - began)
