"""One connection's outbox: coalescing keeps ids unique and increasing and never
drops high or critical events; batching widens under load."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from secstream.auth import Principal
from secstream.connection import Connection
from secstream.entries import StreamEntry
from secstream.events import receivable

pytestmark = pytest.mark.anyio


class RecordingSocket:
    """The Socket protocol over a list: what the connection sent, frame by frame."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_text(self, data: str) -> None:
        self.frames.append(json.loads(data))

    async def receive(self) -> str | bytes | None:
        return None

    async def close(self, code: int, reason: str = "") -> None:
        pass


def _connection(max_queue_bytes: int = 1 << 20) -> tuple[Connection, RecordingSocket]:
    socket = RecordingSocket()
    principal = Principal("u-1", frozenset({"viewer"}), frozenset(), 2e9, receivable(["viewer"]))
    conn = Connection(
        socket, principal, connection_id="c-1", client_id=None, max_queue_bytes=max_queue_bytes
    )
    return conn, socket


def _entry(seq: int, event_type: str = "test.progress", test_id: str = "t-1",
           priority: str = "normal") -> StreamEntry:
    eid = f"1000-{seq}"
    frame = json.dumps({"type": "event", "id": eid, "event_type": event_type,
                        "priority": priority, "data": {"test_id": test_id, "n": seq}})
    return StreamEntry(eid, event_type, priority, test_id, None, None, frame)


def _events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in frames:
        out += frame["events"] if frame["type"] == "batch" else [frame]
    return out


def _seq(event_id: str) -> int:
    return int(event_id.split("-")[1])


async def test_coalescing_keeps_the_newest_progress_per_test_and_every_alert() -> None:
    conn, socket = _connection()
    entries = [
        _entry(1, test_id="a"), _entry(2, test_id="b"), _entry(3, test_id="a"),
        _entry(4, "system.alert", test_id="a", priority="critical"),
        _entry(5, test_id="a"), _entry(6, test_id="b"), _entry(7, test_id="a"),
        _entry(8, test_id="a", priority="high"),
    ]
    for entry in entries:
        conn.send_event(entry)
    assert conn.coalesce() == 4  # a: 1, 3, 5 go (7 stays); b: 2 goes (6 stays)
    sender = asyncio.create_task(conn.run_sender())
    await asyncio.sleep(0.01)
    sender.cancel()

    events = _events(socket.frames)
    ids = [_seq(e["id"]) for e in events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    notices = {e["data"]["test_id"]: e for e in events if e["event_type"] == "connection.info"}
    # Each notice takes the id of the newest event it stands for, and says how many.
    assert _seq(notices["a"]["id"]) == 5 and notices["a"]["data"]["skipped"] == 3
    assert _seq(notices["b"]["id"]) == 2 and notices["b"]["data"]["skipped"] == 1
    kept = [_seq(e["id"]) for e in events if e["event_type"] != "connection.info"]
    assert kept == [4, 6, 7, 8]  # the alert, the newest progress per test, the high one
    assert conn.coalesced == 4


async def test_a_second_coalescing_folds_the_earlier_notice_into_the_new_one() -> None:
    conn, _ = _connection()
    for seq in (1, 2, 3):
        conn.send_event(_entry(seq))
    conn.coalesce()
    for seq in (4, 5):
        conn.send_event(_entry(seq))
    assert conn.coalesce() == 2  # 3 and 4 go; the earlier notice (for 1, 2) folds in
    texts = [json.loads(item.text) for item in conn._outbox]
    assert [(t["event_type"], _seq(t["id"])) for t in texts] == [
        ("connection.info", 4), ("test.progress", 5)
    ]
    assert texts[0]["data"]["skipped"] == 4


async def test_under_load_a_sender_waits_so_more_events_share_a_frame() -> None:
    for under_load, expected_frames in ((False, 2), (True, 1)):
        conn, socket = _connection()
        conn.under_load = under_load
        sender = asyncio.create_task(conn.run_sender())
        await asyncio.sleep(0)
        conn.send_event(_entry(1, "system.status"))
        await asyncio.sleep(0.01)  # a normal sender has sent event 1 alone by now
        for seq in range(2, 6):
            conn.send_event(_entry(seq, "system.status"))
        await asyncio.sleep(0.1)
        sender.cancel()
        assert len(socket.frames) == expected_frames, (under_load, socket.frames)
        assert [_seq(e["id"]) for e in _events(socket.frames)] == [1, 2, 3, 4, 5]
