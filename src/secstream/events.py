"""Event types, priorities and the role table of contract section 2."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final, Literal, get_args

from secstream.types import EventType

KnownEventType = Literal[
    "test.started",
    "test.progress",
    "test.completed",
    "test.error",
    "test.cancelled",
    "system.alert",
    "system.status",
    "system.maintenance",
    "user.notification",
    "connection.info",
]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(KnownEventType)
TEST_EVENT_TYPES: Final = frozenset(t for t in EVENT_TYPES if t.startswith("test."))

Priority = Literal["low", "normal", "high", "critical"]
PRIORITIES: Final[tuple[Priority, ...]] = ("low", "normal", "high", "critical")
UNDROPPABLE: Final = frozenset({"high", "critical"})

_TEST_AND_NOTICES = frozenset({*TEST_EVENT_TYPES, "user.notification", "connection.info"})
ROLE_RECEIVES: Final[dict[str, frozenset[EventType]]] = {
    "admin": frozenset(EVENT_TYPES),
    "analyst": _TEST_AND_NOTICES | {"system.alert", "system.status", "system.maintenance"},
    "viewer": _TEST_AND_NOTICES | {"system.maintenance"},
    "publisher": frozenset(),
}
PUBLISHING_ROLES: Final = frozenset({"admin", "publisher"})
KNOWN_ROLES: Final = frozenset(ROLE_RECEIVES)


def receivable(roles: Iterable[str]) -> frozenset[EventType]:
    """The event types a token with these roles may receive (the union)."""
    return _receivable(frozenset(roles))


@functools.lru_cache(maxsize=256)
def _receivable(roles: frozenset[str]) -> frozenset[EventType]:
    """One set shared by every connection with these roles (memory per connection)."""
    allowed: frozenset[EventType] = frozenset()
    for role in roles:
        allowed |= ROLE_RECEIVES.get(role, frozenset())
    return allowed


def may_publish(roles: Iterable[str]) -> bool:
    return not PUBLISHING_ROLES.isdisjoint(roles)


def is_valid_pattern(pattern: str) -> bool:
    if pattern == "*" or pattern in EVENT_TYPES:
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return any(t.startswith(prefix) for t in EVENT_TYPES)
    return False


def expand(patterns: Iterable[str], allowed: frozenset[EventType]) -> frozenset[EventType]:
    """The allowed types that ``patterns`` (exact, ``prefix.*`` or ``*``) cover."""
    return _expand(tuple(patterns), allowed)


@functools.lru_cache(maxsize=1024)
def _expand(patterns: tuple[str, ...], allowed: frozenset[EventType]) -> frozenset[EventType]:
    out: set[EventType] = set()
    for pattern in patterns:
        if pattern == "*":
            out |= allowed
        elif pattern.endswith(".*"):
            prefix = pattern[:-1]
            out.update(t for t in allowed if t.startswith(prefix))
        elif pattern in allowed:
            out.add(pattern)
    return frozenset(out)
