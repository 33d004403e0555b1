"""Our WebSocket protocol (``leanws``) through the real server, frame by frame: a raw
TCP client sends what a browser would and what an attacker might, and reads the
bytes the server answers with (RFC 6455 section 5 for a server; close codes 1002,
1007, 1009), and an idle connection holds none of the handshake's objects."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from websockets.asyncio.client import connect

from live import SUBPROTOCOL, LiveApp, _QuietServer
from secstream.leanws import (
    CLOSED,
    CLOSING,
    CONNECTING,
    MAX_FRAGMENTS,
    OPEN,
    LeanWebSocketProtocol,
)
from support import eventually

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True,
                 rsv: int = 0, length: int | None = None) -> bytes:
    """A client's frame; ``length`` claims a length other than the payload's."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawClient:
    """A WebSocket client on a bare TCP stream: the bytes it writes are exactly the
    test's; the server's frames are parsed here (unmasked, as a server's must be)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._inflate = zlib.decompressobj(-15)  # permessage-deflate, context kept

    @classmethod
    async def open(cls, app: LiveApp, *, deflate: bool = False) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        key = base64.b64encode(os.urandom(16)).decode()
        extension = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extension}"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}, bearer.{app.token()}\r\n\r\n".encode()
        )
        with anyio.fail_after(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert (b"permessage-deflate" in head) == deflate
        client = cls(reader, writer)
        assert (await client.json())["type"] == "welcome"
        return client

    async def frame(self, within: float = 5) -> tuple[int, bytes]:
        """The server's next frame: (opcode, payload); (-1, b"") at the end of the stream."""
        with anyio.fail_after(within):
            try:
                first, second = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return -1, b""
            assert not second & 0x80, "a server's frames are never masked"
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            assert first & 0x80, "the server sends no fragments"
            payload = await self.reader.readexactly(n)
            if first & 0x40:  # compressed (permessage-deflate)
                payload = self._inflate.decompress(payload + b"\x00\x00\xff\xff")
            return first & 0x0F, payload

    async def json(self, within: float = 5) -> dict[str, Any]:
        while True:
            opcode, payload = await self.frame(within)
            assert opcode == TEXT, (opcode, payload)
            message: dict[str, Any] = json.loads(payload)
            if message["type"] != "ping":
                return message

    async def closed_with(self, within: float = 5) -> tuple[int, str]:
        """Reads past text frames to the server's close: its code and reason; then the
        server must end the TCP stream."""
        while True:
            opcode, payload = await self.frame(within)
            if opcode == CLOSE:
                code, reason = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
                assert await self.frame(within) == (-1, b""), "closed, then the stream ends"
                return code, reason
            assert opcode == TEXT, (opcode, payload)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


async def _only_protocol(app: LiveApp) -> LeanWebSocketProtocol:
    await eventually(lambda: len(app.service.hub.connections) == 1)
    (conn,) = app.service.hub.connections.values()
    proto = conn.socket._send.__self__  # type: ignore[attr-defined]  # the server's send
    assert isinstance(proto, LeanWebSocketProtocol)
    return proto


