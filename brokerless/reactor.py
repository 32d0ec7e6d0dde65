"""A single-threaded event loop over ZeroMQ sockets and timers.

Theory of operation
-------------------

One turn of the loop (:meth:`Reactor.run_once`) is the zguide's tickless loop
(``clonecli3.py``, ``clone.py``):

1. **Poll.** One ``zmq.Poller`` watches every reader. The poll timeout is the smallest of
   the caller's timeout, the time left until the earliest timer deadline, and zero if any
   callback is already queued. Nothing wakes up on a fixed tick.
2. **Readers.** For each readable socket (or fd) its callback runs once, with the socket as
   argument. The callback reads as many messages as it likes (usually until ``zmq.Again``);
   whatever it leaves is reported again on the next turn, because readiness is level
   triggered.
3. **Timers.** Every timer due at ``clock.now()`` fires, in deadline order
   (:class:`~brokerless.timers.Timers`).
4. **Soon callbacks.** Callbacks queued with :meth:`call_soon` (and, from other threads,
   :meth:`call_soon_threadsafe`) before this step run, in FIFO order. Ones they queue run
   on the next turn, so the loop never starves the poll.

Time comes from an injected :class:`~brokerless.clock.Clock`. Timeouts are in the clock's
seconds and are handed to the poll as real milliseconds. A
:class:`~brokerless.clock.FakeClock` never moves on its own, so with one the owner calls
``run_once(0)`` after each ``jump`` (see :func:`brokerless.testing.drive`); that never sleeps.

Threads: everything runs on the thread that calls :meth:`run`/:meth:`run_once`. Only
:meth:`call_soon_threadsafe` and :meth:`stop` may be called from other threads. They push onto
a deque and write one byte to a socketpair the poller watches, which wakes a blocked poll.

Errors: an exception raised by any callback propagates out of :meth:`run_once` (and
:meth:`run`); the reactor does not log or swallow it. The loop stays usable: work the turn
did not reach (other ready sockets, timers of the same batch, queued callbacks) is picked up
on the next turn. The owner decides whether to keep going.
"""

from __future__ import annotations

import math
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from .clock import Clock, MonotonicClock
from .timers import TimerHandle, Timers

__all__ = ["Reactor"]

Reader = Callable[[Any], Any]


