"""One connection's outbox: bounded, lossless (past the limit it reads the log),
``latest`` replacement, legal state moves only, batching widens under load."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from secstream.auth import Principal
from secstream.connection import (
    BUSY_CONNECTIONS,
    BUSY_LINGER_SECONDS,
    BUSY_WINDOW_SECONDS,
    Connection,
    ReplayJob,
    Subscription,
    Writer,
)
from secstream.entries import StreamEntry
from secstream.events import receivable

pytestmark = pytest.mark.anyio


class RecordingSocket:
    """The Socket protocol over a list: what the connection sent, frame by frame."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def write_now(self, data: str) -> bool:
        return False

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


def _subscribe(conn: Connection, *, latest: bool = False, test_id: str | None = None) -> None:
    types = frozenset({"test.progress", "system.alert", "system.status"})
    sub = Subscription(conn.new_subscription_id(), ["*"], types, test_id, (0, 0), latest=latest)
    conn.add_subscription(sub)


async def _drain(conn: Connection) -> None:
    await asyncio.sleep(0.01)  # the writer's pass sends what is queued


async def test_without_latest_every_progress_event_is_kept() -> None:
    conn, socket = _connection()
    _subscribe(conn)
    for seq in range(1, 6):
        conn.deliver(_entry(seq), f"1000-{seq - 1}")
    await _drain(conn)
    assert [_seq(e["id"]) for e in _events(socket.frames)] == [1, 2, 3, 4, 5]


async def test_latest_replaces_waiting_progress_of_the_same_test_only() -> None:
    conn, socket = _connection()
    _subscribe(conn, latest=True)
    entries = [
        _entry(1, test_id="a"), _entry(2, test_id="b"), _entry(3, test_id="a"),
        _entry(4, "system.alert", test_id="a", priority="critical"),
        _entry(5, test_id="a"), _entry(6, test_id="b"),
    ]
    for entry in entries:
        conn.deliver(entry, "0-0")
    await _drain(conn)
    ids = [_seq(e["id"]) for e in _events(socket.frames)]
    assert ids == [4, 5, 6]  # the alert, and the newest progress of each test, in id order
    assert conn.queued_bytes == 0


async def test_latest_does_not_apply_when_another_subscription_wants_every_line() -> None:
    conn, socket = _connection()
    _subscribe(conn, latest=True)
    _subscribe(conn, test_id="a")
    for seq in (1, 2, 3):
        conn.deliver(_entry(seq, test_id="a"), "0-0")
    await _drain(conn)
    assert [_seq(e["id"]) for e in _events(socket.frames)] == [1, 2, 3]


async def test_past_the_queue_limit_the_connection_reads_instead_of_queuing() -> None:
    conn, socket = _connection(max_queue_bytes=400)
    _subscribe(conn)
    reads: list[str | None] = []
    conn.when_reading(lambda: reads.append(conn.position))
    for seq in range(1, 8):
        conn.deliver(_entry(seq), f"1000-{seq - 1}")
    assert conn.reading and reads == [conn.position]
    queued = conn.queue_depth
    assert conn.queued_bytes <= 400 + 200  # the limit, plus the notice
    # It reads from just before the first event it did not queue.
    assert conn.position == f"1000-{queued - 1}"
    await _drain(conn)
    frames = socket.frames
    assert frames[0] == {"type": "connection.info", "state": "catching_up", "behind": queued}
    assert [_seq(e["id"]) for e in _events(frames[1:])] == list(range(1, queued))
    conn.advance("1000-7")
    conn.go_live()
    await _drain(conn)
    assert socket.frames[-1] == {"type": "connection.info", "state": "live"}


async def test_state_moves_only_through_legal_transitions() -> None:
    conn, _ = _connection()
    with pytest.raises(RuntimeError):
        conn.go_live()
    with pytest.raises(RuntimeError):
        conn.advance("1-0")
    conn.close(4009)
    conn.finish()
    with pytest.raises(RuntimeError):
        conn.finish()


async def test_nothing_is_sent_or_counted_after_a_close() -> None:
    conn, socket = _connection()
    _subscribe(conn)
    conn.deliver(_entry(1), "0-0")
    conn.close(4009)
    conn.deliver(_entry(2), "1000-1")
    conn.push(_entry(3))
    await _drain(conn)
    assert socket.frames == [] and conn.sent == 0 and conn.queued_bytes == 0


