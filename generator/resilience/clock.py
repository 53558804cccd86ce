"""Time for the resilience core: epoch seconds from a Clock the caller hands in.

Workers use the system clock (NTP-synced across machines; the limiter's safety margin
absorbs the skew); the simulator and unit tests use a VirtualClock that moves only when
told to, so an hour of upstream trouble runs in milliseconds.
"""

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class VirtualClock:
    """Time that moves only when told to (the simulator, unit tests)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
