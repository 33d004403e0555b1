"""What one idle subscribed WebSocket costs the server: Python allocations (tracemalloc)
and the Redis server's growth, for N connections opened by another process.

    .venv/bin/python scripts/memprobe.py [-n 1000] [--top 25] [--redis-server PATH]

The server runs in this process (``create_app`` under uvicorn, as ``serve`` runs it)
with tracemalloc keeping 25 frames; the clients, in a child process, connect as the
peer harness's do (each its own user, ``secstream.v1`` + ``bearer.<jwt>``, no
permessage-deflate) and subscribe to ``test.*``. Redis is a fresh ``redis-server``
(the harness's options). Printed: KB per connection, by where the allocation was
made (the innermost frame outside the standard library) and by the traceback's
outermost frame under the connection's task; Redis's used memory and RSS per
connection, after the connection registry's next write.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

SECRET = "memprobe-secret-memprobe-secret-memprobe"
STDLIB = sysconfig.get_paths()["stdlib"]
WARM = 50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the clients (a child process) -----------------------------------------------------


def _clients(pipe: multiprocessing.connection.Connection, url: str, n: int) -> None:
    try:
        asyncio.run(_open(pipe, url, n))
    except BaseException as exc:
        pipe.send(f"client failed: {exc!r}")
        raise


async def _open(pipe: multiprocessing.connection.Connection, url: str, n: int) -> None:
    """``WARM`` connections first (every lazy import and cache made before the first
    snapshot; they stay open, in both), then ``n``."""
    import websockets

    from secstream.auth import Authenticator

    auth = Authenticator(secret=SECRET)
    held = []
    for i in range(WARM + n):
        if i == WARM:
            pipe.send("warm")
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        token, _ = auth.mint(f"probe-{i}", ["viewer"], expires_in=3600)
        while True:
            try:
                ws = await websockets.connect(
                    url, subprotocols=["secstream.v1", f"bearer.{token}"],  # type: ignore[list-item]
                    compression=None, max_size=None, ping_interval=None,
                )
                break
            except websockets.InvalidStatus as exc:  # 503: the server sheds load; retry
                if exc.response.status_code != 503:
                    raise
                await asyncio.sleep(0.2)
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "subscribe", "id": "sub-1", "event_types": ["test.*"]}))
        while json.loads(await ws.recv())["type"] != "replayed":
            pass
        held.append(asyncio.create_task(_answer_pings(ws)))
    pipe.send("open")
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    for task in held:
        task.cancel()


async def _answer_pings(ws: Any) -> None:
    """As the harness's clients: a ``pong`` for each of the server's ``ping`` frames (or
    the server closes the connection as dead)."""
    async for raw in ws:
        if json.loads(raw)["type"] == "ping":
            await ws.send('{"type":"pong"}')


# -- the server (this process) ---------------------------------------------------------


def _where(tb: tracemalloc.Traceback) -> str:
    """The innermost frame outside the standard library: who asked for the memory (the
    innermost frame itself when that is the event loop, called from this script)."""
    for frame in reversed(tb):  # most recent call first
        if frame.filename == __file__:
            break
        if not frame.filename.startswith(STDLIB):
            return f"{_short(frame.filename)}:{frame.lineno}"
    return f"{_short(tb[-1].filename)}:{tb[-1].lineno}"


def _short(path: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _report(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int, show: list[str]
) -> None:
    sites: Counter[str] = Counter()
    for stat in after.compare_to(before, "traceback"):
        site = _where(stat.traceback)
        sites[site] += stat.size_diff
        if site in show and stat.size_diff >= n * 16:
            print(f"\n{site}: {stat.size_diff / n:.0f} B per connection, allocated by:")
            print("\n".join(f"  {_short(f.filename)}:{f.lineno}" for f in stat.traceback))
    total = sum(sites.values())
    print(f"\ntracemalloc: {total / n / 1024:.2f} KB per connection ({n} connections)")
    print("| allocated at (innermost frame outside the stdlib) | B per connection |")
    print("| --- | --- |")
    for site, size in sites.most_common(top):
        print(f"| {site} | {size / n:.0f} |")


def _redis_memory(port: int) -> tuple[int, int]:
    import redis

    info = redis.Redis(port=port).info("memory")
    return int(info["used_memory"]), int(info["used_memory_rss"])


def _redis_keys(port: int, n: int) -> None:
    import redis

    client = redis.Redis(port=port)
    sizes = {key.decode(): client.memory_usage(key) or 0 for key in client.scan_iter(count=1000)}
    print("| Redis key | B per connection |\n| --- | --- |")
    for key, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]:
        print(f"| {key} | {size / n:.0f} |")


async def _probe(args: argparse.Namespace, redis_port: int, redis_pid: int) -> None:
    import uvicorn

    from secstream.app import create_app
    from secstream.config import Settings
    from secstream.server import uvicorn_config

    settings = Settings.from_env(
        {"SECSTREAM_JWT_SECRET": SECRET, "SECSTREAM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
         "SECSTREAM_MAX_CONNECTIONS": "20000", "SECSTREAM_MAX_CONNECTIONS_PER_USER": "0",
         "SECSTREAM_HANDSHAKE_RATE": "100000"}
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn_config(
        create_app(settings), settings, host="127.0.0.1", port=port,
        log_config=None, log_level="warning",
    ))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn sets a flag, not an event)
        await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    pipe, child = ctx.Pipe()
    proc = ctx.Process(target=_clients, args=(child, f"ws://127.0.0.1:{port}/ws", args.n))
    proc.start()
    reply = await loop.run_in_executor(None, pipe.recv)
    if reply != "warm":
        raise SystemExit(reply)
    await asyncio.sleep(args.settle)  # the registry's writes
    gc.collect()
    before = None if args.no_trace else tracemalloc.take_snapshot()
    rss_before = _rss_kib(os.getpid())
    redis_before = _redis_memory(redis_port), _rss_kib(redis_pid)
    started = time.monotonic()
    pipe.send("go")
    reply = await loop.run_in_executor(None, pipe.recv)
    if reply != "open":
        raise SystemExit(reply)
    print(f"{args.n} connections open in {time.monotonic() - started:.1f} s")
    await asyncio.sleep(args.settle)  # the registry writes the new connections
    # Redis first: a snapshot blocks this loop long enough for the registry's hash to expire.
    (used0, _), rss0 = redis_before
    (used1, _), rss1 = _redis_memory(redis_port), _rss_kib(redis_pid)
    print(f"Redis used_memory {(used1 - used0) / args.n / 1024:.2f} KB per connection, "
          f"RSS {(rss1 - rss0) / args.n:.2f} KB per connection "
          f"({rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MB)")
    _redis_keys(redis_port, args.n)
    if before is None:
        print(f"server RSS {(_rss_kib(os.getpid()) - rss_before) / args.n:.2f} KB per connection")
    else:
        gc.collect()
        _report(before, tracemalloc.take_snapshot(), args.n, args.top, args.show)
    pipe.send("close")
    proc.join(30)
    server.should_exit = True
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="connections (default 1000)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds between the last connection and the snapshot")
    parser.add_argument("--redis-server", default="redis-server")
    parser.add_argument("--show", action="append", default=[], metavar="FILE:LINE",
                        help="print the tracebacks of what a site in the report allocated")
    parser.add_argument("--no-trace", action="store_true",
                        help="no tracemalloc (faster): RSS and Redis figures only")
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.n + 1024)), hard))
    redis_port = _free_port()
    with tempfile.TemporaryDirectory(prefix="memprobe-") as tmp:
        redis = subprocess.Popen(
            [args.redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            if not args.no_trace:
                tracemalloc.start(25)
            asyncio.run(_probe(args, redis_port, redis.pid))
        finally:
            redis.terminate()
            redis.wait(10)
    sys.stdout.flush()
    os._exit(0)  # the spawn context's helpers need not outlive the report


if __name__ == "__main__":
    main()
