"""The service's notion of time, injectable so tests drive a year of schedules in milliseconds.

Only the scheduler's decisions (which slot is due, when a retry may run) and job timestamps use the clock; the vault's
own writes (chunk mtimes, gc's cutoff) stay on the filesystem's clock, which is what gc's safety argument needs.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep up to ``seconds`` or until ``stop`` is set; True if stopped."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(seconds)


class FakeClock:
    """A clock that only moves when told to (``advance``/``set``); ``wait`` returns at once."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self.t = start.astimezone(timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self.t

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self.t += delta
            return self.t

    def set(self, t: datetime) -> None:
        with self._lock:
            self.t = t.astimezone(timezone.utc)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.is_set()
