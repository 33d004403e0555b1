"""The ``secstream`` command: ``serve``, ``publish``, ``tail``, ``bench`` and ``schema``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from secstream import logs
from secstream.config import Settings
from secstream.errors import ConfigError, EventInvalid, LogUnavailable
from secstream.logs import LOG_LEVELS
from secstream.workers import MAX_WORKERS, reuse_port_socket, supervise

logger = logging.getLogger("secstream")

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="secstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--redis-url")
    serve.add_argument("--demo", action="store_true", default=None)
    serve.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower)
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port (SO_REUSEPORT), one Redis")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    publish = commands.add_parser("publish", help="append one event to the log")
    publish.add_argument("--redis-url", default=os.environ.get("SECSTREAM_REDIS_URL"))
    publish.add_argument("--event-type", required=True)
    publish.add_argument("--data", default="{}", help="the event's data, as JSON")
    publish.add_argument("--priority", default="normal")
    publish.add_argument("--audience", help="JSON: {users, groups, roles}")
    publish.add_argument("--user-id")

    bench = commands.add_parser("bench", help="measure delivery against a real Redis")
    bench.add_argument("--connections", type=int, default=1000)
    bench.add_argument("--events", type=int, default=2000)
    bench.add_argument("--rounds", type=int, default=3)
    bench.add_argument("--out", type=Path)
    bench.add_argument("--steady-rate", type=float, default=50,
                       help="events per second in the fixed-rate latency run")
    bench.add_argument("--steady-seconds", type=float, default=5)
    bench.add_argument("--idle", metavar="N[,N...]",
                       help="idle subscribed connections in cumulative steps (e.g. 5000,10000): "
                            "the server's memory per connection; nothing else runs")
    bench.add_argument("--churn", action="store_true",
                       help="clients reconnecting at random while events are published")
    bench.add_argument("--rate", type=float, default=1000, help="--churn: events per second")
    bench.add_argument("--seconds", type=float, default=60, help="--churn: how long")
    bench.add_argument("--tests", type=int, default=100, help="--churn: tests events spread over")
    bench.add_argument("--min-lifetime", type=float, default=2.0)
    bench.add_argument("--max-lifetime", type=float, default=20.0)
    bench.add_argument("--processes", type=int, default=2, help="--churn: client processes")
    bench.add_argument("--publish", action="store_true",
                       help="publishing throughput: HTTP (wrk) and Publisher")
    bench.add_argument("--publish-seconds", type=float, default=5, help="--publish: per round")
    bench.add_argument("--publish-connections", type=int, default=20,
                       help="--publish: wrk's keep-alive connections")
    bench.add_argument("--publish-concurrency", type=int, default=20,
                       help="--publish: Publisher's publishes in flight")
    bench.add_argument(
        "--trace-ratio", type=float,
        help="trace: the server exports to an OTLP sink, sampling this share of publishes",
    )

    from secstream import tail

    tail.add_arguments(commands.add_parser("tail", help="watch events as a client sees them"))

    schema = commands.add_parser("schema", help="print the AsyncAPI (or OpenAPI) document")
    schema.add_argument("--openapi", action="store_true", help="the HTTP API, OpenAPI 3.1")

    args = parser.parse_args(argv)
    if args.command == "tail":
        sys.exit(tail.main(args))
    if args.command == "schema":
        from secstream.apidoc import asyncapi, openapi, render

        sys.stdout.write(render(openapi() if args.openapi else asyncapi()))
        sys.exit(0)
    if args.command == "serve":
        sys.exit(_serve(args))
    if args.command == "publish":
        sys.exit(asyncio.run(_publish(args)))
    from secstream.bench import run_bench

    sys.exit(run_bench(args))


# -- serve ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(
            host=args.host,
            port=args.port,
            redis_url=args.redis_url,
            demo=args.demo,
            log_level=args.log_level,
        )
        from secstream.auth import Authenticator
        from secstream.telemetry import trace_choice

        Authenticator.from_settings(settings)
        trace_choice()
    except ConfigError as exc:
        print(f"secstream: bad setting {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log_format, settings.log_level, secrets=[settings.jwt_secret])
    logging.getLogger("uvicorn.error").addFilter(_DenialNoise())
    if not 1 <= args.workers <= MAX_WORKERS:
        print(f"secstream: --workers must be 1 to {MAX_WORKERS}", file=sys.stderr)
        return EXIT_CONFIG
    if args.workers > 1 and settings.demo:
        # Each demo process signs with a key of its own: a token would work on one worker.
        print("secstream: --demo runs one process; --workers needs a shared JWT key",
              file=sys.stderr)
        return EXIT_CONFIG
    if settings.jwt_audience is None and not settings.demo:
        logger.warning(
            "SECSTREAM_JWT_AUDIENCE is not set: tokens that the same key signed for any "
            "other service are accepted here; set it to this service's audience"
        )
    embedded = settings.redis_url is None
    with _redis_for(settings) as settings:
        if args.workers > 1:
            passed = ["--log-level", settings.log_level] + (["--demo"] if args.demo else [])
            if embedded:  # a URL from the environment reaches the workers the same way
                passed += ["--redis-url", str(settings.redis_url)]
            return supervise(args.workers, settings.host, settings.port, passed)
        from secstream.app import create_app
        from secstream.server import uvicorn_config

        app = create_app(settings)
        # log_config=None: logs.configure set one redacting handler for every logger.
        server = _Server(
            uvicorn_config(app, settings, log_level=settings.log_level, log_config=None)
        )
        _tune_gc()
        if args.reuse_port:  # one of --workers: the parent holds the same port
            server.run(sockets=[reuse_port_socket(settings.host, settings.port)])
        else:
            server.run()
        return 0 if server.started or server.should_exit else 1


class _DenialNoise(logging.Filter):
    """uvicorn logs a refused handshake (401/403/503 before accept) as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


