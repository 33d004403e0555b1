"""Helpers for tests that run whole processes: free ports, ``secstream serve`` as a subprocess."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import anyio

from secstream.redis_server import die_with_parent, free_port, stop_stale

__all__ = ["ServeProcess", "eventually", "free_port"]


async def eventually(check: Callable[[], bool], within: float = 10) -> None:
    """State with no event to wait on: look every 10 ms until ``check()`` holds."""
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.01)


class ServeProcess:
    """``python -m secstream serve`` on 127.0.0.1, its output in ``log_path``.

    ``redis_url=None`` leaves Redis to ``serve`` (the embedded one, under
    ``SECSTREAM_DATA_DIR`` or ``cwd/.secstream``). The environment is this one's without
    any ``SECSTREAM_*`` variable, plus ``env``.
    """

    def __init__(
        self,
        workdir: Path,
        redis_url: str | None,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        extra: Sequence[str] = (),
        name: str = "serve",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self.port = port if port is not None else free_port()
        self.extra = list(extra)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SECSTREAM_")}
        # No system.status among the events tests count, unless a test asks for it.
        self.env.update(
            {"PYTHONUNBUFFERED": "1", "SECSTREAM_STATUS_INTERVAL": "0", **(env or {})}
        )
        self.log_path = self.workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "secstream", "serve"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.redis_url is not None:
            argv += ["--redis-url", self.redis_url]
        return argv + self.extra

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        return self._process().pid

    @property
    def returncode(self) -> int | None:
        return self._process().poll()

    @property
    def data_dir(self) -> Path:
        return self.workdir / self.env.get("SECSTREAM_DATA_DIR", ".secstream")

    def start(self, timeout: float = 15) -> ServeProcess:
        """Spawn, then wait until ``GET /health/live`` answers 200."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("already running")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # a killed test run leaves no server behind
            )
        self.wait_http("/health/live", timeout=timeout)
        return self

    def wait_http(self, path: str, *, status: int = 200, timeout: float = 15) -> None:
        """Poll ``path`` until it answers ``status``; raise with the log tail otherwise."""
        proc = self._process()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._fail(f"exited with code {proc.returncode} while waiting for {path}")
            if self.get_status(path) == status:
                return
            time.sleep(0.05)
        self._fail(f"{path} did not answer {status} within {timeout} s")

    def get_status(self, path: str) -> int | None:
        """The HTTP status of ``GET path``, or None when nothing answers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        except OSError:
            return None
        finally:
            conn.close()

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code; SIGKILL and raise when it does not exit in time."""
        proc = self._process()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self._fail(f"did not exit within {timeout} s of SIGTERM")

    def interrupt(self, timeout: float = 15) -> int:
        proc = self._process()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        return proc.wait(timeout)

    def kill(self) -> int:
        proc = self._process()
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def wait(self, timeout: float | None = None) -> int:
        return self._process().wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def close(self) -> None:
        """Kill it if it still runs, and any embedded Redis a killed ``serve`` left behind."""
        if self._proc is not None:
            self.kill()
        if self.redis_url is None:
            stop_stale(self.data_dir)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _process(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc

    def _fail(self, why: str) -> NoReturn:
        raise AssertionError(f"secstream serve {why}; {self.log_path}:\n{self.log_tail()}")
