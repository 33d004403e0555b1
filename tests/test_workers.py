"""``secstream serve --workers 2`` through real processes: two servers on one port and
one embedded Redis; an event published to one reaches sockets on both; SIGTERM to the
parent closes every socket with 1001, stops the workers and Redis, and exits 0."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from live import JWT_SECRET, SUBPROTOCOL, WsClient, hs256
from support import ServeProcess

pytestmark = pytest.mark.anyio


def _children(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _token(sub: str, roles: list[str]) -> str:
    return hs256({"sub": sub, "roles": roles, "exp": int(time.time()) + 600})


async def test_two_workers_share_the_port_and_one_redis_and_stop_together(
    serve: Callable[..., ServeProcess],
) -> None:
    node = serve(None, env={"SECSTREAM_JWT_SECRET": JWT_SECRET}, extra=["--workers", "2"])
    node.wait_http("/health/ready")
    children = _children(node.pid)
    workers = [c for c in children if "secstream serve" in _cmdline(c)]
    redis = [c for c in children if "redis-server" in _cmdline(c)]
    assert len(workers) == 2 and len(redis) == 1, [_cmdline(c) for c in children]

    token = _token("u-1", ["viewer"])
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, WsClient] = {}  # one per worker (its node id)
        # The second worker may still be starting (a busy machine): until it listens,
        # the kernel gives every connection to the first.
        deadline = time.monotonic() + 30
        while len(clients) < 2 and time.monotonic() < deadline:
            conn = await connect(node.ws_url, subprotocols=[SUBPROTOCOL, f"bearer.{token}"])  # type: ignore[list-item]
            client = WsClient(conn)
            welcome = await client.expect("welcome")
            node_id = welcome["connection_id"].split("-")[0]
            if node_id in clients:
                await conn.close()
                await anyio.sleep(0.05)
                continue
            stack.push_async_callback(conn.close)
            await client.subscribe(["test.*"])
            clients[node_id] = client
        assert len(clients) == 2, "the kernel gave every connection to one worker"

        publisher = _token("svc", ["publisher"])
        async with httpx.AsyncClient(base_url=node.base_url) as http:
            for seq in range(5):
                response = await http.post(
                    "/api/v1/events",
                    json={"event_type": "test.progress",
                          "data": {"test_id": "t-1", "percent": seq}},
                    headers={"Authorization": f"Bearer {publisher}"},
                )
                assert response.status_code in (200, 201, 202), response.text
        for client in clients.values():
            events = await client.events(5, within=10)
            assert [e["data"]["percent"] for e in events] == [0, 1, 2, 3, 4]

        with anyio.fail_after(30):
            code = await anyio.to_thread.run_sync(node.terminate)
        assert code == 0, node.log_tail()
        for client in clients.values():
            assert await client.closed_with(within=5) == 1001
    for pid in (*workers, *redis):
        assert not _alive(pid), _cmdline(pid)
    assert "Traceback" not in node.log(), node.log_tail()


def test_workers_out_of_range_is_a_clear_error(tmp_path: Path) -> None:
    node = ServeProcess(tmp_path, "redis://127.0.0.1:1", env={"SECSTREAM_JWT_SECRET": JWT_SECRET},
                        extra=["--workers", "0"])
    done = subprocess.run(node.argv, env=node.env, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"--workers must be 1 to 64" in done.stderr


def test_workers_with_demo_is_refused(tmp_path: Path) -> None:
    """Each demo process would sign tokens with a key of its own."""
    node = ServeProcess(tmp_path, "redis://127.0.0.1:1", extra=["--workers", "2", "--demo"])
    done = subprocess.run(node.argv, env=node.env, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"--workers needs a shared JWT key" in done.stderr
