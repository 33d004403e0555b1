"""Traces end to end (contract section 8), checked by a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from live import JWT_SECRET, hs256
from otlp_receiver import OtlpReceiver
from support import ServeProcess

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def token(sub: str, roles: list[str]) -> str:
    return hs256({"sub": sub, "roles": roles, "exp": time.time() + 3600})


ADMIN = token("root", ["admin"])


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def otel_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "SECSTREAM_JWT_SECRET": JWT_SECRET,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "secstream-test",
        **extra,
    }


async def subscriber(url: str, sub: str, **subscribe: Any) -> ClientConnection:
    ws = await connect(url, subprotocols=["secstream.v1", f"bearer.{token(sub, ['admin'])}"])  # type: ignore[list-item]
    assert json.loads(await ws.recv())["type"] == "welcome"
    frame = {"type": "subscribe", "id": "s", "event_types": ["system.status"], **subscribe}
    await ws.send(json.dumps(frame))
    while json.loads(await ws.recv())["type"] != "replayed":
        pass
    return ws


async def next_event(ws: ClientConnection) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == "event":
            return frame
        if frame["type"] == "batch":
            return frame["events"][0]  # type: ignore[no-any-return]


def test_one_trace_from_publish_to_delivery_on_every_node(
    redis_url: str, serve: Callable[..., ServeProcess], receiver: OtlpReceiver
) -> None:
    a = serve(redis_url, env=otel_env(receiver))
    b = serve(redis_url, env=otel_env(receiver))

    async def scenario() -> list[dict[str, Any]]:
        clients = [await subscriber(a.ws_url, f"a{i}") for i in range(3)]
        clients.append(await subscriber(b.ws_url, "b0"))
        async with httpx.AsyncClient(base_url=a.base_url) as http:
            response = await http.post(
                "/api/v1/events",
                json={"event_type": "system.status", "data": {"ok": True}},
                headers={
                    "Authorization": f"Bearer {ADMIN}",
                    "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                },
            )
            assert response.status_code == 202
        events = [await next_event(ws) for ws in clients]
        for ws in clients:
            await ws.close()
        return events

    events = asyncio.run(scenario())
    traceparents = {e["traceparent"] for e in events}
    assert len(traceparents) == 1, traceparents
    version, trace_id, publish_span_id, flags = traceparents.pop().split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")

    (publish,) = receiver.wait_for("secstream.publish", 1, trace_id=TRACE_ID)
    assert publish.parent_span_id == PARENT_ID and publish.span_id == publish_span_id
    assert publish.service == "secstream-test"
    delivers = receiver.wait_for("secstream.deliver", 2, trace_id=TRACE_ID)
    time.sleep(0.5)
    delivers = receiver.named("secstream.deliver", TRACE_ID)
    assert len(delivers) == 2, delivers  # one per process, not one per socket
    assert all(d.parent_span_id == publish_span_id for d in delivers)
    by_node = {d.instance: d.attributes["secstream.recipients"] for d in delivers}
    assert sorted(by_node.values()) == [1, 3] and len(by_node) == 2

    sessions = receiver.wait_for("secstream.session", 4)
    assert {s.attributes["enduser.id"] for s in sessions} >= {"a0", "a1", "a2", "b0"}
    every_value = json.dumps([s.attributes for s in receiver.spans], default=str)
    assert ADMIN.split(".")[2] not in every_value and JWT_SECRET not in every_value
    assert '"ok"' not in every_value  # event data never goes into attributes


def test_replay_span_is_a_child_of_the_session(
    redis_url: str, serve: Callable[..., ServeProcess], receiver: OtlpReceiver
) -> None:
    a = serve(redis_url, env=otel_env(receiver))

    async def scenario() -> None:
        ws = await subscriber(a.ws_url, "r0", since="0")
        await ws.close()

    asyncio.run(scenario())
    (session,) = receiver.wait_for("secstream.session", 1)
    (replay,) = receiver.wait_for("secstream.replay", 1)
    assert replay.trace_id == session.trace_id and replay.parent_span_id == session.span_id
    assert session.parent_span_id == "" and session.attributes["secstream.close_code"] == 1000


def test_sampler_from_otel_traces_sampler(
    redis_url: str, serve: Callable[..., ServeProcess], receiver: OtlpReceiver
) -> None:
    env = otel_env(
        receiver, OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0"
    )
    a = serve(redis_url, env=env)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    body = {"event_type": "system.status", "data": {}}
    with httpx.Client(base_url=a.base_url, headers=headers) as http:
        for _ in range(20):
            assert http.post("/api/v1/events", json=body).status_code == 202
        sampled = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        assert http.post("/api/v1/events", json=body, headers=sampled).status_code == 202
    receiver.wait_for("secstream.publish", 1)
    time.sleep(0.6)
    # Ratio 0 drops the roots; a sampled parent's child is kept (parent-based).
    assert [s.trace_id for s in receiver.named("secstream.publish")] == [TRACE_ID]


def test_publisher_continues_the_callers_span(
    redis_url: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from secstream import Publisher

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)

        async def main():
            async with Publisher({redis_url!r}, key_prefix="tp") as pub:
                with trace.get_tracer("caller").start_as_current_span("caller") as span:
                    offset = await pub.publish("system.status", {{}})
                    ctx = span.get_span_context()
                    print(offset, format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
                entries = await pub.log.redis.xrange("tp:log", offset, offset)
                print(entries[0][1][b"tp"].decode())

        asyncio.run(main())
        provider.shutdown()
        """
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout.split()
    _, caller_trace, caller_span, stored = out
    (publish,) = receiver.wait_for("secstream.publish", 1, trace_id=caller_trace)
    assert publish.parent_span_id == caller_span
    version, trace_id, span_id, flags = stored.split("-")
    assert (version, trace_id, span_id) == ("00", caller_trace, publish.span_id)
    assert int(flags, 16) & 1  # sampled (0x02, W3C level 2's "random", may be set too)
