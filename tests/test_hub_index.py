"""The hub's index: a connection is found under an (event type, test id) key while any
of its current subscriptions has that key, through subscribe, unsubscribe and a
refreshed token that changes what it may receive."""

from __future__ import annotations

import json
from typing import Any

import pytest

from secstream.auth import Principal
from secstream.connection import Connection, Subscription
from secstream.entries import StreamEntry
from secstream.events import expand, receivable
from secstream.hub import Hub

pytestmark = pytest.mark.anyio


class _Socket:
    def write_now(self, data: str) -> bool:
        return True

    async def send_text(self, data: str) -> None:
        pass

    async def receive(self) -> str | bytes | None:
        return None

    async def close(self, code: int, reason: str = "") -> None:
        pass


def _principal(roles: list[str]) -> Principal:
    return Principal("u-1", frozenset(roles), frozenset(), 2e9, receivable(roles))


def _entry(event_type: str, test_id: str | None) -> StreamEntry:
    frame = json.dumps({"type": "event", "id": "1000-1", "event_type": event_type,
                        "data": {"test_id": test_id}})
    return StreamEntry("1000-1", event_type, "normal", test_id, None, None, frame)


def _hub() -> Hub:
    log: Any = None  # the index needs no log: nothing here reads it
    return Hub(log, heartbeat_interval=30, heartbeat_timeout=10, token_expiry_warning=60,
               max_connections=10, max_queue_bytes=1 << 20)


def _sub(conn: Connection, patterns: list[str], test_id: str | None = None) -> Subscription:
    types = frozenset(expand(patterns, conn.principal.receivable))
    return Subscription(conn.new_subscription_id(), patterns, types, test_id, (0, 0))


async def test_a_key_stays_indexed_while_any_subscription_has_it() -> None:
    hub = _hub()
    conn = Connection(_Socket(), _principal(["viewer"]), connection_id="c-1", client_id=None,
                      max_queue_bytes=1 << 20)
    hub.add(conn)
    every_test = _sub(conn, ["test.*"])
    one_test = _sub(conn, ["test.progress"], test_id="t-1")
    also_every = _sub(conn, ["test.progress"])
    for sub in (every_test, one_test, also_every):
        hub.subscribe(conn, sub)
    progress_t1, progress_t2 = _entry("test.progress", "t-1"), _entry("test.progress", "t-2")
    started = _entry("test.started", "t-2")
    assert conn in hub._targets(progress_t1) and conn in hub._targets(started)

    hub.unsubscribe(conn, every_test)  # test.progress is still had by also_every
    assert conn in hub._targets(progress_t2) and conn not in hub._targets(started)
    hub.unsubscribe(conn, also_every)  # only t-1's progress is left
    assert conn in hub._targets(progress_t1) and conn not in hub._targets(progress_t2)
    hub.unsubscribe(conn, one_test)
    assert hub._index == {}


async def test_a_refreshed_token_reindexes_every_subscription() -> None:
    hub = _hub()
    conn = Connection(_Socket(), _principal(["admin"]), connection_id="c-1", client_id=None,
                      max_queue_bytes=1 << 20)
    hub.add(conn)
    hub.subscribe(conn, _sub(conn, ["*"]))
    hub.subscribe(conn, _sub(conn, ["system.*"]))
    alert = _entry("system.alert", None)
    assert conn in hub._targets(alert)
    hub.replace_principal(conn, _principal([]))  # no role: receives no type at all
    assert conn not in hub._targets(alert) and hub._index == {}
    hub.replace_principal(conn, _principal(["admin"]))
    assert conn in hub._targets(alert)
    hub.remove(conn)
    assert hub._index == {}
