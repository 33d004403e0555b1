"""An asyncio WebSocket client for whole-process tests: every frame recorded, batches unpacked."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from secstream.auth import Authenticator

SECRET = "durability-and-flow-tests-secret-0123456789"
ENV = {"SECSTREAM_JWT_SECRET": SECRET}
AUTH = Authenticator(secret=SECRET)

Frame = dict[str, Any]


def token(sub: str = "u-1", roles: Sequence[str] = ("admin",)) -> str:
    return AUTH.mint(sub, list(roles), expires_in=3600)[0]


def key(offset: str) -> tuple[int, int]:
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


class Client:
    """One socket; a reader task records frames (``frames``), events (``events``, batches
    unpacked), arrival times (``arrived``) and answers server pings unless ``autopong`` is off."""

    def __init__(self, ws: ClientConnection, *, read_delay: float = 0.0) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        self.events: list[Frame] = []
        self.arrived: dict[str, float] = {}
        """Event id -> time.monotonic() when its frame was read."""
        self.bytes_per_second: float | None = None
        """When set, the reader sleeps after each frame as if it read this fast."""
        self.close_code: int | None = None
        self.read_delay = read_delay
        self.autopong = True
        self._changed = asyncio.Event()
        self._gate = asyncio.Event()
        self._gate.set()
        self._next_ref = 0
        self._reader = asyncio.create_task(self._read())

    @property
    def welcome(self) -> Frame:
        assert self.frames and self.frames[0]["type"] == "welcome", self.frames[:1]
        return self.frames[0]

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]

    async def _read(self) -> None:
        try:
            while True:
                await self._gate.wait()
                raw = await self.ws.recv()
                now = time.monotonic()
                frame = json.loads(raw)
                self.frames.append(frame)
                if frame["type"] == "batch":
                    batch = frame["events"]
                elif frame["type"] == "event":
                    batch = [frame]
                else:
                    batch = []
                for event in batch:
                    self.events.append(event)
                    self.arrived.setdefault(event["id"], now)
                if frame["type"] == "ping" and self.autopong:
                    await self.ws.send(json.dumps({"type": "pong"}))
                self._wake()
                if self.read_delay:
                    await asyncio.sleep(self.read_delay)
                if self.bytes_per_second:
                    await asyncio.sleep(len(raw) / self.bytes_per_second)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self._wake()

    def stall(self) -> None:
        """Stop reading: frames pile up in websockets (``max_queue``), then in the kernel."""
        self._gate.clear()

    def unstall(self) -> None:
        self._gate.set()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, check: Callable[[], Any], within: float = 10, what: str = "") -> Any:
        """Wait until ``check()`` is truthy; fail with ``what`` after ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            result = check()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                tail = self.frames[-3:]
                raise AssertionError(f"timed out waiting for {what or check}; last frames {tail}")
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(left, 0.5))

    async def wait_frame(self, kind: str, within: float = 10, **fields: Any) -> Frame:
        def find() -> Frame | None:
            for frame in self.frames:
                if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
                    return frame
            return None

        frame: Frame = await self.wait_for(find, within, f"{kind} {fields}")
        return frame

    async def wait_closed(self, within: float = 10) -> int | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), within)
        assert self._reader.done(), f"still open after {within} s"
        return self.close_code

    async def send(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def request(self, frame: Frame, within: float = 10) -> Frame:
        """Send ``frame`` with a fresh ``id``; its direct reply."""
        self._next_ref += 1
        ref = f"r{self._next_ref}"
        await self.send({**frame, "id": ref})
        return await self.wait_for(
            lambda: next(
                (f for f in self.frames if f.get("ref") == ref and f["type"] != "replayed"), None
            ),
            within,
            f"reply to {frame}",
        )

    async def subscribe(
        self, event_types: Sequence[str] = ("*",), *, since: str | None = None, **extra: Any
    ) -> Frame:
        """Subscribe and wait for the ``replayed`` frame; returns it."""
        frame: Frame = {"type": "subscribe", "event_types": list(event_types), **extra}
        if since is not None:
            frame["since"] = since
        reply = await self.request(frame)
        assert reply["type"] == "subscribed", reply
        ref = f"r{self._next_ref}"
        return await self.wait_frame("replayed", ref=ref)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 5)
        if not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def open_client(
    ws_url: str,
    *,
    sub: str = "u-1",
    roles: Sequence[str] = ("admin",),
    client_id: str | None = None,
    read_delay: float = 0.0,
    rcvbuf: int | None = None,
    max_queue: int | None = 16,
    within: float = 10,
) -> Client:
    """Connect (retrying while the server refuses with 503/429 or is not up), wait for welcome."""
    query = {"client_id": client_id} if client_id else {}
    url = ws_url + ("?" + urlencode(query) if query else "")
    deadline = time.monotonic() + within
    while True:
        sock = None
        if rcvbuf is not None:
            host, port = url.split("//")[1].split("/")[0].split(":")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
            except OSError:
                sock.close()
                raise
        try:
            ws = await connect(
                url,
                subprotocols=["secstream.v1", f"bearer.{token(sub, roles)}"],  # type: ignore[list-item]
                max_size=None,
                max_queue=max_queue,
                ping_interval=None,
                open_timeout=5,
                sock=sock,
            )
            break
        except (InvalidStatus, OSError) as exc:
            if sock is not None:
                sock.close()
            status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
            if status not in (None, 429, 503) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    client = Client(ws, read_delay=read_delay)
    await client.wait_frame("welcome")
    return client


def publisher_headers(sub: str = "pub-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, ['publisher'])}"}


async def post_events(http: httpx.AsyncClient, base_url: str, events: list[Frame]) -> list[str]:
    response = await http.post(
        f"{base_url}/api/v1/events/batch", json={"events": events}, headers=publisher_headers()
    )
    assert response.status_code == 202, (response.status_code, response.text)
    ids: list[str] = response.json()["ids"]
    return ids


async def post_event(http: httpx.AsyncClient, base_url: str, event: Frame) -> httpx.Response:
    return await http.post(f"{base_url}/api/v1/events", json=event, headers=publisher_headers())


async def log_ids(redis_url: str, after: str = "-", prefix: str = "secstream") -> list[str]:
    """Every id in the log (XRANGE), optionally only those after ``after``."""
    redis = Redis.from_url(redis_url)
    try:
        start = "-" if after in ("-", "0") else f"({after}"
        rows = await redis.xrange(f"{prefix}:log", start, "+")
    finally:
        await redis.aclose()
    return [r[0].decode() for r in rows]


def status(seq: int, **data: Any) -> Frame:
    """A non-coalescible event (``system.status``)."""
    return {"event_type": "system.status", "data": {"seq": seq, **data}}


def assert_increasing(ids: list[str], who: str = "") -> None:
    keys = [key(i) for i in ids]
    bad = [(a, b) for a, b in itertools.pairwise(ids) if key(b) <= key(a)]
    assert keys == sorted(set(keys)), f"{who}: ids not strictly increasing, e.g. {bad[:3]}"
