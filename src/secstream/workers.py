"""``secstream serve --workers N``: N server processes on one port and one Redis.

Each worker is a whole ``secstream serve`` (its own hub, tail and connections)
listening on the same address with ``SO_REUSEPORT``, so the kernel spreads new
connections over them. The parent starts the embedded Redis (when no URL is
given) once, holds the port, and owns the signals: SIGTERM or SIGINT is passed
to every worker once (each closes its sockets with 1001 and exits 0), and the
parent exits 0 when they all did. A worker that exits on its own stops the rest
(exit 1): a half-running server is not left behind.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from secstream.redis_server import die_with_parent

logger = logging.getLogger("secstream")

MAX_WORKERS = 64
STOP_SECONDS = 30.0
"""How long a worker may take to drain after SIGTERM before it is killed."""


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other processes may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def supervise(workers: int, host: str, port: int, args: Sequence[str]) -> int:
    """Run ``workers`` copies of ``secstream serve <args>`` on ``host:port``; the exit code."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be 1 to {MAX_WORKERS}")
    held = reuse_port_socket(host, port)  # port 0: the one the kernel chose, for all
    port = held.getsockname()[1]
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    argv = [sys.executable, "-m", "secstream", "serve", *args]
    argv += ["--host", host, "--port", str(port), "--reuse-port"]
    children: list[subprocess.Popen[bytes]] = []
    failed = False
    try:
        for _ in range(workers):
            # Own session: a terminal's Ctrl-C reaches the parent only, which passes it on once.
            children.append(
                subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent)
            )
        logger.info("%d workers serving on %s:%d", workers, host, port)
        while not stop.requested:
            gone = [c for c in children if c.poll() is not None]
            if gone:
                logger.error("worker %d exited with %s; stopping", gone[0].pid, gone[0].returncode)
                failed = True
                break
            time.sleep(0.1)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                logger.error("worker %d did not stop in %.0f s; killed", child.pid, STOP_SECONDS)
                child.kill()
                child.wait()
                failed = True
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        held.close()
    if failed or any(c.returncode != 0 for c in children):
        return 1
    return 0
