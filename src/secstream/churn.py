"""Clients that come and go while events are published: none may miss or repeat one.

Each client watches one test's output (events spread over ``tests`` test ids),
lives a random time, closes its socket and reconnects with ``since`` set to
the last id it received; once the publishing is over, its last connection
stays until it has the test's last event. Then every client's ids are
compared with the log's: gaps, duplicates, disorder; and how long each
reconnect took to catch up with what had been published for its test when it
began. Clients run in ``processes`` worker processes (a Python client process
saturates long before the server does), and each checks against the log
itself, so nothing but a report crosses a process boundary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import multiprocessing
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from secstream.protocol import PublishRequest, parse_offset
from secstream.publisher import Publisher
from secstream.types import Offset


@dataclasses.dataclass
class Report:
    clients: int
    published: int = 0
    reconnects: int = 0
    complete: int = 0
    gaps: int = 0
    duplicates: int = 0
    disordered: int = 0
    catch_up: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Report) -> None:
        self.reconnects += other.reconnects
        self.complete += other.complete
        self.gaps += other.gaps
        self.duplicates += other.duplicates
        self.disordered += other.disordered
        self.catch_up += other.catch_up

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
            f"{self.disordered} out of order; {self.complete} complete (the others unfinished);"
            f" catch-up after a "
            f"reconnect median {median * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms"
        )


def test_ids(tests: int) -> list[str]:
    return [f"churn-{i}" for i in range(tests)]


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
        seed: int = 0,
        key_prefix: str | None = None,
        processes: int = 1,
    ) -> None:
        self.ws_url = ws_url
        self.redis_url = redis_url
        self.tokens = {n: token(f"churn-{n}") for n in range(clients)}
        self.clients = clients
        self.rate = rate
        self.seconds = seconds
        self.tests = tests
        self.lifetime = lifetime
        self.seed = seed
        self.key_prefix = key_prefix
        self.processes = max(1, processes)

    async def run(self) -> Report:
        started = time.monotonic()
        async with Publisher(self.redis_url, self.key_prefix) as pub:
            start = await pub.log.last_id()
            groups = [
                _Group(
                    self.ws_url, self.redis_url, self.key_prefix,
                    {n: t for n, t in self.tokens.items() if n % self.processes == k},
                    self.tests, self.lifetime, self.seed + k, start,
                )
                for k in range(self.processes)
            ]
            if self.processes == 1:
                done = asyncio.Event()
                running = asyncio.create_task(groups[0].run(done.wait, self.seconds))
                published = await self._publish(pub)
                done.set()
                reports = [await running]
            else:
                ctx = multiprocessing.get_context("spawn")
                flag = ctx.Event()
                pipes = [ctx.Pipe(duplex=False) for _ in groups]
                workers = [
                    ctx.Process(target=_run_group, args=(g, flag, self.seconds, send), daemon=True)
                    for g, (_, send) in zip(groups, pipes, strict=True)
                ]
                for worker in workers:
                    worker.start()
                try:
                    published = await self._publish(pub)
                    flag.set()
                    loop = asyncio.get_running_loop()
                    reports = [await loop.run_in_executor(None, recv.recv) for recv, _ in pipes]
                finally:
                    for worker in workers:
                        worker.join(5)
                        if worker.is_alive():
                            worker.kill()
        report = Report(self.clients, published, seconds=time.monotonic() - started)
        for part in reports:
            report.add(part)
        return report

    async def _publish(self, pub: Publisher) -> int:
        tick = 0.1
        per_tick = max(1, round(self.rate * tick))
        tests = test_ids(self.tests)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        n = 0
        while loop.time() < deadline:
            began = loop.time()
            await pub.log.append([
                PublishRequest(
                    event_type="test.progress",
                    data={"test_id": tests[i % len(tests)], "progress": i % 100,
                          "output": f"line {i}"},
                )
                for i in range(n, n + per_tick)
            ])
            n += per_tick
            await asyncio.sleep(max(0.0, tick - (loop.time() - began)))
        return n


def _run_group(group: _Group, flag: ProcessEvent, seconds: float, out: Connection) -> None:
    """A worker process: its clients' report goes back through ``out``."""

    async def published() -> None:
        await asyncio.get_running_loop().run_in_executor(None, flag.wait)

    out.send(asyncio.run(group.run(published, seconds)))


