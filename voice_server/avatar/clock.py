"""The clock the avatar's time-based parts read: injected, so tests move time instead of waiting for it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""


def system_clock() -> datetime:
    """The real time (UTC)."""
    return datetime.now(UTC)
