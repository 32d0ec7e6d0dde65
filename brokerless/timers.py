"""Heap timers over an injected clock.

The heap holds ``(deadline, seq, handle)`` entries; ``seq`` grows with every push, so timers
with equal deadlines fire in the order they were scheduled and handles are never compared.
A handle is in the heap at most once: a periodic timer is pushed again when it fires.

Cancelling only marks the handle; the entry leaves the heap when it reaches the top, or when
more than half of the heap is cancelled, at which point the heap is rebuilt without them. A
loop that cancels and re-arms a timer forever (an election timeout) therefore keeps the heap
small.

:meth:`Timers.fire_due` first takes every entry that is due *now* off the heap, then runs that
batch in deadline order. Anything scheduled while the batch runs goes into the heap and waits
for the next call, so a zero-delay timer that re-arms itself cannot spin inside one call.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from .clock import Clock, MonotonicClock

__all__ = ["Timers", "TimerHandle"]


class TimerHandle:
    """A scheduled callback; returned by :meth:`Timers.call_later` / :meth:`Timers.call_every`.

    Attributes:
        deadline: when the timer fires next, in the clock's seconds.
        interval: the period of a repeating timer, ``None`` for a one-shot timer.
    """

    __slots__ = ("deadline", "interval", "_callback", "_args", "_cancelled", "_in_heap", "_timers")

    def __init__(
        self,
        timers: Timers,
        deadline: float,
        interval: float | None,
        callback: Callable[..., Any],
        args: tuple,
    ) -> None:
        self.deadline = deadline
        self.interval = interval
        self._callback = callback
        self._args = args
        self._cancelled = False
        # True while an entry for this handle sits in the heap (not while it is in a firing batch).
        self._in_heap = False
        self._timers = timers

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the timer from firing (again). Idempotent; safe from inside any timer callback."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._in_heap:
            self._timers._note_cancelled()

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else f"deadline={self.deadline!r}"
        every = "" if self.interval is None else f" every={self.interval!r}"
        return f"<TimerHandle {getattr(self._callback, '__qualname__', self._callback)!s} {state}{every}>"


class Timers:
    """A set of one-shot and repeating timers. Not thread-safe: use it from one thread.

    Args:
        clock: where "now" comes from when scheduling; defaults to :class:`MonotonicClock`.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = 0
        # Entries in _heap whose handle is cancelled. Invariant: 0 <= _cancelled <= len(_heap).
        self._cancelled = 0

    def __len__(self) -> int:
        """The number of timers still scheduled (not cancelled)."""
        return len(self._heap) - self._cancelled

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` once, ``delay`` seconds from now.

        A negative delay counts as 0. A timer is never run by the :meth:`fire_due` call that is
        in progress when it is scheduled.

        Raises:
            ValueError: ``delay`` is NaN.
        """
        if math.isnan(delay):
            raise ValueError("delay must be a number")
        handle = TimerHandle(self, self.clock.now() + max(0.0, delay), None, callback, args)
        self._push(handle)
        return handle

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` every ``interval`` seconds, first at now + ``interval``.

        Fixed rate: the next deadline is the previous deadline plus ``interval``, so lateness
        does not accumulate. If the timer fell a whole interval or more behind (the loop was
        blocked), it fires once and the next deadline is ``now + interval``: no burst of
        catch-up calls.

        Raises:
            ValueError: ``interval`` is not a positive number.
        """
        if not interval > 0 or math.isinf(interval):
            raise ValueError(f"interval must be a positive number, got {interval!r}")
        handle = TimerHandle(self, self.clock.now() + interval, interval, callback, args)
        self._push(handle)
        return handle

    def next_deadline(self) -> float | None:
        """Return the earliest deadline among live timers, or ``None`` if there are none."""
        heap = self._heap
        while heap and heap[0][2]._cancelled:
            heapq.heappop(heap)[2]._in_heap = False
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> int:
        """Run every timer whose deadline is ``<= now``, earliest first.

        Callbacks may schedule and cancel timers (including themselves and timers due in the
        same batch: a cancelled one does not run). Timers scheduled during this call run at a
        later call at the earliest.

        Args:
            now: the current time (normally ``clock.now()``).

        Returns:
            How many callbacks ran.

        Raises:
            Exception: whatever a callback raised. The timers of the batch that had not run yet
                go back into the heap and run on the next call; a repeating timer whose
                callback raised stays scheduled.
        """
        heap = self._heap
        batch: list[tuple[float, int, TimerHandle]] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            handle = entry[2]
            handle._in_heap = False
            if handle._cancelled:
                self._cancelled -= 1
            else:
                batch.append(entry)
        fired = 0
        i = 0
        try:
            while i < len(batch):
                handle = batch[i][2]
                i += 1
                if handle._cancelled:  # cancelled by an earlier callback of this batch
                    continue
                if handle.interval is not None:
                    # Re-arm before running, so the callback can cancel itself as usual.
                    nxt = handle.deadline + handle.interval
                    if nxt <= now:
                        nxt = now + handle.interval
                    handle.deadline = nxt
                    self._push(handle)
                fired += 1
                handle._callback(*handle._args)
        finally:
            for entry in batch[i:]:
                if not entry[2]._cancelled:
                    entry[2]._in_heap = True
                    heapq.heappush(self._heap, entry)
        return fired

    # -- internals --------------------------------------------------------------------------

    def _push(self, handle: TimerHandle) -> None:
        self._seq += 1
        handle._in_heap = True
        heapq.heappush(self._heap, (handle.deadline, self._seq, handle))

    def _note_cancelled(self) -> None:
        self._cancelled += 1
        if self._cancelled * 2 > len(self._heap):
            self._compact()

    def _compact(self) -> None:
        live = []
        for entry in self._heap:
            if entry[2]._cancelled:
                entry[2]._in_heap = False
            else:
                live.append(entry)
        heapq.heapify(live)
        self._heap[:] = live  # in place: fire_due may hold a reference to the list
        self._cancelled = 0
