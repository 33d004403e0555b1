from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from opentelemetry import trace

from secstream.telemetry import Telemetry

METRIC_NAMES = (
    "secstream_connections_active",
    "secstream_events_published_total",
    "secstream_messages_delivered_total",
    "secstream_rate_limited_total",
    "secstream_auth_failures_total",
    "secstream_slow_consumers_total",
    "secstream_events_replayed_total",
    "secstream_redis_errors_total",
)


class Counts:
    def __init__(self) -> None:
        self.connections = 0
        self.delivered = 0


@pytest.fixture
def counts() -> Counts:
    return Counts()


@pytest.fixture
def telemetry(counts: Counts) -> Iterator[Telemetry]:
    t = Telemetry(
        connections_active=lambda: counts.connections,
        messages_delivered=lambda: counts.delivered,
        exporter=None,
    )
    yield t
    t.shutdown()


def scrape(t: Telemetry) -> str:
    body, content_type = t.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return body.decode()


def value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{sample} not in output"
    return float(match.group(1))


def types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def test_every_metric_is_named_from_the_start(telemetry: Telemetry) -> None:
    text = scrape(telemetry)
    declared = types(text)
    for name in METRIC_NAMES:
        assert name in declared
        assert re.search(rf"^{name}(\{{[^}}]*\}})? 0\.0$", text, re.MULTILINE), name
    assert declared["secstream_connections_active"] == "gauge"
    assert declared["secstream_messages_delivered_total"] == "counter"
    assert declared["secstream_events_published_total"] == "counter"
    assert declared["secstream_delivery_latency_seconds"] == "histogram"
    assert value(text, "secstream_delivery_latency_seconds_count") == 0
    assert value(text, 'secstream_delivery_latency_seconds_bucket{le="+Inf"}') == 0
    assert value(text, 'secstream_rate_limited_total{kind="publish"}') == 0
    assert value(text, 'secstream_auth_failures_total{reason="invalid_token"}') == 0
    # no unit or suffix doubled, no scope labels
    assert "_total_total" not in text and "seconds_seconds" not in text
    assert "otel_scope" not in text and "target_info" not in text


def test_values_move(telemetry: Telemetry, counts: Counts) -> None:
    counts.connections, counts.delivered = 3, 41
    telemetry.events_published.add(2)
    telemetry.rate_limited.add(1, {"kind": "handshake"})
    telemetry.auth_failures.add(1, {"reason": "forbidden"})
    telemetry.slow_consumers.add(1)
    telemetry.connection_duration.record(42)
    telemetry.replayed.add(5)
    telemetry.redis_errors.add(1)
    telemetry.delivery_latency.record(0.0004)
    telemetry.delivery_latency.record(0.03)
    telemetry.delivery_latency.record(20)

    text = scrape(telemetry)
    assert value(text, "secstream_connections_active") == 3
    assert value(text, "secstream_messages_delivered_total") == 41
    assert value(text, "secstream_events_published_total") == 2
    assert value(text, 'secstream_rate_limited_total{kind="handshake"}') == 1
    assert value(text, 'secstream_rate_limited_total{kind="client_frames"}') == 0
    assert value(text, 'secstream_auth_failures_total{reason="forbidden"}') == 1
    assert value(text, "secstream_slow_consumers_total") == 1
    assert value(text, 'secstream_connection_duration_seconds_bucket{le="60.0"}') == 1
    assert value(text, 'secstream_connection_duration_seconds_bucket{le="10.0"}') == 0
    assert value(text, "secstream_events_replayed_total") == 5
    assert value(text, "secstream_redis_errors_total") == 1
    assert value(text, 'secstream_delivery_latency_seconds_bucket{le="0.0005"}') == 1
    assert value(text, 'secstream_delivery_latency_seconds_bucket{le="0.05"}') == 2
    assert value(text, 'secstream_delivery_latency_seconds_bucket{le="10.0"}') == 2
    assert value(text, 'secstream_delivery_latency_seconds_bucket{le="+Inf"}') == 3
    assert value(text, "secstream_delivery_latency_seconds_count") == 3
    assert value(text, "secstream_delivery_latency_seconds_sum") == pytest.approx(20.0304)
    assert text.count("# TYPE secstream_delivery_latency_seconds histogram") == 1

    counts.connections = 1
    assert value(scrape(telemetry), "secstream_connections_active") == 1


def test_instances_are_independent(telemetry: Telemetry) -> None:
    other = Telemetry(connections_active=lambda: 9, messages_delivered=lambda: 0)
    try:
        other.events_published.add(7)
        telemetry.events_published.add(1)
        assert value(scrape(other), "secstream_events_published_total") == 7
        assert value(scrape(other), "secstream_connections_active") == 9
        assert value(scrape(telemetry), "secstream_events_published_total") == 1
        assert value(scrape(telemetry), "secstream_connections_active") == 0
    finally:
        other.shutdown()
    assert value(scrape(telemetry), "secstream_events_published_total") == 1


def test_span_is_current_and_records_errors(telemetry: Telemetry) -> None:
    with telemetry.span("publish", event_type="test.progress", count=2) as span:
        assert trace.get_current_span() is span
        assert span.is_recording()
    with pytest.raises(KeyError), telemetry.span("replay") as failing:
        raise KeyError("x")
    assert not failing.is_recording()
    assert trace.get_current_span() is not span


def test_console_tracing_from_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    t = Telemetry(connections_active=lambda: 0, messages_delivered=lambda: 0)
    try:
        with t.span("secstream.check", outcome="ok"):
            pass
    finally:
        t.shutdown()
    assert '"name": "secstream.check"' in capsys.readouterr().out


def test_trace_choice_follows_the_otel_variables() -> None:
    from secstream.errors import ConfigError
    from secstream.telemetry import trace_choice

    assert trace_choice({}) == ("none", "http/protobuf")
    assert trace_choice({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})[0] == "otlp"
    assert trace_choice({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})[0] == (
        "otlp"
    )
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert trace_choice(env) == ("otlp", "grpc")
    assert trace_choice({"OTEL_TRACES_EXPORTER": "console"})[0] == "console"
    assert trace_choice({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"})[
        0
    ] == "none"
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        trace_choice({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        trace_choice({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})


def test_spans_reach_a_real_grpc_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    from otlp_receiver import GrpcOtlpReceiver

    with GrpcOtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        t = Telemetry(connections_active=lambda: 0, messages_delivered=lambda: 0, node="n1")
        try:
            assert t.exporting
            with t.publish_span(None, events=1, event_type="system.status") as traceparent:
                assert traceparent is not None
            t.deliver("1-0", "system.status", traceparent, 7)
        finally:
            t.shutdown()  # flushes the batch
        (deliver,) = receiver.wait_for("secstream.deliver", 1)
        (publish,) = receiver.named("secstream.publish")
        assert deliver.parent_span_id == publish.span_id == traceparent.split("-")[2]
        assert deliver.attributes["secstream.recipients"] == 7
        assert publish.service == "secstream" and publish.instance == "n1"
