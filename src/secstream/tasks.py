"""Stopping background tasks without trusting every library to honour a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_all(tasks: Iterable[asyncio.Task[None]], *, within: float = 5.0) -> None:
    """Cancel ``tasks`` and wait for them, ``within`` seconds at most.

    A cancellation can be lost inside a library (redis-py sends commands under
    ``asyncio.wait_for``, which on Python 3.11 may swallow a cancel that lands as
    a send completes): shutdown must not wait for such a task forever.
    """
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    done, late = await asyncio.wait(pending, timeout=within)
    for task in late:
        task.cancel()  # once more; it is left behind if it still does not stop
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn about it