async def test_an_idle_connection_holds_no_handshake_objects_and_still_talks(
    live_app: LiveAppFactory,
) -> None:
    async with live_app() as app:
        async with connect(app.ws_url, subprotocols=[SUBPROTOCOL, f"bearer.{app.token()}"],  # type: ignore[list-item]
                           open_timeout=5, close_timeout=2, compression=None) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "subscribe", "id": "s", "event_types": ["test.*"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            assert json.loads(await ws.recv())["type"] == "replayed"
            proto = await _only_protocol(app)
            assert not hasattr(proto, "__dict__"), "slotted"
            assert proto.conn is None, "websockets' protocol let go at accept"
            assert proto.request is None and proto.response is None
            assert proto._received is None and proto._waiters is None and proto._in is None
            assert proto.state == OPEN and proto.lean
            assert proto.scope["headers"] == [] and proto.scope["subprotocols"] == []
            (conn,) = app.service.hub.connections.values()
            assert "_headers" not in conn.socket._ws.__dict__  # type: ignore[attr-defined]
            assert conn._outbox is None  # everything sent: no queue held
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            with anyio.fail_after(5):
                while (reply := json.loads(await ws.recv()))["type"] != "pong":
                    pass
            assert reply["ref"] == "p"
            await app.publish("test.progress", {"test_id": "t-1", "progress": 1})
            with anyio.fail_after(5):
                while (frame := json.loads(await ws.recv()))["type"] != "event":
                    pass
            assert frame["data"]["test_id"] == "t-1"


async def test_fragments_byte_by_byte_with_a_ping_between_make_one_message(
    live_app: LiveAppFactory,
) -> None:
    async with live_app() as app:
        client = await RawClient.open(app)
        try:
            text = json.dumps({"type": "subscribe", "id": "s", "event_types": ["test.*"]}).encode()
            frames = (client_frame(TEXT, text[:10], fin=False)
                      + client_frame(PING, b"are you there")
                      + client_frame(0, text[10:20], fin=False)
                      + client_frame(0, text[20:]))
            for i in range(len(frames)):  # one byte per write: every partial header and payload
                client.send(frames[i:i + 1])
                await client.writer.drain()
            assert await client.frame() == (PONG, b"are you there")
            assert (await client.json())["type"] == "subscribed"
            assert (await client.json())["type"] == "replayed"
            # and several frames in one write, the last of them binary (not our protocol)
            client.send(client_frame(TEXT, b'{"type":"ping","id":"a"}')
                        + client_frame(TEXT, b'{"type":"ping","id":"b"}'))
            assert [(await client.json())["ref"] for _ in range(2)] == ["a", "b"]
        finally:
            client.close()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(client_frame(TEXT, b"{}", masked=False), 1002, id="unmasked"),
        pytest.param(client_frame(TEXT, b"{}", rsv=4), 1002, id="reserved bit"),
        pytest.param(client_frame(0x3, b"{}"), 1002, id="reserved data opcode"),
        pytest.param(client_frame(0xB, b""), 1002, id="reserved control opcode"),
        pytest.param(client_frame(PING, b"x", fin=False), 1002, id="fragmented ping"),
        pytest.param(client_frame(PING, b"x" * 126), 1002, id="ping over 125 bytes"),
        pytest.param(client_frame(0, b"{}"), 1002, id="continuation of nothing"),
        pytest.param(client_frame(TEXT, b"{", fin=False) + client_frame(TEXT, b"}"), 1002,
                     id="new message inside a fragmented one"),
        pytest.param(client_frame(TEXT, b"{", fin=False) + client_frame(CLOSE, b"\x03\xe8"),
                     1002, id="close inside a fragmented message"),
        pytest.param(client_frame(CLOSE, b"\x03"), 1002, id="close payload of one byte"),
        pytest.param(client_frame(CLOSE, struct.pack("!H", 1005)), 1002,
                     id="close code that must not be sent"),
        pytest.param(client_frame(TEXT, b'{"type":"\xff"}'), 1007, id="text not UTF-8"),
        pytest.param(client_frame(CLOSE, b"\x03\xe8\xff"), 1007, id="close reason not UTF-8"),
    ],
)
async def test_a_protocol_violation_fails_the_connection_with_its_code(
    live_app: LiveAppFactory, frames: bytes, code: int
) -> None:
    async with live_app() as app:
        client = await RawClient.open(app)
        try:
            proto = await _only_protocol(app)
            client.send(frames)
            assert (await client.closed_with())[0] == code
            await eventually(lambda: not app.service.hub.connections)  # the session ended
            assert proto.state != OPEN
        finally:
            client.close()


@pytest.mark.parametrize("deflate", [False, True], ids=["no extension", "permessage-deflate"])
async def test_a_message_in_too_many_frames_fails_with_1009(
    live_app: LiveAppFactory, deflate: bool
) -> None:
    """Empty continuation frames add no bytes: the number of frames is bounded too, so a
    message's parts cannot grow without end. At the bound, a message still arrives."""
    async with live_app() as app:
        client = await RawClient.open(app, deflate=deflate)
        try:
            empty = client_frame(0, b"", fin=False)
            ping = json.dumps({"type": "ping", "id": "at-the-bound"}).encode()
            client.send(client_frame(TEXT, ping[:5], fin=False)
                        + empty * (MAX_FRAGMENTS - 2) + client_frame(0, ping[5:]))
            reply = await client.json()
            assert (reply["type"], reply["ref"]) == ("pong", "at-the-bound")
            client.send(client_frame(TEXT, b"{", fin=False) + empty * MAX_FRAGMENTS)
            code, reason = await client.closed_with()
            assert code == 1009 and "frames" in reason
        finally:
            client.close()


