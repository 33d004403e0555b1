"""The demo's simulated security tests: realistic events through the real log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Iterator
from typing import cast

from secstream.errors import LogUnavailable
from secstream.eventlog import RedisEventLog
from secstream.publisher import Publisher, TestRun
from secstream.testrun import Severity

logger = logging.getLogger(__name__)

DURATION = 10.0
BACKGROUND_EVERY = 25.0
_PORTS = {
    21: "ftp vsftpd 3.0.3",
    22: "ssh OpenSSH 8.9p1 Ubuntu 3ubuntu0.6",
    23: "telnet Linux telnetd",
    25: "smtp Postfix smtpd",
    53: "domain ISC BIND 9.18.18",
    80: "http nginx 1.24.0",
    110: "pop3 Dovecot pop3d",
    139: "netbios-ssn Samba smbd 4.6.2",
    443: "https nginx 1.24.0",
    445: "microsoft-ds Samba smbd 4.6.2",
    3306: "mysql MySQL 5.7.42",
    3389: "ms-wbt-server xrdp",
    5432: "postgresql PostgreSQL DB 14.9",
    6379: "redis Redis key-value store 6.0.16",
    8080: "http-proxy Apache Tomcat 9.0.65",
}
_RISKY = {
    23: ("critical", "Telnet exposed", "Cleartext remote login service accepts connections"),
    6379: ("critical", "Unauthenticated Redis", "Redis answers commands without AUTH"),
    3306: ("high", "MySQL reachable from scan network", "Database port open to untrusted range"),
    21: ("high", "Anonymous FTP", "FTP server allows anonymous login"),
}
_WEB_CHECKS = [
    ("GET", "/", "200 OK", None),
    ("GET", "/robots.txt", "200 OK", None),
    ("GET", "/admin/", "302 Found -> /admin/login", None),
    ("POST", "/api/login", "401 Unauthorized", None),
    ("GET", "/.git/HEAD", "200 OK",
     ("high", "Exposed .git directory", "Source history downloadable")),
    ("GET", "/search?q=%27%20OR%201%3D1--", "500 Internal Server Error",
     ("critical", "SQL injection in /search", "Parameter q breaks the SQL query (error-based)")),
    ("GET", "/static/js/app.js", "200 OK", None),
    ("GET", "/api/v1/users?id=../../etc/passwd", "400 Bad Request", None),
    ("OPTIONS", "/api/v1/", "204 No Content (CORS: *)",
     ("high", "Permissive CORS policy", "Access-Control-Allow-Origin: * with credentials")),
    ("GET", "/server-status", "403 Forbidden", None),
    ("GET", "/backup.zip", "404 Not Found", None),
    ("GET", "/wp-login.php", "404 Not Found", None),
]


def _site() -> str:
    return f"https://app-{random.randint(1, 40)}.staging.example.test"


def _host() -> str:
    return f"192.168.{random.randint(0, 9)}.{random.randint(2, 254)}"


class Simulator:
    """Starts simulated tests on request and, in the background, every so often."""

    def __init__(self, log: RedisEventLog, *, duration: float = DURATION) -> None:
        self.publisher = Publisher(redis=log.redis, key_prefix=log.prefix, maxlen=log.maxlen)
        self.duration = duration
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, *, user_id: str | None = None, kind: str | None = None) -> str:
        """Start one simulated test; its id. With ``user_id`` (the token that asked), the run
        gets that user's default audience: the user and administrators."""
        kind = kind or random.choice(("port_scan", "web_scan"))
        test_id = f"{kind.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
        task = asyncio.create_task(self._run(test_id, kind, user_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return test_id

    async def run_background(self) -> None:
        try:
            while True:
                await asyncio.sleep(BACKGROUND_EVERY)
                self.start()
                with contextlib.suppress(LogUnavailable):
                    await self.publisher.publish(
                        "system.status",
                        {"status": "ok", "workers": random.randint(3, 8),
                         "queue": random.randint(0, 12), "title": "Scanner fleet healthy"},
                        priority="low",
                    )
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            # Each run publishes test.cancelled as it ends: let it, before Redis is closed.
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.publisher.aclose()

    async def _run(self, test_id: str, kind: str, user_id: str | None) -> None:
        port_scan = kind == "port_scan"
        module = "network_recon" if port_scan else "web_scanner"
        target = _host() if port_scan else _site()
        lines = list(_port_scan(target) if port_scan else _web_scan(target))
        pause = self.duration / max(1, len(lines))
        metadata = {
            "target": target,
            "profile": "top-1000 TCP, SYN scan" if port_scan else "OWASP baseline, depth 3",
            "started_by": user_id or "scheduler",
        }
        try:
            async with self.publisher.test_run(
                test_id, module=module, user_id=user_id, metadata=metadata, handle_cancel=True
            ) as run:
                run.summary["target"] = target
                await self._lines(run, lines, pause, port_scan)
                if not port_scan and not run.cancel_requested.is_set() and random.random() < 0.15:
                    raise ConnectionResetError("target closed the connection during crawl")
        except LogUnavailable:
            logger.warning("simulated test stopped: event log unavailable")
        except ConnectionResetError:
            pass

    async def _lines(self, run: TestRun, lines: list[Line], pause: float, port_scan: bool) -> None:
        for i, (line, finding) in enumerate(lines, 1):
            # A cancel request ends the wait at once (handle_cancel: the simulator stops itself).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    run.cancel_requested.wait(), pause * random.uniform(0.5, 1.5)
                )
            if run.cancel_requested.is_set():
                who = run.cancelled_by or "someone"
                await run.progress(run.progress_value, f"Stopped on request of {who}")
                return
            await run.progress(round(100 * i / (len(lines) + 1)), line)
            if finding is not None:
                severity, title, why = finding
                await run.finding(cast(Severity, severity), title, message=why)
        run.summary["hosts" if port_scan else "urls"] = 1 if port_scan else len(_WEB_CHECKS)


Line = tuple[str, tuple[str, str, str] | None]


def _port_scan(host: str | None = None) -> Iterator[Line]:
    host = host or _host()
    yield f"Starting port scan on {host} (top 1000 TCP ports, SYN scan)...", None
    yield f"Host {host} is up (0.0021s latency)", None
    found = random.sample(sorted(_PORTS), k=random.randint(4, 8))
    for batch_start in range(0, 1000, 100):
        yield f"Scanning ports {batch_start + 1}-{batch_start + 100} on {host}...", None
        for port in sorted(p for p in found if batch_start < p <= batch_start + 100):
            yield f"Discovered open port {port}/tcp on {host}: {_PORTS[port]}", None
            risky = _RISKY.get(port)
            if risky:
                prio, title, why = risky
                yield f"[!] {title} on {host}:{port}", (prio, f"{title} on {host}", why)
    for port in sorted(p for p in found if p > 1000):
        yield f"Discovered open port {port}/tcp on {host}: {_PORTS[port]}", None
        risky = _RISKY.get(port)
        if risky:
            prio, title, why = risky
            yield f"[!] {title} on {host}:{port}", (prio, f"{title} on {host}", why)
    yield f"Service detection performed on {len(found)} open ports", None
    yield f"Scan of {host} done: {len(found)} open, {1000 - len(found)} closed/filtered", None


def _web_scan(target: str | None = None) -> Iterator[Line]:
    target = target or _site()
    yield f"Crawling {target} (depth 3, 50 req/s)...", None
    days = random.randint(20, 300)
    yield f"TLS: TLSv1.3, certificate CN=*.staging.example.test, expires in {days} days", None
    for method, path, status, finding in random.sample(_WEB_CHECKS, k=len(_WEB_CHECKS)):
        yield f"{method} {target}{path} -> {status}", None
        if finding is not None and random.random() < 0.6:
            prio, title, why = finding
            yield f"[!] {title}", (prio, f"{title} ({target})", why)
    yield "Security headers: CSP missing, HSTS max-age=31536000, X-Frame-Options DENY", None
    yield f"Web scan of {target} finished", None
