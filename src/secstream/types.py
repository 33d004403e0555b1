"""Small aliases shared by every module."""

from __future__ import annotations

from typing import NewType

Offset = str
"""A stream id such as ``"1732582200000-0"``: an event's ``id`` and a client's position."""

EventType = str
ClientId = NewType("ClientId", str)
UserId = str
