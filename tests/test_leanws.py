"""The leaner uvicorn WebSocket protocol (``leanws``) and the handshake's headers let go
after accept (``rawsend.release_handshake``): the small queue and flag behave as
uvicorn needs, and a real connection through the real server holds none of it idle."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect

from live import SUBPROTOCOL, LiveApp
from secstream.leanws import Flag, LeanWebSocketProtocol, ReceiveQueue

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]


async def test_receive_queue_is_first_in_first_out_and_wakes_its_reader() -> None:
    queue = ReceiveQueue()
    assert queue.empty() and queue.qsize() == 0
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert queue.qsize() == 2
    assert await queue.get() == 1
    assert await queue.get() == 2
    assert queue.empty()
    assert queue._items is None  # nothing queued: no deque held
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait(3)
    with anyio.fail_after(1):
        assert await reader == 3


async def test_a_cancelled_get_leaves_the_item_for_the_next() -> None:
    queue = ReceiveQueue()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("kept")
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await queue.get() == "kept"


async def test_a_second_reader_at_once_is_an_error() -> None:
    queue = ReceiveQueue()
    first = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await queue.get()
    queue.put_nowait("x")
    assert await first == "x"


async def test_flag_waits_until_set_and_not_when_set() -> None:
    flag = Flag(True)
    assert flag.is_set() and await flag.wait()
    flag.clear()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    flag.clear()  # set then cleared before they ran: they were still released (as Event)
    with anyio.fail_after(1):
        assert await asyncio.gather(*waiters) == [True, True]
    assert flag._waiters is None


async def test_a_cancelled_flag_waiter_is_forgotten() -> None:
    flag = Flag()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not flag._waiters


async def test_an_idle_connection_keeps_no_handshake_headers_and_still_talks(
    live_app: LiveAppFactory,
) -> None:
    async with live_app() as app:
        async with connect(app.ws_url, subprotocols=[SUBPROTOCOL, f"bearer.{app.token()}"],  # type: ignore[list-item]
                           open_timeout=5, close_timeout=2, compression=None) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "subscribe", "id": "s", "event_types": ["test.*"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            assert json.loads(await ws.recv())["type"] == "replayed"
            (conn,) = app.service.hub.connections.values()
            proto: Any = conn.socket._send.__self__  # type: ignore[attr-defined]
            assert isinstance(proto, LeanWebSocketProtocol)
            assert isinstance(proto.queue, ReceiveQueue) and isinstance(proto.writable, Flag)
            assert proto.request is None and proto.response is None
            # its attributes in a dict of their size (compact), not uvicorn's grown one
            assert sys.getsizeof(vars(proto)) <= sys.getsizeof(dict(vars(proto)))
            assert proto.scope["headers"] == []
            assert proto.scope["subprotocols"] == []
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
