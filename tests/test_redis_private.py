"""Row 4 of issue 9: the embedded Redis of ``secstream serve`` is private to its user.

A unix socket in a 0700 directory and no TCP port; the AOF, log and pid files 0600.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from secstream.redis_server import RedisServer, socket_path_for
from support import ServeProcess

NOBODY = 65534

# Run as another user: try the socket, print what happened.
_AS_NOBODY = (
    "import os, socket, sys\n"
    "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1]); s.sendall(b'PING\\r\\n'); print(s.recv(64))\n"
    "except OSError as exc:\n"
    "    print(type(exc).__name__)\n"
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_private(data_dir: Path, sock: Path) -> None:
    assert _mode(data_dir) == 0o700
    assert _mode(sock.parent) == 0o700
    assert stat.S_ISSOCK(sock.stat().st_mode)
    for name in ("redis.log", "redis.owner", "redis.pid", "appendonly.aof"):
        assert _mode(data_dir / name) == 0o600, name


def _info(url: str) -> dict[str, object]:
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.set("k", "v")  # the AOF gets written
        return dict(client.info("server"))


def _another_user_tries(sock: Path) -> str:
    if os.getuid() != 0:
        pytest.skip("needs root to act as another local user")
    out = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(sock)],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_unix_socket_mode_has_no_tcp_port_and_private_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "appendonly.aof").write_bytes(b"")  # left 0644 by an older version
    (data_dir / "appendonly.aof").chmod(0o644)
    with RedisServer(data_dir, unix_socket=True) as server:
        assert _info(server.url)["tcp_port"] == 0
        _assert_private(data_dir, server.socket_path)
        assert _another_user_tries(server.socket_path) == "PermissionError"
        # the same user still reaches it (the service)
        with redis.Redis(unix_socket_path=str(server.socket_path)) as client:
            assert client.ping() is True


def test_a_data_dir_too_long_for_a_socket_gets_a_private_socket_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    sock = socket_path_for(data_dir)
    assert sock.parent != data_dir.resolve() and len(str(sock)) <= 100
    with RedisServer(data_dir, unix_socket=True) as server:
        assert server.socket_path == sock
        assert _info(server.url)["tcp_port"] == 0
        _assert_private(data_dir, sock)
    assert not sock.exists()


def test_a_socket_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    sock_dir = socket_path_for(data_dir).parent
    if os.getuid() != 0:
        pytest.skip("needs root to make a directory of another user's")
    sock_dir.mkdir(mode=0o777)
    try:
        os.chown(sock_dir, NOBODY, NOBODY)
        with pytest.raises(RuntimeError, match="not a directory of this user's"):
            RedisServer(data_dir, unix_socket=True).start()
    finally:
        sock_dir.rmdir()


@pytest.mark.slow
def test_serve_without_a_redis_url_runs_a_private_redis(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    node = serve(None, env={"SECSTREAM_JWT_SECRET": "x" * 40})
    node.wait_http("/health/ready")
    data_dir = node.data_dir.resolve()
    sock = data_dir / "redis.sock"
    assert _info(f"unix://{sock}")["tcp_port"] == 0
    deadline = time.monotonic() + 5  # appendfsync everysec
    while (data_dir / "appendonly.aof").stat().st_size == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    _assert_private(data_dir, sock)
    assert _another_user_tries(sock) == "PermissionError"
    log = (data_dir / "redis.log").read_text()
    assert f"ready to accept connections at {sock}" in log
    assert "accept connections on port" not in log


def test_serve_refuses_a_data_dir_of_another_user(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to make a directory of another user's")
    data_dir = tmp_path / ".secstream"
    data_dir.mkdir(mode=0o777)
    os.chown(data_dir, NOBODY, NOBODY)
    result = subprocess.run(
        [sys.executable, "-m", "secstream", "serve", "--port", "0"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "SECSTREAM_JWT_SECRET": "x" * 40},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "not a directory of this user's" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (data_dir / "redis.sock").exists()
