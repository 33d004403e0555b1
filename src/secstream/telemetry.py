"""Metrics and traces (the only opentelemetry.sdk import).

Each Telemetry owns its MeterProvider, TracerProvider and prometheus
CollectorRegistry, and sets no global provider, so several apps can live in
one process.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Final

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import Span
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric

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
"""The ``error_code`` of AuthError and Forbidden: pass ``{"reason": exc.error_code}``."""

_LATENCY_NAME: Final = "secstream_delivery_latency"
_LATENCY_HELP: Final = "Seconds from an event's append to its send on a socket"
_DURATION_NAME: Final = "secstream_connection_duration"
_DURATION_HELP: Final = "Seconds a WebSocket connection stayed open"
_EMPTY_HISTOGRAMS: Final = (
    (f"{_LATENCY_NAME}_seconds", _LATENCY_HELP, LATENCY_BUCKETS),
    (f"{_DURATION_NAME}_seconds", _DURATION_HELP, DURATION_BUCKETS),
)


class Telemetry:
    def __init__(
        self,
        *,
        connections_active: Callable[[], int],
        messages_delivered: Callable[[], int],
        trace_console: bool | None = None,
    ) -> None:
        """``trace_console`` None: on when the environment has SECSTREAM_TRACE_CONSOLE=1."""
        resource = Resource.create({"service.name": "secstream"})
        self._registry = CollectorRegistry(auto_describe=True)
        reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=self._registry
        )
        self._meter_provider = MeterProvider(
            metric_readers=[reader], resource=resource, shutdown_on_exit=False
        )
        self._tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        if trace_console is None:
            trace_console = os.environ.get("SECSTREAM_TRACE_CONSOLE") == "1"
        if trace_console:
            exporter = ConsoleSpanExporter(out=sys.stdout)  # its default is bound at import
            self._tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._tracer = self._tracer_provider.get_tracer("secstream")
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

    def render(self) -> tuple[bytes, str]:
        """Prometheus text exposition (format 0.0.4) and its content type."""
        return generate_latest(_WithEmptyHistograms(self._registry)), CONTENT_TYPE_PLAIN_0_0_4

    def span(self, name: str, **attributes: str | int) -> AbstractContextManager[Span]:
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def shutdown(self) -> None:
        self._meter_provider.shutdown()
        self._tracer_provider.shutdown()


def _observe(read: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(read()),)

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
