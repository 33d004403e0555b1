"""The ``data`` of each event type, as far as this service knows it (section 3).

Publishers may add fields of their own: every struct here accepts unknown fields, and
the API descriptions say so. ``TestRun`` (``testrun``) writes these shapes; ``apidoc``
describes them; a test decodes the data of real runs with them.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

Severity = Literal["critical", "high", "medium", "low", "info"]


class TestData(msgspec.Struct, omit_defaults=True):
    """Every ``test.*`` event: ``test_id`` is required (a publish without it gets 422)."""

    test_id: str
    module: str | None = None
    status: str | None = None


class TestStartedData(TestData):
    progress: float = 0
    metadata: dict[str, Any] | None = None


class TestProgressData(TestData):
    progress: float = 0
    output: str | None = None


class RunSummary(msgspec.Struct, omit_defaults=True):
    """What a ``TestRun`` counted; a module may add keys of its own (hosts, URLs...)."""

    findings: dict[str, int] = {}
    duration_seconds: float = 0
    lines: int = 0


class TestCompletedData(TestData):
    progress: float = 100
    summary: RunSummary | None = None


class TestCancelledData(TestData):
    progress: float = 0
    summary: RunSummary | None = None
    cancelled_by: str | None = None
    reason: str | None = None


class RunError(msgspec.Struct):
    type: str
    message: str


class TestErrorData(TestData):
    progress: float = 0
    summary: RunSummary | None = None
    error: RunError | None = None


class SystemAlertData(msgspec.Struct, omit_defaults=True):
    """A finding of a run (``TestRun.finding``) or a notice of the service itself."""

    title: str | None = None
    message: str | None = None
    severity: Severity | None = None
    test_id: str | None = None
    module: str | None = None
    kind: str | None = None
    source: str | None = None


EVENT_DATA: Final[dict[str, type[msgspec.Struct] | None]] = {
    "test.started": TestStartedData,
    "test.progress": TestProgressData,
    "test.completed": TestCompletedData,
    "test.error": TestErrorData,
    "test.cancelled": TestCancelledData,
    "system.alert": SystemAlertData,
    "system.status": None,
    "system.maintenance": None,
    "user.notification": None,
    "connection.info": None,
}
"""Each event type's data struct; None: the service does not know its fields (any object)."""
