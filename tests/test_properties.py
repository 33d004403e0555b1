"""Property tests against one ``secstream serve``: arbitrary client frames and publish bodies."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
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
             "SECSTREAM_HEARTBEAT_INTERVAL": "600", "SECSTREAM_HANDSHAKE_RATE": "100000"},
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
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**200), 2**200) | st.sampled_from([2**63, -(2**63) - 1, 2**64, 1e308]),
    _nested,
    max_leaves=12,
)
HUGE_NUMBERS = st.sampled_from(
    ["1e400", "-1e400", "1E-400", "99999999999999999999999999", "-0", "1e308", "123456789e300"]
)
"""Number texts that ``json.dumps`` never writes: out of every range."""
odd_ids = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=70
) | st.sampled_from(["ab\n", "ab\r\n", "a b", "\x00", "é", "a" * 65, "-", "_" * 64, "0\n"])


def _deep_text(depth: int, inner: str = "1") -> str:
    opens, closes = zip(*(("[", "]") if i % 2 else ('{"k":', "}") for i in range(depth)),
                        strict=True) if depth else ((), ())
    return "".join(opens) + inner + "".join(reversed(closes))


deep_values = st.tuples(
    st.integers(0, 40) | st.integers(0, 12_000), HUGE_NUMBERS | st.just("1")
).map(lambda t: _deep_text(*t))
"""Nesting from none to 12,000 levels (the limit is 32; about 48 KB: under 64 KiB), around a
number or a huge one."""
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
def _frame_around(value: str, kind: str, ref: str) -> str:
    """A typed frame whose field ``kind`` is the raw JSON text ``value``."""
    head = f'{{"type": "subscribe", "id": {json.dumps(ref)}, "event_types": ["*"]'
    return f'{head}, "{kind}": {value}}}'


raw_frames = st.builds(
    _frame_around,
    deep_values | HUGE_NUMBERS,
    st.sampled_from(["since", "test_id", "extra", "event_types", "id"]),
    odd_ids,
)
frames = (
    typed_frames.map(json.dumps)
    | json_values.map(json.dumps)
    | raw_frames
    | deep_values
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
    except (ValueError, UnicodeDecodeError, RecursionError):
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


def test_a_frame_over_64_kib_closes_1009(node: ServeProcess) -> None:
    with _open(node, "big") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        ws.send(json.dumps({"type": "ping", "id": "big", "pad": "x" * 70000}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def _body_around(value: str, field: str) -> str:
    if field == "data":
        return f'{{"event_type": "system.status", "data": {{"x": {value}}}}}'
    return f'{{"event_type": "system.status", "data": {{}}, "{field}": {value}}}'


raw_bodies = st.builds(
    _body_around,
    deep_values | HUGE_NUMBERS,
    st.sampled_from(["data", "ttl", "priority", "audience", "user_id"]),
)
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
@given(body=bodies.map(json.dumps) | raw_bodies)
def test_any_publish_body_gets_202_or_a_json_4xx(node: ServeProcess, body: Any) -> None:
    response = httpx.post(
        f"{node.base_url}/api/v1/events",
        content=body if isinstance(body, str) else json.dumps(body),
        headers={**publisher_headers(), "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code in (202, 400, 413, 422), (body, response.status_code, response.text)
    payload = response.json()
    if response.status_code == 202:
        assert isinstance(payload["id"], str)
    else:
        assert isinstance(payload["message"], str), payload


poll_values = odd_ids | HUGE_NUMBERS | st.integers(-(2**70), 2**70).map(str) | st.sampled_from(
    ["0", "1-0", "5\n", "nan", "inf", "-inf", "1e3", "0x10", "\uff11", "\u0661-0",
     "18446744073709551616-0"]
)


@PROFILE
@given(
    params=st.dictionaries(
        st.sampled_from(["since", "limit", "wait", "types", "test_id"]), poll_values, max_size=4
    )
)
def test_any_poll_query_gets_200_or_a_400_naming_the_field(
    node: ServeProcess, params: dict[str, str]
) -> None:
    params = {k: v if k != "wait" or not _is_number(v) else "0" for k, v in params.items()}
    response = httpx.get(
        f"{node.base_url}/api/v1/events", params=params,
        headers={"Authorization": f"Bearer {token('poller')}"}, timeout=10,
    )
    assert response.status_code in (200, 400), (params, response.status_code, response.text)
    if response.status_code == 400:
        assert response.json()["field"] in params, (params, response.text)


def _is_number(value: str) -> bool:
    """A wait that parses would make the poll wait: the examples keep it at 0."""
    try:
        float(value)
    except ValueError:
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_id=odd_ids)
def test_any_client_id_gets_a_welcome_or_400(node: ServeProcess, client_id: str) -> None:
    valid = re.fullmatch(r"[A-Za-z0-9_-]{1,64}", client_id) is not None
    url = f"{node.ws_url}?client_id={quote(client_id, safe='')}"
    try:
        with connect(url, subprotocols=["secstream.v1", f"bearer.{token('ids')}"],  # type: ignore[list-item]
                     open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
            assert valid, client_id
    except InvalidStatus as exc:
        assert exc.response.status_code == 400 and not valid, (client_id, exc.response)
