"""API descriptions from the code (section 9): fresh copies, valid documents, real frames."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from live import LiveApp
from secstream import protocol
from secstream.apidoc import SERVER_FRAMES, asyncapi, openapi, render, typed_events
from secstream.cli import main
from secstream.eventdata import EVENT_DATA
from secstream.events import EVENT_TYPES
from secstream.httpbodies import EventPage

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "api"
REGENERATE = "regenerate: secstream schema > docs/api/asyncapi.json; " \
    "secstream schema --openapi > docs/api/openapi.json"


@pytest.mark.parametrize(
    ("name", "flags"), [("asyncapi.json", []), ("openapi.json", ["--openapi"])]
)
def test_checked_in_copies_are_what_the_cli_prints(
    name: str, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["schema", *flags])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert (DOCS / name).read_text() == printed, f"docs/api/{name} is stale; {REGENERATE}"


def test_a_changed_struct_makes_the_copy_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The freshness check can fail: a field added to a frame changes the document."""
    before = render(asyncapi())
    changed = msgspec.defstruct(
        "Acked", [("offset", str), ("extra", int)], bases=(protocol.Message,), tag="acked"
    )
    frames = tuple(changed if c is protocol.Acked else c for c in SERVER_FRAMES)
    monkeypatch.setattr("secstream.apidoc.SERVER_FRAMES", frames)
    assert render(asyncapi()) != before


def test_openapi_document_is_valid_and_has_section_5() -> None:
    document = openapi()
    validate(document)
    paths = document["paths"]
    assert set(paths["/api/v1/events"]) == {"get", "post"}
    cancel = paths["/api/v1/tests/{test_id}/cancel"]["post"]
    assert set(cancel["responses"]) >= {"202", "403", "404", "409"}
    for path in ("/api/v1/events/batch", "/api/v1/connections", "/health/live",
                 "/health/ready", "/metrics", "/api/v1/dev/token", "/api/v1/dev/simulate"):
        assert path in paths, path


def test_openapi_validator_refuses_a_broken_document() -> None:
    document = openapi()
    document["paths"]["/health/live"]["get"]["responses"]["200"] = {"content": {}}
    with pytest.raises(Exception, match="description"):
        validate(document)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_document_is_structurally_sound() -> None:
    document = asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    for ref in _refs(document):
        _resolve(document, ref)  # every reference points at something
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        assert schema["title"] == name
    channel = document["channels"]["ws"]
    assert channel["address"] == "/ws"
    for op in document["operations"].values():
        assert op["action"] in {"send", "receive"}
        assert op["channel"] == {"$ref": "#/channels/ws"}
        for message in op["messages"]:
            assert message["$ref"].startswith("#/channels/ws/messages/")
    # every frame of section 4, by its tag, both ways
    def tags(op: str) -> set[str]:
        names = [m["$ref"].rsplit("/", 1)[1] for m in document["operations"][op]["messages"]]
        return {schemas[n]["properties"]["type"]["enum"][0] for n in names}

    assert tags("receiveClientFrames") == {
        "subscribe", "unsubscribe", "ack", "pong", "ping", "refresh"
    }
    assert tags("sendServerFrames") == {
        "welcome", "event", "batch", "subscribed", "replayed", "unsubscribed", "acked",
        "refreshed", "pong", "connection.info", "ping", "token.expiring", "error",
    }
    assert "latest" in schemas["Subscribe"]["properties"]
    assert schemas["ConnectionInfo"]["properties"]["state"]["enum"] == ["catching_up", "live"]
    typed = {schemas[m.__name__]["properties"]["event_type"]["enum"][0] for m in typed_events()}
    assert typed == set(EVENT_TYPES)
    assert schemas["TestProgressEvent"]["properties"]["data"] == {
        "$ref": "#/components/schemas/TestProgressData"
    }
    assert schemas["TestProgressData"]["required"] == ["test_id"]


def test_every_event_type_has_its_data_entry() -> None:
    assert list(EVENT_DATA) == list(EVENT_TYPES)


def _fields_known(cls: type[msgspec.Struct], raw: dict[str, Any]) -> None:
    """Every member the server sent is a field of the struct that describes it."""
    unknown = set(raw) - {"type", *cls.__struct_fields__}
    assert not unknown, (cls.__name__, unknown, raw)


@pytest.mark.anyio
async def test_real_frames_decode_with_the_described_types(live_app: LiveAppFactory) -> None:
    """A demo run, watched over a socket and polled: every frame is one the document names."""
    server = msgspec.json.Decoder(protocol.ServerMessage)
    by_tag = {c.__struct_config__.tag: c for c in SERVER_FRAMES}
    data_types = {t: c for t, c in EVENT_DATA.items() if c is not None}
    seen: set[str] = set()
    with anyio.fail_after(40):
        async with live_app(demo=True, heartbeat_interval=0.5) as app:
            token = app.token("ana", ["admin"])
            async with app.ws(token) as ws, app.http(token) as http:
                welcome = ws.welcome
                _fields_known(protocol.Welcome, welcome)
                assert isinstance(server.decode(json.dumps(welcome)), protocol.Welcome)
                start = (await http.get("/api/v1/events")).json()["next"]
                await ws.send({"type": "subscribe", "id": 1, "event_types": ["*"], "since": "0"})
                await ws.send({"type": "ping", "id": "p"})
                started = await http.post("/api/v1/dev/simulate")
                assert started.status_code == 202
                test_id = started.json()["test_id"]
                cancelled = False
                while "test.cancelled" not in seen:
                    text = await ws.conn.recv()
                    frame = json.loads(text)
                    decoded = server.decode(text)
                    assert type(decoded) is by_tag[frame["type"]]
                    _fields_known(by_tag[frame["type"]], frame)
                    envelopes = frame["events"] if frame["type"] == "batch" else (
                        [frame] if frame["type"] == "event" else []
                    )
                    for event in envelopes:
                        _fields_known(protocol.Event, event)
                        kind = event["event_type"]
                        seen.add(kind)
                        if kind in data_types:
                            msgspec.convert(event["data"], data_types[kind])
                        if kind == "test.progress" and not cancelled:
                            cancelled = True
                            response = await http.post(
                                f"/api/v1/tests/{test_id}/cancel", json={"reason": "enough"}
                            )
                            assert response.status_code == 202
                            assert re.fullmatch(r"\d+-\d+", response.json()["request_id"])
                    seen.add(frame["type"])
                page = await http.get("/api/v1/events", params={"since": start, "test_id": test_id})
                decoded_page = msgspec.json.decode(page.content, type=EventPage)
                assert decoded_page.events[0].event_type == "test.started"
    assert {"subscribed", "replayed", "pong", "test.started", "test.progress"} <= seen