async def test_stalled_only_while_frames_wait() -> None:
    conn, _ = _connection()
    _subscribe(conn)
    assert not conn.stalled(time.monotonic() + 100, 30)
    conn.deliver(_entry(1), "0-0")
    assert conn.stalled(time.monotonic() + 31, 30)
    await _drain(conn)
    assert not conn.stalled(time.monotonic() + 100, 30)


class _Load:
    def __init__(self, overloaded: bool) -> None:
        self.overloaded = overloaded


async def test_under_load_a_sender_waits_so_more_events_share_a_frame() -> None:
    for under_load, expected_frames in ((False, 2), (True, 1)):
        socket = RecordingSocket()
        principal = Principal(
            "u-1", frozenset({"viewer"}), frozenset(), 2e9, receivable(["viewer"])
        )
        conn = Connection(
            socket, principal, connection_id="c-1", client_id=None, max_queue_bytes=1 << 20,
            load=_Load(under_load),
        )
        _subscribe(conn)
        conn.push(_entry(1, "system.status"))
        await asyncio.sleep(0.01)  # a normal sender has sent event 1 alone by now
        for seq in range(2, 6):
            conn.push(_entry(seq, "system.status"))
        await asyncio.sleep(0.1)
        assert len(socket.frames) == expected_frames, (under_load, socket.frames)
        assert [_seq(e["id"]) for e in _events(socket.frames)] == [1, 2, 3, 4, 5]


async def test_delivery_latency_is_timed_at_the_send_one_frame_in_sixteen() -> None:
    from secstream.connection import Counters

    timed: list[float] = []
    socket = RecordingSocket()
    principal = Principal("u-1", frozenset({"viewer"}), frozenset(), 2e9, receivable(["viewer"]))
    conn = Connection(
        socket, principal, connection_id="c-1", client_id=None, max_queue_bytes=1 << 20,
        counters=Counters(timed.append),
    )
    _subscribe(conn)
    for seq in range(1, 33):  # one frame each: the writer sends every event as it comes
        conn.push(_entry(seq))
        await _drain(conn)
    assert len(socket.frames) == 32
    # Ids "1000-n" were appended at 1 s past the epoch: the latency is measured from then.
    assert len(timed) == 32 // Counters.LATENCY_EVERY and all(t > 1e9 for t in timed)
    conn.close(1000)
    conn.push(_entry(99))
    await _drain(conn)
    assert len(timed) == 2  # nothing sent after a close, nothing timed


def _fleet(n: int) -> list[tuple[Connection, RecordingSocket]]:
    """``n`` connections sharing one writer, as the hub's do."""
    writer = Writer()
    fleet = []
    for i in range(n):
        socket = RecordingSocket()
        principal = Principal("u-1", frozenset({"viewer"}), frozenset(), 2e9,
                              receivable(["viewer"]))
        conn = Connection(socket, principal, connection_id=f"c-{i}", client_id=None,
                          max_queue_bytes=1 << 20, writer=writer)
        _subscribe(conn)
        fleet.append((conn, socket))
    return fleet


def _deliver_to(fleet: list[tuple[Connection, RecordingSocket]], seq: int) -> None:
    entry = _entry(seq)
    for conn, _ in fleet:
        conn.deliver(entry, "0-0")


async def test_past_its_delivery_rate_the_writer_waits_so_events_share_frames() -> None:
    fleet = _fleet(BUSY_CONNECTIONS)  # 4 x 256 frames a turn: past the rate, and wide
    writer = fleet[0][0]._writer
    seq = 0
    deadline = time.monotonic() + BUSY_WINDOW_SECONDS * 8  # slack for a loaded machine
    while time.monotonic() < deadline and not writer.busy:
        for _ in range(4):
            seq += 1
            _deliver_to(fleet, seq)
        await asyncio.sleep(0.001)
    assert writer.busy
    socket = fleet[0][1]
    seq += 1
    _deliver_to(fleet, seq)
    for _ in range(5000):  # until the pass that sends it has run
        if seq in [_seq(e["id"]) for e in _events(socket.frames)]:
            break
        await asyncio.sleep(0.001)
    # A pass just ran: the next waits for the period from its start.
    _deliver_to(fleet, seq + 1)
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # not busy, seq + 1 would have left alone by now
    _deliver_to(fleet, seq + 2)
    await asyncio.sleep(BUSY_LINGER_SECONDS * 3)
    frame = next(f for f in socket.frames if f.get("type") == "batch"
                 and seq + 1 in [_seq(e["id"]) for e in f["events"]])
    assert [_seq(e["id"]) for e in frame["events"]][-2:] == [seq + 1, seq + 2]  # they waited
    assert [_seq(e["id"]) for e in _events(socket.frames)] == list(range(1, seq + 3))
    await asyncio.sleep(BUSY_WINDOW_SECONDS * 2.5)  # a quiet spell: no longer busy
    frames_before = len(socket.frames)
    _deliver_to(fleet, seq + 3)
    await asyncio.sleep(0)
    assert not writer.busy
    assert len(socket.frames) == frames_before + 1  # sent on the next turn


