"""uvicorn's websockets-sansio WebSocket protocol, with less held by each idle connection.

uvicorn gives every connection an ``asyncio.Queue`` for what it receives and an
``asyncio.Event`` for flow control. Each is cheap alone, but a Queue holds three
deques and an Event of its own, and each deque is a 760-byte block even when
empty: about 3.8 KB per connection that sits idle (measured with tracemalloc,
docs/benchmarks.md). ``LeanWebSocketProtocol`` swaps them, as it is made, for
the two small classes below, which do the same for the few calls uvicorn makes
(``put_nowait``, ``get``, ``empty``; ``set``, ``clear``, ``is_set``, ``wait``)
and make their storage only while something is in it or waiting on it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class ReceiveQueue:
    """A FIFO of received ASGI events with at most one reader waiting at a time (the
    app's ``receive``; a second concurrent ``get`` is a bug and raises)."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._getter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            if self._getter is not None:
                raise RuntimeError("another coroutine is already waiting on this queue")
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None  # an empty deque still holds a 760-byte block
        return item


class Flag:
    """``asyncio.Event``'s ``set``/``clear``/``is_set``/``wait``; the waiters' list made
    only when someone waits (uvicorn's ``writable``: set for a connection's whole life
    unless its transport is above the high-water mark)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with ``ReceiveQueue`` and ``Flag`` in place of
    its Queue and Event; everything else is uvicorn's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = Flag(True)  # type: ignore[assignment]

    def compact(self) -> None:
        """Once accepted: the same attributes in a dict made to their size. uvicorn's
        ``__init__`` leaves this object's ``__dict__`` (37 attributes) in a table sized
        for growth: 1,584 bytes, where a copy takes 832 (measured; docs/benchmarks.md)."""
        self.__dict__ = dict(self.__dict__)