async def test_an_oversized_message_is_refused_from_its_header_before_its_payload(
    live_app: LiveAppFactory,
) -> None:
    """A frame that says it is over 64 KiB, or fragments that add up past it: 1009 at
    once, with none of the payload sent (so none of it buffered)."""
    async with live_app() as app:
        client = await RawClient.open(app)
        try:
            client.send(client_frame(TEXT, b"", length=10 * 1024 * 1024)[:14])  # header only
            code, reason = await client.closed_with()
            assert code == 1009 and "over size limit" in reason
        finally:
            client.close()
        client = await RawClient.open(app)
        try:
            part = b" " * 40_000
            client.send(client_frame(TEXT, part, fin=False)
                        + client_frame(0, part, fin=False)[:14])
            assert (await client.closed_with())[0] == 1009
        finally:
            client.close()


async def test_a_ws_ping_gets_its_pong_and_a_pong_is_ignored(live_app: LiveAppFactory) -> None:
    async with live_app() as app:
        client = await RawClient.open(app)
        try:
            client.send(client_frame(PONG, b"unasked") + client_frame(PING, b"")
                        + client_frame(PING, b"\x00" * 125))
            assert await client.frame() == (PONG, b"")
            assert await client.frame() == (PONG, b"\x00" * 125)
        finally:
            client.close()


@pytest.mark.parametrize("deflate", [False, True], ids=["no extension", "permessage-deflate"])
async def test_pings_from_a_client_that_reads_nothing_do_not_grow_the_servers_buffer(
    live_app: LiveAppFactory, deflate: bool
) -> None:
    async with live_app() as app:
        client = await RawClient.open(app, deflate=deflate)
        try:
            proto = await _only_protocol(app)
            client.writer.transport.pause_reading()  # type: ignore[attr-defined]
            pings = client_frame(PING, b"p" * 125) * 1000
            for _ in range(100):  # 13 MB of pings, 12.7 MB of pongs if each were answered
                client.send(pings)
                await client.writer.drain()
            await eventually(lambda: not proto.writable)
            high = proto.transport.get_write_buffer_limits()[1]
            # one pong past the mark; through websockets (which answers all the pings of
            # one read at once) one read's worth of pongs, at most 256 KiB
            past = 256 * 1024 if deflate else 131
            assert proto.transport.get_write_buffer_size() <= high + past
            client.writer.transport.resume_reading()  # type: ignore[attr-defined]
            client.send(client_frame(TEXT, b'{"type":"ping","id":"still"}'))
            pongs = 0
            while (frame := await client.frame(within=10))[0] == PONG:  # those sent come first
                pongs += 1
            assert frame[0] == TEXT and json.loads(frame[1]) == {"type": "pong", "ref": "still"}
            assert pongs < 100_000, "pings that came while the buffer was full got no pong"
        finally:
            client.close()


async def test_a_send_after_the_transport_failed_is_the_client_gone(
    live_app: LiveAppFactory,
) -> None:
    """A transport closes itself when a write fails, a turn before connection_lost: the
    app's send then raises ClientDisconnected (an OSError), never a write to it."""
    async with live_app() as app:
        client = await RawClient.open(app)
        try:
            proto = await _only_protocol(app)
            proto.transport.abort()  # as the transport does on a failed write
            assert proto.state == OPEN and proto.transport.is_closing()
            with pytest.raises(ClientDisconnected):
                await proto.send({"type": "websocket.send", "text": "{}"})
            await eventually(lambda: proto.state == CLOSED)
        finally:
            client.close()


async def test_the_clients_close_is_echoed_and_the_session_ends(live_app: LiveAppFactory) -> None:
    async with live_app() as app:
        client = await RawClient.open(app)
        try:
            await _only_protocol(app)
            client.send(client_frame(CLOSE, struct.pack("!H", 4321) + "bye ✓".encode()))
            assert await client.closed_with() == (4321, "bye ✓")
            await eventually(lambda: not app.service.hub.connections)
        finally:
            client.close()