class Reactor:
    """Poller plus timers plus a callback queue. See the module docstring.

    Args:
        clock: time source for timers and poll timeouts; defaults to :class:`MonotonicClock`.
        ctx: the ZeroMQ context the owner's sockets belong to; exposed as :attr:`ctx` for
            convenience (defaults to ``zmq.Context.instance()``). The reactor itself makes no
            ZeroMQ sockets and never terminates the context.

    Attributes:
        clock: the clock in use.
        ctx: the ZeroMQ context.
        timers: the underlying :class:`Timers`.
    """

    def __init__(self, clock: Clock | None = None, ctx: zmq.Context | None = None) -> None:
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.ctx: zmq.Context = ctx if ctx is not None else zmq.Context.instance()
        self.timers = Timers(self.clock)
        self._poller = zmq.Poller()
        self._readers: dict[Any, Reader] = {}
        self._soon: deque[tuple[Callable[..., Any], tuple]] = deque()
        # Filled by other threads; drained into _soon by the loop thread.
        self._threadsafe: deque[tuple[Callable[..., Any], tuple]] = deque()
        # True from a cross-thread wake write until the loop starts draining _threadsafe.
        # Saves a syscall per call_soon_threadsafe when many arrive in one turn.
        self._wake_pending = False
        self._stopping = False
        self._running = False  # inside run_once: it is not reentrant
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self._poller.register(self._wake_fd, zmq.POLLIN)

    # -- readers ----------------------------------------------------------------------------

    def add_reader(self, sock: Any, callback: Reader) -> None:
        """Call ``callback(sock)`` whenever ``sock`` is readable.

        Args:
            sock: a ``zmq.Socket``, an object with ``fileno()``, or an int file descriptor.
            callback: called with ``sock``; should read what is available without blocking.
                Registering the same ``sock`` again replaces its callback.
        """
        self._check_open()
        self._poller.register(sock, zmq.POLLIN)
        self._readers[sock] = callback

    def remove_reader(self, sock: Any) -> bool:
        """Stop watching ``sock``. Safe from inside any callback.

        Returns:
            Whether ``sock`` was being watched.
        """
        if self._readers.pop(sock, None) is None:
            return False
        self._poller.unregister(sock)
        return True

    # -- timers and callbacks -------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` once after ``delay`` clock seconds. See :meth:`Timers.call_later`."""
        return self.timers.call_later(delay, callback, *args)

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` every ``interval`` clock seconds (fixed rate, no bursts).

        See :meth:`Timers.call_every`.
        """
        return self.timers.call_every(interval, callback, *args)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` at the end of the current (or next) turn, before the next poll.

        Loop thread only; use :meth:`call_soon_threadsafe` from other threads.
        """
        self._soon.append((callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`call_soon`, from any thread; wakes the loop if it is blocked in poll.

        Raises:
            RuntimeError: the reactor is closed.
        """
        if self._closed:
            raise RuntimeError("reactor is closed")
        self._threadsafe.append((callback, args))
        if not self._wake_pending:
            self._wake_pending = True
            self._wake()

    # -- running ----------------------------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> None:
        """Run one turn: poll, readers, due timers, soon callbacks.

        Args:
            timeout: the longest to wait in poll, in clock seconds; ``None`` waits until a
                reader is ready, a timer is due or another thread wakes the loop. ``0``
                never blocks.

        Raises:
            RuntimeError: called from inside a callback (not reentrant) or after :meth:`close`.
            Exception: whatever a callback raised (see the module docstring).
        """
        self._check_open()
        if self._running:
            raise RuntimeError("run_once is not reentrant")
        self._running = True
        try:
            self._turn(timeout)
        finally:
            self._running = False

    def run(self) -> None:
        """Run turns until :meth:`stop` is called, then return.

        A :meth:`stop` that came before :meth:`run` makes it return at once. After returning,
        :meth:`run` can be called again.
        """
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self._stopping = False

    def stop(self) -> None:
        """Make :meth:`run` return after the current turn. Safe from any thread; no-op if closed."""
        self._stopping = True
        if not self._closed:
            self._wake()

    def close(self) -> None:
        """Release the reactor's own resources; forget readers, timers and queued callbacks.

        Call it from the loop thread, once :meth:`run` has returned. The registered sockets
        belong to their owners and are not closed. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for sock in list(self._readers):
            self.remove_reader(sock)
        self._poller.unregister(self._wake_fd)
        self._wake_r.close()
        self._wake_w.close()
        self._soon.clear()
        self._threadsafe.clear()
        self.timers = Timers(self.clock)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Reactor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("reactor is closed")

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            pass  # the buffer is full of wake-ups already: the loop will wake
        except OSError:
            if not self._closed:  # closed concurrently by the loop thread: nothing to wake
                raise

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _poll_ms(self, timeout: float | None) -> int | None:
        if self._soon or self._threadsafe:
            return 0
        deadline = self.timers.next_deadline()
        if deadline is not None:
            left = max(0.0, deadline - self.clock.now())
            timeout = left if timeout is None else min(timeout, left)
        if timeout is None:
            return None
        # Round up: waking a little late fires the timer; waking early would spin until due.
        return max(0, math.ceil(timeout * 1000))

    def _turn(self, timeout: float | None) -> None:
        events = self._poller.poll(self._poll_ms(timeout))

        readers = self._readers
        for sock, _mask in events:
            if sock == self._wake_fd:
                self._drain_wake()
                continue
            callback = readers.get(sock)
            if callback is not None:  # an earlier callback of this turn may have removed it
                callback(sock)

        self.timers.fire_due(self.clock.now())

        # Clear the flag before draining: a thread that still sees it set appended before this
        # point, so its callback is drained below; one that sees it clear writes a wake byte.
        self._wake_pending = False
        threadsafe = self._threadsafe
        while threadsafe:
            self._soon.append(threadsafe.popleft())
        soon = self._soon
        for _ in range(len(soon)):
            callback, args = soon.popleft()
            callback(*args)