async def test_fanning_out_to_a_few_the_writer_never_waits() -> None:
    fleet = _fleet(BUSY_CONNECTIONS - 1)  # narrow
    writer = fleet[0][0]._writer
    deadline = time.monotonic() + BUSY_WINDOW_SECONDS * 2.5
    seq = 0
    while time.monotonic() < deadline:
        seq += 1
        _deliver_to(fleet, seq)
        writer.frames_queued += 100_000  # far past the rate, as many narrow fan-outs would be
        await asyncio.sleep(0)
        while writer._resuming:  # noqa: ASYNC110  (turns, not time: a sliced pass goes on)
            await asyncio.sleep(0)
        assert all(len(s.frames) == seq for _, s in fleet)  # each sent without a wait
        await asyncio.sleep(0.001)
    assert not writer.busy


async def test_at_a_moderate_rate_the_writer_never_waits() -> None:
    fleet = _fleet(300)  # many connections, each write quick: passes take little time
    writer = fleet[0][0]._writer
    for seq in range(1, 40):
        _deliver_to(fleet, seq)
        await asyncio.sleep(0)
        assert all(len(s.frames) == seq for _, s in fleet)
        await asyncio.sleep(0.01)
    assert not writer.busy


class WritingSocket(RecordingSocket):
    """A socket that takes every frame at once (``write_now``), as an idle one does."""

    def write_now(self, data: str) -> bool:
        self.frames.append(json.loads(data))
        return True


def _writing_fleet(n: int) -> tuple[list[tuple[Connection, RecordingSocket]], Writer]:
    fleet = _fleet(n)
    for conn, _ in fleet:
        conn.socket = WritingSocket()
    return [(conn, conn.socket) for conn, _ in fleet], fleet[0][0]._writer  # type: ignore[misc]


async def test_one_event_is_written_at_once_only_where_nothing_waits_before_it() -> None:
    from secstream.connection import Counters

    (idle, idle_socket), (waiting, waiting_socket), (reading, reading_socket) = (
        _writing_fleet(3)[0]
    )
    writer = idle._writer
    waiting.send_control('{"type":"pong"}')  # queued for the writer's pass
    reading.request_replay(ReplayJob(next(iter(reading.subscriptions.values())), None, None,
                                     None), "1000-0")
    counters = Counters()
    entry = _entry(1)
    written = writer.write_at_once(entry, [idle, waiting, reading], "1000-0", counters)
    assert written == 1 and counters.delivered == 1
    assert [_seq(f["id"]) for f in idle_socket.frames] == [1]  # on this turn, no pass
    assert waiting_socket.frames == [] and reading_socket.frames == []
    await _drain(waiting)
    # Behind the frame that waited, in order; the reading one finds it in the log.
    assert [f["type"] for f in waiting_socket.frames] == ["pong", "event"]
    assert reading.missed == 1 and reading_socket.frames == []
    assert idle.sent == waiting.sent == 1


async def test_writing_at_once_hands_the_rest_to_the_pass_after_its_time_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import secstream.connection as connection
    from secstream.connection import Counters

    monkeypatch.setattr(connection, "WRITER_SLICE_SECONDS", 0.0)  # every check is late
    fleet, writer = _writing_fleet(600)
    written = writer.write_at_once(_entry(1), [c for c, _ in fleet], "1000-0", Counters())
    assert written == connection._CLOCK_EVERY  # the first look at the clock
    assert sum(len(s.frames) for _, s in fleet) == written
    await _drain(fleet[0][0])
    assert all([_seq(f["id"]) for f in s.frames] == [1] for _, s in fleet)


async def test_writing_at_once_times_an_event_once_per_sixteen_frames_or_fewer() -> None:
    from secstream.connection import Counters

    timed: list[float] = []
    counters = Counters(timed.append)
    fleet, writer = _writing_fleet(40)
    conns = [c for c, _ in fleet]
    writer.write_at_once(_entry(1), conns[:10], "1000-0", counters)
    assert timed == []  # 10 frames: no sixteenth yet
    writer.write_at_once(_entry(2), conns, "1000-1", counters)
    assert len(timed) == 1 and counters.delivered == 50  # past 16, 32 and 48: timed once
    writer.write_at_once(_entry(3), conns, "1000-2", counters)
    assert len(timed) == 2


