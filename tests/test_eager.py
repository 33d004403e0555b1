"""``eager.start``: a send that completes at once needs no task; one that must wait is
finished by awaiting what ``start`` returns, exactly as ``await`` would have; and a
connection whose socket pushes back still gets every frame, in order."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from secstream import eager
from secstream.auth import Principal
from secstream.connection import Connection, Subscription
from secstream.entries import StreamEntry
from secstream.events import receivable

pytestmark = pytest.mark.anyio


async def test_a_coroutine_that_does_not_wait_runs_to_the_end_at_once() -> None:
    done: list[int] = []

    async def send() -> None:
        done.append(1)

    assert eager.start(send()) is None
    assert done == [1]


async def test_a_coroutine_that_waits_is_finished_by_awaiting_the_rest() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def send() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)
        steps.append("after")

    rest = eager.start(send())
    assert rest is not None and steps == ["before"]
    task = asyncio.ensure_future(_await(rest))
    await asyncio.sleep(0.01)
    assert not task.done()
    gate.set_result("opened")
    await asyncio.wait_for(task, 1)
    assert steps == ["before", "opened", "after"]


async def test_cancelling_the_rest_reaches_the_coroutine() -> None:
    seen: list[str] = []

    async def send() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    rest = eager.start(send())
    assert rest is not None
    task = asyncio.ensure_future(_await(rest))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_errors_of_a_send_that_fails_at_once_are_raised_by_start() -> None:
    async def send() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        eager.start(send())


async def _await(rest: eager.Rest) -> None:
    await rest


class PushingBackSocket:
    """Takes a frame only when the test opens the gate: every send waits."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.gate = asyncio.Event()

    def write_now(self, data: str) -> bool:
        return False

    async def send_text(self, data: str) -> None:
        await self.gate.wait()
        self.frames.append(json.loads(data))

    async def receive(self) -> str | bytes | None:
        return None

    async def close(self, code: int, reason: str = "") -> None:
        pass


def _entry(seq: int) -> StreamEntry:
    eid = f"1000-{seq}"
    frame = json.dumps({"type": "event", "id": eid, "event_type": "system.status",
                        "priority": "normal", "data": {"n": seq}})
    return StreamEntry(eid, "system.status", "normal", None, None, None, frame)


async def test_a_socket_that_pushes_back_still_gets_every_frame_in_order() -> None:
    socket = PushingBackSocket()
    principal = Principal("u-1", frozenset({"viewer"}), frozenset(), 2e9, receivable(["viewer"]))
    conn = Connection(socket, principal, connection_id="c-1", client_id=None,
                      max_queue_bytes=1 << 20)
    conn.add_subscription(
        Subscription("s1", ["*"], frozenset({"system.status"}), None, (0, 0))
    )
    conn.push(_entry(1))
    await asyncio.sleep(0.01)  # the writer's send waits on the socket: a task finishes it
    for seq in range(2, 6):
        conn.push(_entry(seq))
    await asyncio.sleep(0.01)
    assert socket.frames == [] and conn.sent == 0
    socket.gate.set()
    await asyncio.sleep(0.05)
    events: list[dict[str, Any]] = []
    for frame in socket.frames:
        events += frame["events"] if frame["type"] == "batch" else [frame]
    assert [e["data"]["n"] for e in events] == [1, 2, 3, 4, 5]
    assert conn.sent == 5 and conn.queued_bytes == 0