GC_THRESHOLDS = (50_000, 50, 100)


def _tune_gc() -> None:
    """Keep the cyclic collector from scanning every connection on every burst.

    CPython's full collections walk all long-lived objects, so with thousands of
    sockets their cost grows with connections that receive nothing. Measured with
    ``secstream bench`` (1000 connections): CPU per delivery 2.8 -> 1.3 us, p99 at
    50k deliveries/s 169 -> 50 ms. Cycles are still collected, just less often;
    the startup heap (modules, app) is frozen out of collection altogether.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _fields(settings: Settings) -> dict[str, Any]:
    return {f: getattr(settings, f) for f in Settings.__dataclass_fields__}


@contextlib.contextmanager
def _redis_for(settings: Settings) -> Generator[Settings, None, None]:
    """The settings to run with: an embedded Redis when no URL is given."""
    if settings.redis_url is not None:
        yield settings
        return
    from secstream.redis_server import RedisServer

    # A unix socket in a 0700 directory, no TCP port: no other local user reaches it.
    server = RedisServer(
        settings.data_dir, appendonly=True, unix_socket=True, die_with_parent=True
    )
    try:
        server.start()
    except RuntimeError as exc:  # e.g. a data dir of another user's
        print(f"secstream: the embedded Redis did not start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    logger.info("embedded Redis started", extra={"url": server.url})
    try:
        yield Settings(**{**_fields(settings), "redis_url": server.url})
    finally:
        server.stop()


class _Server(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT close every socket with 1001 and exit 0.

    uvicorn's own shutdown would close sockets with 1012 and re-raise the signal.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.should_exit:
            self.force_exit = True
            return
        logger.info("shutting down: closing connections with 1001")
        app = self.config.app  # loaded_app is wrapped (ProxyHeadersMiddleware): no .state
        service = getattr(getattr(app, "state", None), "service", None)
        if service is None:
            self.should_exit = True
            return
        task = asyncio.get_running_loop().create_task(service.drain())
        task.add_done_callback(lambda _: setattr(self, "should_exit", True))


# -- publish ---------------------------------------------------------------------------------


async def _publish(args: argparse.Namespace) -> int:
    from secstream.publisher import Publisher

    if not args.redis_url:
        print("secstream publish: --redis-url or SECSTREAM_REDIS_URL is needed", file=sys.stderr)
        return EXIT_CONFIG
    try:
        data = json.loads(args.data)
        audience = json.loads(args.audience) if args.audience else None
    except json.JSONDecodeError as exc:
        print(f"secstream publish: bad JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        publisher = Publisher(args.redis_url)
    except ValueError as exc:
        print(f"secstream publish: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    async with publisher as pub:
        try:
            offset = await pub.publish(
                args.event_type, data, priority=args.priority, audience=audience,
                user_id=args.user_id,
            )
        except EventInvalid as exc:
            print(f"secstream publish: invalid event: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except LogUnavailable as exc:
            print(f"secstream publish: Redis unavailable: {exc}", file=sys.stderr)
            return 1
    print(offset)
    return 0
