"""Metrics and traces (the only opentelemetry.sdk import).

Each Telemetry owns its MeterProvider, TracerProvider and prometheus
CollectorRegistry, and sets no global provider, so several apps can live in
one process.

Traces are configured by the OpenTelemetry SDK's own variables (contract section 1):
``OTEL_SERVICE_NAME`` (default ``secstream``), ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``;
default ``otlp`` when an OTLP endpoint is set, else none), ``OTEL_EXPORTER_OTLP_*``
(endpoint, headers, ``http/protobuf`` or ``grpc``), ``OTEL_BSP_*``. The spans:

    secstream.publish   one per publish (HTTP or Publisher), a child of the request's
                        ``traceparent``; its own traceparent goes into the log with
                        the event, and into the envelope
    secstream.deliver   one per event per process that fans it out, in the publish's
                        trace, with ``secstream.recipients``
    secstream.session   one WebSocket connection, open to close
    secstream.replay    one replay or catch-up read, a child of its session

No token, secret or event ``data`` goes into an attribute.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Final

from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision, ParentBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric

from secstream.errors import ConfigError
from secstream.tracecontext import format_traceparent, parse_traceparent

logger = logging.getLogger(__name__)

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
DURATION_BUCKETS: Final = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0)
RATE_LIMIT_KINDS: Final = ("client_frames", "publish", "handshake")
AUTH_FAILURE_REASONS: Final = ("invalid_token", "forbidden")
OIDC_REFRESH_OUTCOMES: Final = ("ok", "failed")
"""The ``error_code`` of AuthError and Forbidden: pass ``{"reason": exc.error_code}``."""

_LATENCY_NAME: Final = "secstream_delivery_latency"
_LATENCY_HELP: Final = "Seconds from an event's append to its send on a socket"
_DURATION_NAME: Final = "secstream_connection_duration"
_DURATION_HELP: Final = "Seconds a WebSocket connection stayed open"
_EMPTY_HISTOGRAMS: Final = (
    (f"{_LATENCY_NAME}_seconds", _LATENCY_HELP, LATENCY_BUCKETS),
    (f"{_DURATION_NAME}_seconds", _DURATION_HELP, DURATION_BUCKETS),
)


_EXPORTERS: Final = ("otlp", "console", "none")
_PROTOCOLS: Final = ("http/protobuf", "grpc")


def trace_choice(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(exporter, protocol) as the ``OTEL_*`` variables ask; ConfigError naming a bad one."""
    env = os.environ if env is None else env
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not name:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        name = "otlp" if endpoint else "none"
    if name not in _EXPORTERS:
        raise ConfigError("OTEL_TRACES_EXPORTER", f"must be one of {', '.join(_EXPORTERS)}")
    key = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    if not env.get(key):
        key = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = (env.get(key) or "http/protobuf").strip()
    if protocol not in _PROTOCOLS:
        raise ConfigError(key, "must be http/protobuf or grpc")
    return name, protocol


