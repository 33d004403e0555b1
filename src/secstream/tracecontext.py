"""W3C trace context (``traceparent``) in and out, with the OpenTelemetry API alone."""

from __future__ import annotations

import re
from typing import Final

from opentelemetry.trace import Span, SpanContext, TraceFlags

_TRACEPARENT: Final = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def parse_traceparent(value: str | None) -> SpanContext | None:
    """A W3C ``traceparent`` (version 00) as a remote span context; None when invalid."""
    if not value or len(value) > 128:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match.group(3), 16))
    )


def format_traceparent(span: Span) -> str | None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