class _Group:
    """Some of the clients, in one event loop; checked against the log at the end."""

    def __init__(
        self,
        ws_url: str,
        redis_url: str,
        key_prefix: str | None,
        tokens: dict[int, str],
        tests: int,
        lifetime: tuple[float, float],
        seed: int,
        start: Offset,
    ) -> None:
        self.ws_url = ws_url
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.tokens = tokens
        self.tests = test_ids(tests)
        self.lifetime = lifetime
        self.seed = seed
        self.start = start

    async def run(self, published: Callable[[], Awaitable[Any]], seconds: float) -> Report:
        """Run the clients until ``published()`` returns and each has its test's last event."""
        self.rng = random.Random(self.seed)
        self.finals: dict[str, Offset] = {}
        report = Report(len(self.tokens))
        results: dict[int, list[str]] = {n: [] for n in self.tokens}
        async with Publisher(self.redis_url, self.key_prefix) as pub:
            self.log = pub.log
            runners = [
                asyncio.create_task(self._client(n, results[n], report)) for n in self.tokens
            ]
            await published()
            expected = {t: await self._ids(t) for t in self.tests}
            self.finals = {t: ids[-1] for t, ids in expected.items() if ids}
            await asyncio.wait(runners, timeout=max(60.0, seconds))
            for task in runners:
                task.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
        for n, got in results.items():
            want = expected[self.tests[n % len(self.tests)]]
            report.duplicates += len(got) - len(set(got))
            report.disordered += sum(
                1 for a, b in itertools.pairwise(got) if parse_offset(b) <= parse_offset(a)
            )
            # A gap is an event older than the newest one the client got, and missing;
            # a client that never got to the end is unfinished, not gapped.
            newest = parse_offset(got[-1]) if got else (0, 0)
            have = set(got)
            report.gaps += sum(1 for i in want if parse_offset(i) <= newest and i not in have)
            report.complete += got == want
        return report

    async def _ids(self, test_id: str) -> list[Offset]:
        """Every id of the test published since the start, from the log."""
        ids: list[Offset] = []
        after = self.start
        while rows := await self.log.read(after, count=1000, test_id=test_id):
            ids += [e.id for e in rows]
            after = rows[-1].id
        return ids

    async def _newest(self, test_id: str) -> Offset | None:
        rows = await self.log.read_back("+", after=self.start, count=1, test_id=test_id)
        return rows[0].id if rows else None

    async def _client(self, n: int, got: list[str], report: Report) -> None:
        test_id = self.tests[n % len(self.tests)]
        await asyncio.sleep(self.rng.uniform(0, self.lifetime[1]))
        while True:
            final = self.finals.get(test_id) if self.finals else None
            target = await self._newest(test_id)
            since = got[-1] if got else self.start
            began = time.monotonic()
            life = self.rng.uniform(*self.lifetime)
            if self.finals:
                life = max(life, 60.0)  # the last connection: until it has everything
            try:
                async with websockets.connect(
                    self.ws_url,
                    subprotocols=["secstream.v1", f"bearer.{self.tokens[n]}"],  # type: ignore[list-item]
                    max_size=None,
                    open_timeout=10,
                    ping_interval=None,
                ) as ws:
                    await ws.send(json.dumps({
                        "type": "subscribe", "id": 1, "event_types": ["test.progress"],
                        "test_id": test_id, "since": since,
                    }))
                    await self._read(ws, got, began + life, target, began, report, final)
            except (InvalidStatus, OSError, ConnectionClosed, TimeoutError):
                await asyncio.sleep(self.rng.uniform(0.05, 0.5))
            report.reconnects += 1
            if self.finals and (test_id not in self.finals or got[-1:] == [self.finals[test_id]]):
                return

    async def _read(
        self,
        ws: Any,
        got: list[str],
        until: float,
        target: str | None,
        began: float,
        report: Report,
        final: str | None,
    ) -> None:
        """Record event ids until ``until`` (or ``final``); note when ``target`` arrived."""
        caught_up = target is None
        while (left := until - time.monotonic()) > 0:
            if final is not None and got[-1:] == [final]:
                return
            try:
                raw = await asyncio.wait_for(ws.recv(), min(left, 1.0))
            except TimeoutError:
                if final is None and self.finals:
                    return  # publishing ended meanwhile: reconnect as a last connection
                continue
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

