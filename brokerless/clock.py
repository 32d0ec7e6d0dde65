"""The clock seam: everything that needs "now" gets a :class:`Clock` injected.

:class:`MonotonicClock` is the real one. :class:`FakeClock` only moves when a test moves it
(``jump``/``set``), so timer behaviour is tested without sleeping (trio's ``MockClock``).
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "MonotonicClock", "FakeClock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic source of time in seconds. The zero point is arbitrary."""

    def now(self) -> float:
        """Return the current time in seconds; never smaller than a previous call's result."""
        ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic`."""

    __slots__ = ()

    def now(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def __repr__(self) -> str:
        return "MonotonicClock()"


class FakeClock:
    """A clock that stands still until told to move. Time never goes backwards.

    Args:
        start: the initial reading, in seconds.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        """Return the current fake time."""
        return self._now

    def jump(self, seconds: float) -> None:
        """Move time forward by ``seconds``.

        Raises:
            ValueError: ``seconds`` is negative ("time can't go backwards") or NaN.
        """
        if math.isnan(seconds):
            raise ValueError("time must be a number")
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds

    def set(self, t: float) -> None:
        """Set the reading to ``t`` (an absolute time, not a delta).

        Raises:
            ValueError: ``t`` is earlier than the current reading ("time can't go backwards").
        """
        if math.isnan(t):
            raise ValueError("time must be a number")
        if t < self._now:
            raise ValueError("time can't go backwards")
        self._now = float(t)

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"