async def test_sockets_behind_by_the_same_events_share_one_batch_text() -> None:
    class RawSocket(RecordingSocket):
        def __init__(self) -> None:
            super().__init__()
            self.texts: list[str] = []

        def write_now(self, data: str) -> bool:
            self.texts.append(data)
            return True

    fleet = _fleet(3)
    sockets = []
    for conn, _ in fleet:
        conn.socket = socket = RawSocket()
        sockets.append(socket)
    a, b, c = (conn for conn, _ in fleet)
    one, two, other = _entry(1), _entry(2), _entry(3)
    for conn in (a, b):
        conn.deliver(one, "1000-0")
        conn.deliver(two, "1000-1")
    c.deliver(one, "1000-0")
    c.deliver(other, "1000-2")
    await _drain(a)
    (ta,), (tb,), (tc,) = (s.texts for s in sockets)
    assert ta is tb  # joined once for both
    assert [_seq(e["id"]) for e in json.loads(ta)["events"]] == [1, 2]
    assert [_seq(e["id"]) for e in json.loads(tc)["events"]] == [1, 3]  # its own


async def test_a_socket_failing_a_write_at_once_ends_its_connection_only() -> None:
    from secstream.connection import Counters

    class FailingSocket(WritingSocket):
        def write_now(self, data: str) -> bool:
            raise ConnectionResetError("gone")

    fleet, writer = _writing_fleet(3)
    broken = fleet[1][0]
    broken.socket = FailingSocket()
    written = writer.write_at_once(_entry(1), [c for c, _ in fleet], "1000-0", Counters())
    assert written == 2
    assert broken.ended and not fleet[0][0].ended and not fleet[2][0].ended
    assert [len(s.frames) for _, s in (fleet[0], fleet[2])] == [1, 1]


async def test_a_long_pass_gives_the_event_loop_turns_and_stays_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import secstream.connection as connection

    monkeypatch.setattr(connection, "WRITER_SLICE_SECONDS", 0.0)  # a turn at every look
    fleet, writer = _writing_fleet(200)
    entry = _entry(1)
    for conn, _ in fleet:
        conn.deliver(entry, "1000-0")  # queued: the pass runs on the next turn
    seen: list[tuple[int, float]] = []
    asyncio.get_running_loop().call_soon(
        lambda: seen.append((sum(len(s.frames) for _, s in fleet), writer._last_pass))
    )
    await _drain(fleet[0][0])
    assert seen[0][0] == connection._CLOCK_EVERY - 1  # the loop ran between slices
    assert all(len(s.frames) == 1 for _, s in fleet)
    assert writer._last_pass == seen[0][1]  # resumed slices are the same pass


async def test_while_busy_a_socket_already_sent_to_in_a_pass_waits_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import secstream.connection as connection

    monkeypatch.setattr(connection, "WRITER_SLICE_SECONDS", 0.0)  # a turn at every look
    fleet, writer = _writing_fleet(200)
    writer._busy = True  # as past BUSY_DELIVERIES_PER_SECOND
    writer._window_start = time.monotonic()
    writer._last_pass = time.monotonic() - 1  # no pass lately: the first runs at once
    for conn, _ in fleet:
        conn.deliver(_entry(1), "1000-0")
    # Between the pass's first and second slices, event 2 arrives for everyone.
    asyncio.get_running_loop().call_soon(
        lambda: [conn.deliver(_entry(2), "1000-1") for conn, _ in fleet]
    )
    for _ in range(10):
        await asyncio.sleep(0)  # the pass's slices run; its period has not passed
    first, last = fleet[0][1], fleet[-1][1]
    assert [[_seq(e["id"]) for e in _events([f])] for f in first.frames] == [[1]]
    assert [[_seq(e["id"]) for e in _events([f])] for f in last.frames] == [[1, 2]]
    for conn, _ in fleet:
        conn.deliver(_entry(3), "1000-2")
    await asyncio.sleep(BUSY_LINGER_SECONDS * 3)
    # One frame more for the socket sent to early, not two: 2 waited for the next pass.
    assert [[_seq(e["id"]) for e in _events([f])] for f in first.frames] == [[1], [2, 3]]
    assert [[_seq(e["id"]) for e in _events([f])] for f in last.frames] == [[1, 2], [3]]