def trace_exporter(env: Mapping[str, str] | None = None) -> SpanExporter | None:
    """The exporter the ``OTEL_*`` variables ask for, or None."""
    name, protocol = trace_choice(env)
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter(out=sys.stdout)  # its default is bound at import
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class Telemetry:
    def __init__(
        self,
        *,
        connections_active: Callable[[], int],
        messages_delivered: Callable[[], int],
        exporter: SpanExporter | bool | None = True,
        node: str | None = None,
        oidc_key_age: Callable[[], float | None] | None = None,
    ) -> None:
        """``exporter`` True: the one the ``OTEL_*`` variables ask for; None/False: none.
        ``node`` becomes the resource's ``service.instance.id``. ``oidc_key_age``: with
        an OpenID provider, seconds since its keys were fetched (None before)."""
        resource = Resource.create({"service.instance.id": node} if node else {})
        if not os.environ.get("OTEL_SERVICE_NAME") and str(
            resource.attributes.get(SERVICE_NAME, "")
        ).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "secstream"}))
        self._registry = CollectorRegistry(auto_describe=True)
        reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=self._registry
        )
        self._meter_provider = MeterProvider(
            metric_readers=[reader], resource=resource, shutdown_on_exit=False
        )
        # The sampler comes from OTEL_TRACES_SAMPLER (parent-based always-on by default).
        self._tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        chosen = trace_exporter() if exporter is True else exporter or None
        self.exporting = chosen is not None
        # With a parent-based sampler (the default), an event whose publish was not sampled
        # gets no deliver span either: decide that from the flags, without the SDK's work.
        self._parent_based = isinstance(self._tracer_provider.sampler, ParentBased)
        if isinstance(chosen, ConsoleSpanExporter):
            self._tracer_provider.add_span_processor(SimpleSpanProcessor(chosen))
        elif chosen is not None:
            self._tracer_provider.add_span_processor(BatchSpanProcessor(chosen))
        self._tracer = self._tracer_provider.get_tracer("secstream")
        self._sessions: dict[str, Span] = {}
        self._before_render: list[Callable[[], None]] = []
        # The default sampler (parent-based, always on): a publish span's flags are its
        # parent's, or sampled; no need to ask the SDK.
        self._default_sampler = self._tracer_provider.sampler is DEFAULT_ON
        meter = self._meter_provider.get_meter("secstream")

        # Counter names get ``_total`` and the histogram's unit ``s`` gets ``_seconds``
        # from the exporter; ``{...}`` units are annotations and add nothing.
        self.events_published: Counter = meter.create_counter(
            "secstream_events_published", unit="{event}", description="Events appended to the log"
        )
        self.rate_limited: Counter = meter.create_counter(
            "secstream_rate_limited",
            unit="{request}",
            description="Client frames, publishes and handshakes refused by a rate limit",
        )
        self.auth_failures: Counter = meter.create_counter(
            "secstream_auth_failures",
            unit="{request}",
            description="Handshakes and requests refused with 401 or 403",
        )
        self.delivery_latency: Histogram = meter.create_histogram(
            _LATENCY_NAME,
            unit="s",
            description=_LATENCY_HELP,
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.slow_consumers: Counter = meter.create_counter(
            "secstream_slow_consumers",
            unit="{connection}",
            description="Connections closed with 4009 as slow consumers",
        )
        self.connection_duration: Histogram = meter.create_histogram(
            _DURATION_NAME,
            unit="s",
            description=_DURATION_HELP,
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.replayed: Counter = meter.create_counter(
            "secstream_events_replayed", unit="{event}", description="Events sent by replays"
        )
        self.redis_errors: Counter = meter.create_counter(
            "secstream_redis_errors", unit="{error}", description="Failed Redis calls"
        )
        meter.create_observable_gauge(
            "secstream_connections_active",
            callbacks=[_observe(connections_active)],
            unit="{connection}",
            description="Open WebSocket connections on this node",
        )
        meter.create_observable_counter(
            "secstream_messages_delivered",
            callbacks=[_observe(messages_delivered)],
            unit="{message}",
            description="Frames sent to clients",
        )

        self.oidc_refreshes: Counter | None = None
        if oidc_key_age is not None:
            self.oidc_refreshes = meter.create_counter(
                "secstream_oidc_jwks_refresh",
                unit="{fetch}",
                description="Fetches of the OpenID provider's keys, by outcome (ok, failed)",
            )
            for outcome in OIDC_REFRESH_OUTCOMES:
                self.oidc_refreshes.add(0, {"outcome": outcome})
            meter.create_observable_gauge(
                "secstream_oidc_jwks_age",
                callbacks=[_observe_optional(oidc_key_age)],
                unit="s",
                description="Seconds since the OpenID provider's keys were last fetched",
            )

        # Series at 0 so that /metrics names every metric before anything happens.
        for counter in (
            self.events_published,
            self.slow_consumers,
            self.replayed,
            self.redis_errors,
        ):
            counter.add(0)
        for kind in RATE_LIMIT_KINDS:
            self.rate_limited.add(0, {"kind": kind})
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.add(0, {"reason": reason})

    def before_render(self, call: Callable[[], None]) -> None:
        """``call`` runs before each render: to add counts kept in plain ints meanwhile."""
        self._before_render.append(call)

    def render(self) -> tuple[bytes, str]:
        """Prometheus text exposition (format 0.0.4) and its content type."""
        for call in self._before_render:
            call()
        return generate_latest(_WithEmptyHistograms(self._registry)), CONTENT_TYPE_PLAIN_0_0_4

    def span(self, name: str, **attributes: str | int) -> AbstractContextManager[Span]:
        return self._tracer.start_as_current_span(name, attributes=attributes)

    @contextlib.contextmanager
    def publish_span(
        self, traceparent: str | None, *, events: int, event_type: str
    ) -> Iterator[str | None]:
        """``secstream.publish``, a child of ``traceparent`` when it is valid, else of the
        current span; yields the traceparent to store with the events.

        With no exporter the span would go nowhere: only its identity is made (the
        parent's trace, a new span id, the sampler's decision), which costs a few
        microseconds instead of the SDK's span, so that publishing stays cheap.
        """
        parent = parse_traceparent(traceparent)
        if not self.exporting:
            yield self._child_traceparent(parent)
            return
        context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
        attributes: dict[str, str | int] = {
            "secstream.events": events, "secstream.event_type": event_type
        }
        with self._tracer.start_as_current_span(
            "secstream.publish", context=context, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            yield format_traceparent(span)

    def _child_traceparent(self, parent: SpanContext | None) -> str:
        """The traceparent the SDK would give a new ``secstream.publish`` span: in the
        parent's trace (``traceparent``'s, else the current span's), a new span id, and
        the sampler's decision."""
        if parent is None:
            parent = trace.get_current_span().get_span_context()
        ids = self._tracer_provider.id_generator
        trace_id = parent.trace_id if parent.is_valid else ids.generate_trace_id()
        if self._default_sampler:
            flags = int(parent.trace_flags) & 1 if parent.is_valid else 1
        else:
            context = trace.set_span_in_context(NonRecordingSpan(parent))
            decision = self._tracer_provider.sampler.should_sample(
                context, trace_id, "secstream.publish", SpanKind.PRODUCER
            )
            flags = 1 if decision.decision == Decision.RECORD_AND_SAMPLE else 0
        return f"00-{trace_id:032x}-{ids.generate_span_id():016x}-{flags:02x}"

    def deliver(
        self,
        event_id: str,
        event_type: str,
        traceparent: str,
        recipients: int,
        appended_at: float | None = None,
    ) -> None:
        """``secstream.deliver``: one span for one event's fan-out on this process, from
        ``appended_at`` (the log's clock, from the event id) to its hand-off to the sockets."""
        if not self.exporting:
            return
        if self._parent_based and traceparent[-1:] not in "13579bdf":
            return  # not sampled: the flags' last hex digit is even
        parent = parse_traceparent(traceparent)
        if parent is None:
            return
        span = self._tracer.start_span(
            "secstream.deliver",
            context=trace.set_span_in_context(NonRecordingSpan(parent)),
            kind=SpanKind.CONSUMER,
            start_time=int(appended_at * 1e9) if appended_at is not None else None,
            attributes={
                "secstream.recipients": recipients,
                "secstream.event_id": event_id,
                "secstream.event_type": event_type,
            },
        )
        span.end()

    def session_started(self, connection_id: str, user: str, node: str) -> None:
        """``secstream.session``, open for the connection's life. Only when spans are
        exported: an open span costs each idle connection about 2 KB."""
        if not self.exporting:
            return
        self._sessions[connection_id] = self._tracer.start_span(
            "secstream.session",
            context=trace.set_span_in_context(trace.INVALID_SPAN),  # a root of its own
            kind=SpanKind.SERVER,
            attributes={
                "secstream.connection_id": connection_id,
                "enduser.id": user,
                "secstream.node": node,
            },
        )

    def session_ended(self, connection_id: str, code: int) -> None:
        span = self._sessions.pop(connection_id, None)
        if span is not None:
            span.set_attribute("secstream.close_code", code)
            span.end()

    def replay_span(
        self, connection_id: str, subscription: str
    ) -> AbstractContextManager[Span | None]:
        """``secstream.replay``: a child of the connection's session span. Only when spans
        are exported: the SDK's span and its context, made in the connection's reading
        task, were still held by each idle connection (about 350 bytes) long after."""
        if not self.exporting:
            return contextlib.nullcontext()
        session = self._sessions.get(connection_id)
        context = trace.set_span_in_context(session) if session is not None else None
        return self._tracer.start_as_current_span(
            "secstream.replay",
            context=context,
            attributes={
                "secstream.connection_id": connection_id,
                "secstream.subscription": subscription,
            },
        )

    def shutdown(self) -> None:
        for connection_id in list(self._sessions):
            self.session_ended(connection_id, 1001)
        self._meter_provider.shutdown()
        self._tracer_provider.shutdown()


def _observe(read: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(read()),)

    return callback


def _observe_optional(
    read: Callable[[], float | None],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        value = read()
        return () if value is None else (Observation(value),)

    return callback


class _WithEmptyHistograms:
    """The registry's metrics, plus each histogram, empty, until one is recorded.

    OpenTelemetry exports a histogram only once it has a data point; the contract
    wants the names in /metrics from the start.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for metric in self._registry.collect():
            seen.add(metric.name)
            yield metric
        for name, help_text, bounds in _EMPTY_HISTOGRAMS:
            if name not in seen:
                buckets = [(str(b), 0.0) for b in bounds] + [("+Inf", 0.0)]
                yield HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=0.0)
