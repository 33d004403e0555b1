"""Run a coroutine at once, up to its first real wait.

A WebSocket send usually completes without waiting (the transport takes the
bytes), so a task per send, or a sender task woken per event, is pure
overhead. ``start`` runs the coroutine in the caller's step of the event loop;
only when it must wait (the socket is paused by back-pressure) does the caller
get an awaitable that finishes it, to await in a task of its own.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


def start(coro: Coroutine[Any, Any, None]) -> Rest | None:
    """Run ``coro`` until it finishes (None) or must wait (what finishes it).
    Its exceptions are raised here."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return Rest(coro, waiting)


class Rest:
    """The rest of a started coroutine: awaiting it resumes the coroutine each time
    what it waits for is done, exactly as ``await coro`` would have."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def close(self) -> None:
        """Never awaited after all: end the coroutine where it waits."""
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                value = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, say: the coroutine sees it
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waiting = coro.send(value)
            except StopIteration:
                return
