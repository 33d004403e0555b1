"""Frames written straight to uvicorn's transport (``rawsend``): what a real WebSocket
client decodes, when the path is taken and when it steps aside (compression, closing,
back-pressure), against the real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from live import SUBPROTOCOL, LiveApp
from secstream import rawsend
from secstream.connection import Connection
from secstream.protocol import PublishRequest

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]


def _parse(data: bytes) -> Frame:
    """Decode one frame as a client does (the server's frames are never masked)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("an incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 70_000])
async def test_text_frame_is_what_a_client_decodes_at_every_length_form(size: int) -> None:
    payload = ("é" * (size // 2) + "x" * (size % 2)).encode()
    assert len(payload) == size
    data = rawsend.text_frame(payload)
    header = 2 if size < 126 else 4 if size < 65_536 else 10
    assert len(data) == header + size
    frame = _parse(data)
    assert (frame.opcode, frame.fin, frame.rsv1, bytes(frame.data)) == (
        Opcode.TEXT, True, False, payload)


async def test_text_frame_of_builds_one_frame_per_string_not_per_value() -> None:
    text = json.dumps({"type": "event", "n": 1})
    first = rawsend.text_frame_of(text)
    assert rawsend.text_frame_of(text) is first  # the next recipient reuses it
    equal_but_other = "".join(list(text))
    assert equal_but_other is not text
    assert rawsend.text_frame_of(equal_but_other) is not first
    assert rawsend.text_frame_of(equal_but_other) == first


async def _client(app: LiveApp, **kw: Any) -> ClientConnection:
    ws = await connect(app.ws_url, subprotocols=[SUBPROTOCOL, f"bearer.{app.token()}"],  # type: ignore[list-item]
                       open_timeout=5, close_timeout=2, max_size=None, **kw)
    assert json.loads(await ws.recv())["type"] == "welcome"
    await ws.send(json.dumps({"type": "subscribe", "id": "s", "event_types": ["test.*"]}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    assert json.loads(await ws.recv())["type"] == "replayed"
    return ws


def _only_connection(app: LiveApp) -> Connection:
    (conn,) = app.service.hub.connections.values()
    return conn


def _direct(conn: Connection) -> Any:
    return conn.socket._direct  # type: ignore[attr-defined]


def _events(n: int, size: int, first: int = 0) -> list[PublishRequest]:
    return [PublishRequest("test.progress", {"test_id": "t-1", "progress": 1, "n": first + i,
                                             "output": "o" * size}) for i in range(n)]


async def _received(ws: ClientConnection, n: int, within: float = 20) -> tuple[list[int], int]:
    """The ``n`` of the next ``n`` events, and how many frames held them."""
    got: list[int] = []
    frames = 0
    with anyio.fail_after(within):
        while len(got) < n:
            frame = json.loads(await ws.recv())
            if frame["type"] == "ping":
                continue
            frames += 1
            events = frame["events"] if frame["type"] == "batch" else [frame]
            got += [e["data"]["n"] for e in events if e["type"] == "event"]
    return got, frames


async def test_events_singly_and_in_large_batches_reach_a_real_client_intact(
    live_app: LiveAppFactory,
) -> None:
    async with live_app() as app:
        ws = await _client(app, compression=None)
        try:
            conn = _only_connection(app)
            assert _direct(conn) is not None, "no permessage-deflate: the direct path"
            assert _direct(conn).request is None and _direct(conn).response is None
            # One event alone (16-bit length), then 300 in one read: batch frames > 65,535 bytes.
            await app.service.log.append(_events(1, 60_000))
            assert (await _received(ws, 1))[0] == [0]
            await app.service.log.append(_events(300, 1_000, first=1))
            got, frames = await _received(ws, 300)
            assert got == list(range(1, 301))
            assert frames < 300, "queued together, they went out as batch frames"
        finally:
            await ws.close()


async def test_a_compressed_connection_takes_the_servers_send(live_app: LiveAppFactory) -> None:
    async with live_app() as app:
        ws = await _client(app, compression="deflate")
        try:
            conn = _only_connection(app)
            assert _direct(conn) is None
            assert not conn.socket.write_now('{"type":"x"}')
            await app.service.log.append(_events(200, 500))
            assert (await _received(ws, 200))[0] == list(range(200))
        finally:
            await ws.close()


async def test_nothing_is_written_once_the_connection_closes(live_app: LiveAppFactory) -> None:
    async with live_app() as app:
        ws = await _client(app, compression=None)
        conn = _only_connection(app)
        proto = _direct(conn)
        frame = rawsend.text_frame(b'{"type":"x"}')
        assert rawsend.write_now(proto, frame)
        await ws.close()
        # The close handshake is complete: the server answered the client's close.
        assert proto.disconnected or proto.close_sent or proto.transport.is_closing()
        assert not rawsend.write_now(proto, frame)


async def test_a_client_that_stops_reading_pushes_back_and_then_gets_everything(
    live_app: LiveAppFactory,
) -> None:
    """A paused transport (above its high-water mark) is push-back: the direct path
    declines, the server's ``send`` waits, and every event still arrives, in order."""
    async with live_app(max_queue_bytes=4 * 1024 * 1024, stall_timeout=60) as app:
        ws = await _client(app, compression=None, max_queue=1)
        try:
            conn = _only_connection(app)
            proto = _direct(conn)
            ws.transport.pause_reading()  # the client stops reading its socket
            sent = 0
            paused = False
            with anyio.fail_after(30):
                while not paused:
                    await app.service.log.append(_events(50, 8_000, first=sent))
                    sent += 50
                    await asyncio.sleep(0.02)
                    paused = not proto.writable
            assert not rawsend.write_now(proto, rawsend.text_frame(b"{}"))
            ws.transport.resume_reading()
            assert (await _received(ws, sent, within=60))[0] == list(range(sent))
        finally:
            await ws.close()
