"""The WebSocket protocol uvicorn runs for ``/ws`` (``ws=``): websockets' sans-I/O
``ServerProtocol`` for the opening handshake, and, once accepted, frames read and
written here, by a connection object that holds little while it sits idle.

Why our own: uvicorn's websockets-sansio protocol keeps, for a connection's whole
life, websockets' ``ServerProtocol`` (its parser generators, reader, id, request and
extension factory), an ``asyncio.Queue`` and ``Event``, and a 37-attribute
``__dict__``: about 4.9 KB per idle connection of the 13.3 KB that tracemalloc
counted (docs/benchmarks.md). This class is slotted; the handshake's objects are let
go at accept; the receive queue and the flow-control waiters exist only while
something is in them.

What it keeps of uvicorn's and websockets' behaviour, and where:

- **Handshake**: websockets parses and checks the request and builds the 101 or the
  refusal (``accept``, ``reject``), as uvicorn's protocol does; the ASGI scope, the
  ``websocket.accept`` / ``websocket.close`` / ``websocket.http.response.*`` messages
  and their log lines are uvicorn's.
- **permessage-deflate**: a connection that negotiated it keeps websockets'
  ``ServerProtocol`` for its life and every frame goes through it (``conn``), exactly
  as in uvicorn. Compression costs far more memory than the protocol object anyway.
- **Frames without extensions** (``_read``): RFC 6455 section 5 for a server. Every
  client frame must be masked; reserved bits must be clear; control frames are final
  and at most 125 bytes; continuation frames only inside a fragmented message and a
  new message only outside one; a message (all its fragments) over ``ws_max_size``
  fails the connection with 1009 as soon as its header says so, before its payload is
  buffered; text must be UTF-8 (1007); a close frame's code and reason are checked as
  websockets checks them (1002, 1007) and its payload is echoed. A failure sends a
  close frame with its code and closes the transport, as uvicorn does on a parser error.
- **Flow control**: reading pauses while a received message waits for the app
  (uvicorn's rule); ``send`` waits while the transport is above its high-water mark.
- **Keepalive**: none at this layer (``ws_ping_interval`` is ignored): the hub sends
  the protocol's own pings and closes a silent connection (PROTOCOL.md).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import struct
from collections import deque
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote
from weakref import WeakKeyDictionary

from uvicorn.config import Config
from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, ProtocolError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

try:
    from websockets.speedups import apply_mask  # websockets' C unmasking
except ImportError:  # pragma: no cover  (a pure-Python install of websockets)
    from websockets.utils import apply_mask

logger = logging.getLogger("uvicorn.error")

CONNECTING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3
"""``state``: before the 101; open; a close frame sent (by the app, in answer to the
client's, or on a failure); the transport gone."""

_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA

_EXTENSIONS: dict[str, Any] = {"websocket.http.response": {}}
"""Shared by every connection's scope, as is ``asgi``: nothing in this app writes to
either."""


def text_frame(payload: bytes) -> bytes:
    """A server's text frame (RFC 6455 section 5.2): final, unmasked, uncompressed."""
    return _frame(0x80 | _TEXT, payload)


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def _close_payload(code: int, reason: str) -> bytes:
    """A close frame's payload; ``code`` checked as websockets checks it (ProtocolError),
    the reason cut to fit a control frame (125 bytes) at a character boundary."""
    Close(code, "").check()
    data = reason.encode()[:123].decode(errors="ignore").encode()
    return struct.pack("!H", code) + data


MAX_FRAGMENTS = 1024
"""Frames one message may come in (browsers send one): past it the connection fails
with 1009, the contract's close code for a message too big, so that empty
continuation frames cannot grow a message's list of parts without bound
(``ws_max_size`` counts bytes, and an empty frame adds none)."""


class _Message:
    """A fragmented message so far."""

    __slots__ = ("frames", "opcode", "parts", "size")

    def __init__(self, opcode: int) -> None:
        self.opcode = opcode
        self.parts: list[bytes] = []
        self.size = 0
        self.frames = 0


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class _Shared:
    """What every connection of one server shares (one per ``ServerState``)."""

    __slots__ = (
        "app", "app_state", "asgi", "config", "connections", "default_headers", "deflate",
        "loop", "max_size", "root_path", "tasks",
    )

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.app = config.loaded_app
        self.app_state = app_state
        self.asgi = {"version": config.asgi_version, "spec_version": "2.4"}
        self.loop = loop
        self.root_path = config.root_path
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers
        self.max_size = config.ws_max_size
        self.deflate = config.ws_per_message_deflate


_shared: WeakKeyDictionary[ServerState, _Shared] = WeakKeyDictionary()


class LeanWebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "_getter", "_in", "_message", "_received", "_shared", "_waiters",
        "close_sent", "close_timer", "conn", "handshake_complete", "initial_response",
        "read_paused", "request", "response", "scope", "state", "transport", "writable",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()  # pragma: no cover
        shared = _shared.get(server_state)
        if shared is None or shared.config is not config:
            shared = _shared[server_state] = _Shared(
                config, server_state, app_state, _loop or asyncio.get_event_loop()
            )
        self._shared = shared
        extensions = []
        if shared.deflate:
            extensions = [ServerPerMessageDeflateFactory(
                server_max_window_bits=12, client_max_window_bits=12,
                compress_settings={"memLevel": 5},
            )]
        self.conn: ServerProtocol | None = ServerProtocol(
            extensions=extensions, max_size=shared.max_size, logger=logger
        )
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.scope: dict[str, Any] = None  # type: ignore[assignment]
        self.request: Request | None = None
        self.response: Response | None = None
        self.state = CONNECTING
        self.handshake_complete = False
        self.close_sent = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.initial_response: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.read_paused = False
        self.writable = True
        self._waiters: list[asyncio.Future[None]] | None = None
        self._received: deque[dict[str, Any]] | None = None
        self._getter: asyncio.Future[None] | None = None
        self._in: bytearray | None = None
        self._message: _Message | None = None

    @property
    def disconnected(self) -> bool:
        return self.state == CLOSED

    @property
    def lean(self) -> bool:
        """Accepted, and frames are read and written here (no extension negotiated)."""
        return self.conn is None and self.state != CONNECTING

    # -- the transport's callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._shared.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        code = 1005 if self.handshake_complete else 1006
        self._put({"type": "websocket.disconnect", "code": code})
        self._shared.connections.discard(self)
        self.handshake_complete = True
        self.state = CLOSED
        self._in = self._message = None
        # Unblock any send waiting to write: asyncio never resumes writing on a transport
        # lost while paused.
        self.resume_writing()
        self._cancel_close_timer()
        if exc is None:
            self.transport.close()

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def shutdown(self) -> None:
        """The server is stopping: 1012 to an open connection, 500 before accept."""
        if self.close_sent:
            self._cancel_close_timer()
            self.transport.close()
            return
        if self.handshake_complete:
            self._put({"type": "websocket.disconnect", "code": 1012})
            if self.state == OPEN:
                self._send_close(1012, "")
        else:
            self.send_500_response()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.conn is None:
            self._read(data)
        elif self.state == CONNECTING and self.scope is not None:
            # The request is in and the app is deciding: what the client sends meanwhile
            # waits, unparsed, for accept (and who then reads frames); reading pauses, so
            # that waits at most one read's worth.
            self._in = (self._in or bytearray()) + data
            self.transport.pause_reading()
        else:
            self._conn_received(data)

    def _conn_received(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.receive_data(data)
        if self.conn.parser_exc is not None:  # pragma: no cover
            self._conn_failed()
            return
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self._connect(event)
            elif not isinstance(event, Frame):
                continue  # pragma: no cover  (a server receives no responses)
            elif event.opcode is Opcode.CLOSE:
                self._conn_close()
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._conn_data(event)
            elif event.opcode is Opcode.PING:
                pong = b"".join(self.conn.data_to_send())  # websockets' pong
                if self.writable:  # as on the lean path: none while the buffer is full
                    self._write(pong)

    # -- the handshake --------------------------------------------------------------------

    def _connect(self, request: Request) -> None:
        conn = cast(ServerProtocol, self.conn)
        self.request = request
        self.response = conn.accept(request)
        if self.response.status_code != 101:
            self.handshake_complete = True
            self.close_sent = True
            conn.send_response(self.response)
            self._write(b"".join(conn.data_to_send()))
            self.transport.close()
            return
        shared = self._shared
        root = shared.root_path
        raw_path, _, query = request.path.partition("?")
        headers = [(key.encode("ascii"), value.encode("latin-1"))
                   for key, value in request.headers.raw_items()]
        subprotocols = [token.strip()
                        for header in request.headers.get_all("Sec-WebSocket-Protocol")
                        for token in header.split(",")]
        self.scope = {
            "type": "websocket",
            "asgi": shared.asgi,
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": root.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": shared.app_state.copy(),
            "extensions": _EXTENSIONS,
        }
        self._put({"type": "websocket.connect"})
        task = shared.loop.create_task(self.run_asgi())
        task.add_done_callback(shared.tasks.discard)
        shared.tasks.add(task)

    def _accepted(self) -> None:
        """After the 101: without extensions, let websockets' protocol go and read frames
        here; then whatever came before accept."""
        conn = cast(ServerProtocol, self.conn)
        self.state = OPEN
        self.request = self.response = None
        if not conn.extensions:
            self.conn = None
        pending, self._in = self._in, None
        if pending:
            if not self.read_paused:
                self.transport.resume_reading()
            if self.conn is None:
                self._read(bytes(pending))
            else:
                self._conn_received(bytes(pending))

    # -- frames in, without extensions ------------------------------------------------------

    def _read(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # failed, or the client's close answered: nothing more is read
        buf: bytes | bytearray = data
        if self._in is not None:
            self._in += data
            buf = self._in
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            opcode, fin = first & 0x0F, first & 0x80
            if first & 0x70:
                return self._fail(1002, "reserved bits must be 0")
            if not second & 0x80:
                return self._fail(1002, "incorrect masking")
            length, head = second & 0x7F, 6
            if length == 126:
                head = 8
                if end - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
            elif length == 127:
                head = 14
                if end - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
            if opcode >= _CLOSE:
                if opcode > _PONG:
                    return self._fail(1002, f"invalid opcode: {opcode}")
                if not fin:
                    return self._fail(1002, "fragmented control frame")
                if length > 125:
                    return self._fail(1002, "control frame too long")
            else:
                if opcode > _BINARY:
                    return self._fail(1002, f"invalid opcode: {opcode}")
                message = self._message
                if (message is None) == (opcode == 0):
                    return self._fail(1002, "unexpected continuation frame" if message is None
                                      else "expected a continuation frame")
                size = length + (message.size if message else 0)
                if size > self._shared.max_size:
                    return self._fail(
                        1009, f"over size limit ({size} > {self._shared.max_size} bytes)"
                    )
            if end - pos < head + length:
                break
            payload = apply_mask(bytes(buf[pos + head:pos + head + length]),
                                 bytes(buf[pos + head - 4:pos + head]))
            pos += head + length
            self._frame(opcode, bool(fin), payload)
            if self.transport.is_closing():
                self._in = None
                return
        if pos == end:
            self._in = None
        elif self._in is None:
            self._in = bytearray(buf[pos:])
        else:
            del self._in[:pos]

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == _PING:
            # Not while the transport is above its high-water mark: a client that sends
            # pings and reads nothing would otherwise grow our write buffer without end
            # (RFC 6455 5.5.3 lets a pong answer only the latest of several pings).
            if self.state == OPEN and self.writable:
                self._write(_frame(0x80 | _PONG, payload))
        elif opcode == _CLOSE:
            if self._message is not None:
                return self._fail(1002, "incomplete fragmented message")
            try:
                close = Close.parse(payload)
            except ProtocolError as exc:
                return self._fail(1002, str(exc))
            except UnicodeDecodeError:
                return self._fail(1007, "invalid UTF-8 in the close reason")
            if self.state == OPEN:  # the client's close: echoed as received (RFC 6455 5.5.1)
                self._write(_frame(0x80 | _CLOSE, payload))
            self._closed_by_client(close.code, close.reason)
        elif opcode != _PONG:  # pongs: nothing sent here asks for one
            self._data(opcode, fin, payload)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close frame with ``code``, the app told,
        the transport closed."""
        self._put({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.state == OPEN:
            self._send_close(code, reason)
        self.state = CLOSING
        self._in = self._message = None
        self.transport.close()

    # -- frames in, through websockets (permessage-deflate) --------------------------------

    def _conn_data(self, frame: Frame) -> None:
        opcode = 0 if frame.opcode is Opcode.CONT else int(frame.opcode)
        self._data(opcode, frame.fin, bytes(frame.data))

    def _conn_close(self) -> None:
        conn = cast(ServerProtocol, self.conn)
        self._write(b"".join(conn.data_to_send()))  # websockets' echo, if one is due
        assert conn.close_rcvd is not None
        self._closed_by_client(conn.close_rcvd.code, conn.close_rcvd.reason)

    def _conn_failed(self) -> None:  # pragma: no cover
        conn = cast(ServerProtocol, self.conn)
        assert conn.close_sent is not None
        self._put({"type": "websocket.disconnect", "code": conn.close_sent.code,
                   "reason": conn.close_sent.reason})
        self._write(b"".join(conn.data_to_send()))
        self.state = CLOSING
        self.transport.close()

    # -- what both paths share ----------------------------------------------------------------

    def _data(self, opcode: int, fin: bool, payload: bytes) -> None:
        """A data frame (its order already checked): a message, or part of one."""
        message = self._message
        if message is None:
            if fin:
                return self._deliver(opcode == _TEXT, payload)
            message = self._message = _Message(opcode)
        message.frames += 1
        if message.frames > MAX_FRAGMENTS:
            return self._fail(1009, f"a message in more than {MAX_FRAGMENTS} frames")
        if payload:
            message.parts.append(payload)
            message.size += len(payload)
        if fin:
            self._message = None
            self._deliver(message.opcode == _TEXT, b"".join(message.parts))

    def _deliver(self, text: bool, data: bytes) -> None:
        if self.close_sent:
            # The app is past ``websocket.close``: dropped, so that reading goes on until
            # the client's close arrives.
            return
        if text:
            try:
                message: dict[str, Any] = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                if self.conn is None:
                    return self._fail(1007, "invalid UTF-8 in a text message")
                self.conn.send_close(1007)  # pragma: no cover
                return self._conn_failed()  # pragma: no cover
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self._put(message)
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _closed_by_client(self, code: int, reason: str) -> None:
        if self.close_sent:
            # The client echoed our close: the closing handshake is complete.
            if self._cancel_close_timer():
                self.transport.close()
            return
        self.state = CLOSING
        if not self.transport.is_closing():
            self._put({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.transport.close()

    def _cancel_close_timer(self) -> bool:
        """Stop the timer that ends a close handshake the client does not answer;
        whether one was running."""
        timer, self.close_timer = self.close_timer, None
        if timer is None:
            return False
        timer.cancel()
        return True

    def _send_close(self, code: int, reason: str) -> None:
        self.state = CLOSING
        if self.conn is None:
            self._write(_frame(0x80 | _CLOSE, _close_payload(code, reason)))
        else:
            self.conn.send_close(code, reason)
            self._write(b"".join(self.conn.data_to_send()))

    def _write(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self.transport.write(data)

    # -- the app's side (ASGI) -------------------------------------------------------------------

    def _put(self, message: dict[str, Any]) -> None:
        if self._received is None:
            self._received = deque()
        self._received.append(message)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        while not self._received:
            if self._getter is not None:
                raise RuntimeError("another coroutine is already waiting to receive")
            self._getter = self._shared.loop.create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        message = self._received.popleft()
        if not self._received:
            self._received = None  # an empty deque still holds a 760-byte block
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
        return message

    async def run_asgi(self) -> None:
        try:
            result = await self._shared.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None:
            if self.state == OPEN:
                self.state = CLOSING
            self.transport.close()

    def send_500_response(self) -> None:
        if self.initial_response or self.handshake_complete or self.conn is None:
            return
        response = self.conn.reject(500, "Internal Server Error")
        self.conn.send_response(response)
        self._write(b"".join(self.conn.data_to_send()))

    async def send(self, message: dict[str, Any]) -> None:
        while not self.writable:
            waiter = self._shared.loop.create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        if self.state == CLOSED:
            raise ClientDisconnected()
        kind = message["type"]
        if not self.handshake_complete and self.initial_response is None:
            self._handshake_message(message)
        elif not self.close_sent and self.initial_response is None:
            if kind == "websocket.send":
                # closing: a transport that failed a write closes itself before it calls
                # connection_lost, and uvloop raises on a write to it
                if self.state != OPEN or self.transport.is_closing():
                    raise ClientDisconnected()
                data = message.get("bytes")
                text = message.get("text")
                if self.conn is None:
                    if data is not None:
                        self.transport.write(_frame(0x80 | _BINARY, data))
                    elif text is not None:
                        self.transport.write(text_frame(text.encode()))
                    return
                try:
                    if data is not None:
                        self.conn.send_binary(data)
                    elif text is not None:
                        self.conn.send_text(text.encode())
                except InvalidState:  # pragma: no cover
                    raise ClientDisconnected() from None
                self._write(b"".join(self.conn.data_to_send()))
            elif kind == "websocket.close":
                if self.state == OPEN and not self.transport.is_closing():
                    code = message.get("code", 1000)
                    reason = message.get("reason", "") or ""
                    self._put({"type": "websocket.disconnect", "code": code, "reason": reason})
                    self._send_close(code, reason)
                    self.close_sent = True
                    if self.read_paused:
                        self.read_paused = False
                        self.transport.resume_reading()
                    self.close_timer = self._shared.loop.call_later(
                        10.0, self.transport.close
                    )
            else:
                raise RuntimeError("Expected ASGI message 'websocket.send' or "
                                   f"'websocket.close', but got '{kind}'.")
        elif self.initial_response is not None:
            self._denial_body(message)
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )

    def _handshake_message(self, message: dict[str, Any]) -> None:
        conn = cast(ServerProtocol, self.conn)
        kind = message["type"]
        if kind == "websocket.accept":
            logger.info('%s - "WebSocket %s" [accepted]', get_client_addr(self.scope),  # type: ignore[arg-type]
                        get_path_with_query_string(self.scope))  # type: ignore[arg-type]
            headers = [
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in self._shared.default_headers + list(message.get("headers", []))
            ]
            if message.get("subprotocol"):
                headers.append(("Sec-WebSocket-Protocol", message["subprotocol"]))
            response = cast(Response, self.response)
            del response.headers["Date"]
            response.headers.update(headers)
            if not self.transport.is_closing():
                self.handshake_complete = True
                conn.send_response(response)
                self._write(b"".join(conn.data_to_send()))
                self._accepted()
        elif kind == "websocket.close":
            self._put({"type": "websocket.disconnect", "code": 1006})
            logger.info('%s - "WebSocket %s" 403', get_client_addr(self.scope),  # type: ignore[arg-type]
                        get_path_with_query_string(self.scope))  # type: ignore[arg-type]
            conn.send_response(conn.reject(HTTPStatus.FORBIDDEN, ""))
            self.close_sent = self.handshake_complete = True
            self._write(b"".join(conn.data_to_send()))
            self.transport.close()
        elif kind == "websocket.http.response.start":
            status = message["status"]
            if not 100 <= status < 600:
                raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
            logger.info('%s - "WebSocket %s" %d', get_client_addr(self.scope),  # type: ignore[arg-type]
                        get_path_with_query_string(self.scope), status)  # type: ignore[arg-type]
            headers = [(name.decode("latin-1"), value.decode("latin-1"))
                       for name, value in message.get("headers", [])]
            self.initial_response = (status, headers, b"")
        else:
            raise RuntimeError(
                "Expected ASGI message 'websocket.accept', 'websocket.close' "
                f"or 'websocket.http.response.start' but got '{kind}'."
            )

    def _denial_body(self, message: dict[str, Any]) -> None:
        if message["type"] != "websocket.http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'websocket.http.response.body' but got '{message['type']}'."
            )
        assert self.initial_response is not None
        status, headers, body = self.initial_response
        body += message["body"]
        self.initial_response = (status, headers, body)
        if message.get("more_body", False):
            return
        conn = cast(ServerProtocol, self.conn)
        response_headers = Headers(headers)
        response_headers.setdefault("Date", email.utils.formatdate(usegmt=True))
        response_headers.setdefault("Connection", "close")
        response_headers.setdefault("Content-Length", str(len(body)))
        response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        phrase = _phrase(status)
        self._put({"type": "websocket.disconnect", "code": 1006})
        conn.send_response(Response(status, phrase, response_headers, body))
        self.close_sent = True
        self._write(b"".join(conn.data_to_send()))
        self.transport.close()