async def test_a_close_the_server_starts_ends_when_the_client_answers(
    live_app: LiveAppFactory,
) -> None:
    """The app closes (as an administrator's close does, 4003); the client's answering
    close completes the handshake: the transport closes then, not when the 10 s close
    timer would."""
    async with live_app() as app:
        client = await RawClient.open(app)
        try:
            proto = await _only_protocol(app)
            (conn,) = app.service.hub.connections.values()
            conn.close(4003)
            while True:
                opcode, payload = await client.frame()
                if opcode == CLOSE:
                    break
            assert struct.unpack("!H", payload[:2])[0] == 4003
            assert proto.state == CLOSING and proto.close_sent
            # data after the server's close is read and dropped, a ping gets no pong
            client.send(client_frame(TEXT, b'{"type":"ping","id":"late"}')
                        + client_frame(PING, b"late"))
            await asyncio.sleep(0.1)
            assert not proto.transport.is_closing(), "still waiting for the client's close"
            client.send(client_frame(CLOSE, payload[:2]))
            with anyio.fail_after(2):
                assert await client.frame() == (-1, b""), "nothing after the close"
        finally:
            client.close()


async def test_a_frame_in_the_same_write_as_the_request_is_not_lost(
    live_app: LiveAppFactory,
) -> None:
    """A client that sends its first frame with its upgrade request, before the 101
    (RFC 6455 says it must wait; some do not): the frame reaches the app after accept."""
    async with live_app() as app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {SUBPROTOCOL}, bearer.{app.token()}\r\n\r\n".encode()
                + client_frame(TEXT, b'{"type":"ping","id":"eager"}')
            )
            with anyio.fail_after(5):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            client = RawClient(reader, writer)
            assert (await client.json())["type"] == "welcome"
            assert await client.json() == {"type": "pong", "ref": "eager"}
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def _gated_echo_server() -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """uvicorn with our protocol and an app that answers each text message with
    ``echo:<text>``, and accepts only once ``state["gate"]`` is set (``state["proto"]``:
    the connection's protocol object, ``state["connected"]``: set at websocket.connect)."""
    state: dict[str, Any] = {"gate": asyncio.Event(), "connected": asyncio.Event()}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        state["proto"] = send.__self__
        state["connected"].set()
        await state["gate"].wait()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": f"echo:{message.get('text')}"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, ws=LeanWebSocketProtocol, lifespan="off", log_config=None,
                            log_level="warning", ws_per_message_deflate=True)
    server = _QuietServer(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            await eventually(lambda: server.started)
            yield sock.getsockname()[1], state
        finally:
            server.should_exit = True
    sock.close()


@pytest.mark.parametrize("deflate", [False, True], ids=["no extension", "permessage-deflate"])
async def test_a_frame_begun_before_accept_is_read_after_it(deflate: bool) -> None:
    """A client that starts its first frame while the app is still deciding: the bytes
    wait, unparsed, and are read after accept with the rest, by whichever parser the
    handshake chose. (This server runs uvicorn's own HTTP protocol, which drops bytes in
    the read that holds the request; ``serve``'s passes them on, tested above.)"""
    async with _gated_echo_server() as (port, state):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            extension = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
            writer.write(
                f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n".encode()
            )
            with anyio.fail_after(5):
                await state["connected"].wait()
            frame = client_frame(TEXT, b"early bird")
            writer.write(frame[:9])
            proto: LeanWebSocketProtocol = state["proto"]
            await eventually(lambda: proto._in is not None)
            assert bytes(proto._in) == frame[:9] and proto.state == CONNECTING
            state["gate"].set()
            with anyio.fail_after(5):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            assert (b"permessage-deflate" in head) == deflate
            assert proto.lean != deflate
            writer.write(frame[9:])
            opcode, payload = await RawClient(reader, writer).frame()
            if deflate and payload[:1] != b"e":  # the server compressed its answer
                payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
            assert (opcode, payload) == (TEXT, b"echo:early bird")
        finally:
            writer.close()
