"""Property tests against one ``secstream serve``: arbitrary client frames and publish bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from secstream.redis_server import RedisServer
from streamclient import ENV, publisher_headers, token
from support import ServeProcess, free_port

pytestmark = pytest.mark.slow

TYPES = ["subscribe", "unsubscribe", "ack", "pong", "ping", "refresh"]
EVENT_TYPES = [
    "test.started", "test.progress", "test.completed", "test.error", "test.cancelled",
    "system.alert", "system.status", "system.maintenance", "user.notification", "connection.info",
]
SERVER_TYPES = {
    "subscribed", "unsubscribed", "acked", "refreshed", "pong", "error", "replayed",
    "event", "batch", "ping", "token.expiring",
}
ASYNCHRONOUS = {"event", "batch", "replayed", "ping", "token.expiring"}
"""Frames not sent in reply to the frame at hand: a subscription's events and its
``replayed`` (from the replay task) may land after the sentinel of an earlier example."""
ERROR_CODES = {"bad_request", "forbidden", "rate_limited", "invalid_token", "not_found",
               "no_client_id"}
PROFILE = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    workdir = tmp_path_factory.mktemp("props")
    redis = RedisServer(workdir / "redis", port=free_port(), appendonly=False)
    redis.start()
    process = ServeProcess(
        workdir,
        redis.url,
        env={**ENV, "SECSTREAM_CLIENT_RATE": "100000", "SECSTREAM_CLIENT_BURST": "100000",
             "SECSTREAM_PUBLISH_RATE": "100000", "SECSTREAM_PUBLISH_BURST": "100000",
             "SECSTREAM_HEARTBEAT_INTERVAL": "600"},
    )
    try:
        yield process.start()
    finally:
        process.close()
        redis.stop()


def _open(node: ServeProcess, sub: str) -> ClientConnection:
    return connect(
        node.ws_url, subprotocols=["secstream.v1", f"bearer.{token(sub)}"],  # type: ignore[list-item]
        max_size=None, open_timeout=5,
    )


@pytest.fixture(scope="module")
def fuzzed(node: ServeProcess) -> Iterator[ClientConnection]:
    with _open(node, "fuzz") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        yield ws


@pytest.fixture(scope="module")
def bystander(node: ServeProcess) -> Iterator[ClientConnection]:
    with _open(node, "bystander") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        ws.send(json.dumps({"type": "subscribe", "event_types": ["system.status"], "id": "b"}))
        kinds = {json.loads(ws.recv(timeout=5))["type"] for _ in range(2)}
        assert kinds == {"subscribed", "replayed"}
        yield ws


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and objects of ``inner``. A named function: Hypothesis checks that ``extend``
    uses its argument by reading its source, which is unreliable for a multi-line lambda."""
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    _nested,
    max_leaves=12,
)
field_values = json_values | st.sampled_from(["*", "test.*", "0", "1-0", "s1", "", "x" * 300])
typed_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={
        "id": st.text(max_size=6) | st.integers(-(2**70), 2**70) | json_values,
        "event_types": st.lists(st.sampled_from([*EVENT_TYPES, "*", "bogus", "test.*"]))
        | field_values,
        "since": field_values, "offset": field_values, "subscription": field_values,
        "token": field_values, "test_id": field_values, "extra": field_values,
    },
)
frames = (
    typed_frames.map(json.dumps)
    | json_values.map(json.dumps)
    | st.binary(max_size=64)
    | st.text(max_size=64)
)


def _exchange(ws: ClientConnection, frame: str | bytes, n: int) -> list[dict[str, Any]]:
    """Send ``frame`` then a sentinel ping; every frame the server sent until the sentinel's
    pong."""
    ws.send(frame)
    sentinel = f"sentinel-{n}"
    ws.send(json.dumps({"type": "ping", "id": sentinel}))
    got = []
    while True:
        reply = json.loads(ws.recv(timeout=5))
        if reply == {"type": "pong", "ref": sentinel}:
            return got
        got.append(reply)


counter = iter(range(10**9))


@PROFILE
@given(frame=frames)
def test_any_client_frame_gets_an_error_or_a_valid_reply(
    node: ServeProcess,
    fuzzed: ClientConnection,
    bystander: ClientConnection,
    frame: str | bytes,
) -> None:
    n = next(counter)
    replies = _exchange(fuzzed, frame, n)
    for reply in replies:
        assert reply["type"] in SERVER_TYPES, reply
        if reply["type"] == "error":
            assert reply["code"] in ERROR_CODES and isinstance(reply["message"], str), reply
    try:
        sent = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        sent = None
    ref = sent.get("id") if isinstance(sent, dict) else None
    if isinstance(ref, str | int) and not isinstance(ref, bool):
        direct = [r for r in replies if r.get("ref") == ref and r["type"] != "replayed"]
        # a well-formed pong is "never replied to" (contract section 4); a bad one gets its error
        expected = {0, 1} if sent.get("type") == "pong" else {1}
        assert len(direct) in expected, (frame, replies)
    elif not isinstance(sent, dict) or sent.get("type") not in TYPES:
        direct = [r for r in replies if r["type"] not in ASYNCHRONOUS]
        assert [r["type"] for r in direct] == ["error"], (frame, replies)
        assert direct[0]["code"] == "bad_request"
    # the bystander keeps receiving its events meanwhile
    if n % 10 == 0:
        response = httpx.post(
            f"{node.base_url}/api/v1/events",
            json={"event_type": "system.status", "data": {"n": n}},
            headers=publisher_headers(),
            timeout=5,
        )
        assert response.status_code == 202, response.text
        event = json.loads(bystander.recv(timeout=5))
        assert event["type"] == "event" and event["id"] == response.json()["id"], event


def test_a_frame_over_64_kib_is_a_bad_request(fuzzed: ClientConnection) -> None:
    frame = json.dumps({"type": "ping", "id": "big", "pad": "x" * 70000})
    replies = _exchange(fuzzed, frame, -1)
    assert [(r["type"], r["code"]) for r in replies] == [("error", "bad_request")]


bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"event_type": st.sampled_from([*EVENT_TYPES, "bogus", ""]) | json_values},
        optional={
            "data": json_values
            | st.fixed_dictionaries({}, optional={"test_id": json_values, "title": json_values}),
            "priority": st.sampled_from(["low", "normal", "high", "critical", "urgent"])
            | json_values,
            "audience": json_values,
            "ttl": json_values,
            "user_id": json_values,
            "correlation_id": json_values,
            "surprise": json_values,
        },
    ),
)


@PROFILE
@given(body=bodies)
def test_any_publish_body_gets_202_or_a_json_4xx(node: ServeProcess, body: Any) -> None:
    response = httpx.post(
        f"{node.base_url}/api/v1/events",
        content=json.dumps(body),
        headers={**publisher_headers(), "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code in (202, 400, 413, 422), (body, response.status_code, response.text)
    payload = response.json()
    if response.status_code == 202:
        assert isinstance(payload["id"], str)
    else:
        assert isinstance(payload["message"], str), payload
