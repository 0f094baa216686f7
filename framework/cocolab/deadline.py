"""Deadlines that are passed down instead of bare timeouts and sleeps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Deadline:
    """A point in monotonic time, `seconds` from its creation."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    @property
    def expires(self) -> float:
        return self.start + self.seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.expires - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires

    def elapsed(self) -> float:
        return time.monotonic() - self.start
