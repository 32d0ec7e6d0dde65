"""The reactor: readers, timers on fake time, cross-thread wake-ups, errors."""

import socket
import threading
import time

import pytest
import zmq

from brokerless import FakeClock, Reactor
from brokerless.testing import drive, inproc_pair, loopback_pair

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def reactor(ctx, clock):
    r = Reactor(clock=clock, ctx=ctx)
    yield r
    r.close()


def drain(sock):
    out = []
    while True:
        try:
            out.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return out


def run_until(reactor, predicate, timeout=5.0):
    """Turn the reactor (real poll, short timeouts) until predicate() or the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        reactor.run_once(0.05)


# -- readers --------------------------------------------------------------------------------


def test_reader_is_called_with_its_socket(ctx, reactor):
    a, b = inproc_pair(ctx)
    got = []
    reactor.add_reader(b, lambda s: got.extend((s, m) for m in drain(s)))
    a.send_multipart([b"x", b"1"], zmq.NOBLOCK)
    a.send(b"y", zmq.NOBLOCK)
    run_until(reactor, lambda: len(got) == 2)
    assert got == [(b, [b"x", b"1"]), (b, [b"y"])]
    a.close()
    b.close()


def test_reader_over_tcp(ctx, reactor):
    a, b = loopback_pair(ctx, zmq.DEALER, zmq.DEALER)
    got = []
    reactor.add_reader(a, lambda s: got.extend(drain(s)))
    b.send(b"over tcp", zmq.NOBLOCK)
    run_until(reactor, lambda: got)
    assert got == [[b"over tcp"]]
    a.close()
    b.close()


def test_remove_reader(ctx, reactor):
    a, b = inproc_pair(ctx)
    calls = []
    reactor.add_reader(b, calls.append)
    assert reactor.remove_reader(b) is True
    assert reactor.remove_reader(b) is False
    a.send(b"x", zmq.NOBLOCK)
    for _ in range(5):
        reactor.run_once(0.01)
    assert calls == []
    assert b.poll(0) == zmq.POLLIN  # still there, just not watched
    a.close()
    b.close()


def test_reader_removed_by_an_earlier_reader_in_the_same_turn(ctx, reactor):
    a1, b1 = inproc_pair(ctx)
    a2, b2 = inproc_pair(ctx)
    calls = []

    def first(s):
        calls.append(s)
        drain(s)
        reactor.remove_reader(b2 if s is b1 else b1)

    reactor.add_reader(b1, first)
    reactor.add_reader(b2, first)
    a1.send(b"1", zmq.NOBLOCK)
    a2.send(b"2", zmq.NOBLOCK)
    for s in (b1, b2):  # both ready before the turn starts
        assert s.poll(2000) == zmq.POLLIN
    reactor.run_once(0)
    assert len(calls) == 1
    for s in (a1, b1, a2, b2):
        s.close()


def test_plain_fd_reader(reactor):
    r, w = socket.socketpair()
    got = []
    reactor.add_reader(r.fileno(), lambda fd: got.append(r.recv(100)))
    w.send(b"fd")
    run_until(reactor, lambda: got)
    assert got == [b"fd"]
    reactor.remove_reader(r.fileno())
    r.close()
    w.close()


def test_reader_exception_propagates_and_loop_goes_on(ctx, reactor):
    a, b = inproc_pair(ctx)
    got = []

    def bad(s):
        raise KeyError("from callback")

    reactor.add_reader(b, bad)
    a.send(b"x", zmq.NOBLOCK)
    assert b.poll(2000)
    with pytest.raises(KeyError):
        reactor.run_once(1)
    reactor.add_reader(b, lambda s: got.extend(drain(s)))  # replace the callback
    reactor.run_once(1)  # level triggered: the unread message is reported again
    assert got == [[b"x"]]
    a.close()
    b.close()


# -- timers on fake time --------------------------------------------------------------------


def test_timer_fires_at_the_right_fake_time(reactor, clock):
    fired = []
    reactor.call_later(1.0, lambda: fired.append(clock.now()))
    drive(reactor, clock, 0.99, step=0.01)
    assert fired == []
    drive(reactor, clock, 0.02, step=0.01)
    assert fired == [pytest.approx(1.0)]


def test_call_every_under_drive(reactor, clock):
    fired = []
    reactor.call_every(0.25, lambda: fired.append(round(clock.now(), 6)))
    drive(reactor, clock, 1.0, step=0.05)
    assert fired == [0.25, 0.5, 0.75, 1.0]


def test_run_once_zero_never_sleeps_with_fake_clock(reactor, clock):
    reactor.call_later(3600, lambda: None)  # an hour of fake time away
    start = time.monotonic()
    for _ in range(200):
        reactor.run_once(0)
    drive(reactor, clock, 10, step=0.1)
    assert time.monotonic() - start < 2.0


def test_poll_wakes_for_the_next_timer(ctx):
    """With the real clock, a long run_once returns when the timer is due, not at its timeout."""
    with Reactor(ctx=ctx) as r:
        fired = []
        r.call_later(0.05, fired.append, 1)
        start = time.monotonic()
        while not fired:
            r.run_once(10)
            assert time.monotonic() - start < 2.0
        assert time.monotonic() - start >= 0.045


def test_timer_exception_propagates(reactor, clock):
    def boom():
        raise ValueError("timer")

    reactor.call_later(0, boom)
    with pytest.raises(ValueError, match="timer"):
        reactor.run_once(0)


# -- callbacks ------------------------------------------------------------------------------


def test_call_soon_runs_next_turn_and_does_not_starve(reactor):
    log = []

    def again(n):
        log.append(n)
        reactor.call_soon(again, n + 1)  # would loop forever if run in the same turn

    reactor.call_soon(again, 0)
    start = time.monotonic()
    reactor.run_once()  # timeout None, but a pending callback makes the poll non-blocking
    assert log == [0]
    reactor.run_once()
    assert log == [0, 1]
    assert time.monotonic() - start < 2.0


def test_call_soon_fifo(reactor):
    log = []
    for i in range(5):
        reactor.call_soon(log.append, i)
    reactor.run_once(0)
    assert log == [0, 1, 2, 3, 4]


def test_call_soon_exception_keeps_the_rest(reactor):
    log = []
    reactor.call_soon(log.append, 1)
    reactor.call_soon(lambda: 1 / 0)
    reactor.call_soon(log.append, 2)
    with pytest.raises(ZeroDivisionError):
        reactor.run_once(0)
    assert log == [1]
    reactor.run_once(0)
    assert log == [1, 2]


def test_call_soon_threadsafe_wakes_a_blocked_poll(ctx):
    """The loop sits in poll with no timeout; another thread's callback must wake it."""
    with Reactor(ctx=ctx) as r:
        ran = []

        def poke():
            time.sleep(0.1)  # let the main thread block in poll first
            r.call_soon_threadsafe(lambda: ran.append(threading.get_ident()))

        t = threading.Thread(target=poke)
        t.start()
        start = time.monotonic()
        # A timer far away bounds the test if the wake-up is lost (the assert then fails).
        r.call_later(5.0, lambda: None)
        r.run_once(None)
        elapsed = time.monotonic() - start
        t.join(5)
        assert ran == [threading.get_ident()]  # ran on the loop thread
        assert elapsed < 2.0


def test_call_soon_threadsafe_many_threads(ctx):
    with Reactor(ctx=ctx) as r:
        got = []
        n_threads, per_thread = 8, 500

        def feed(k):
            for i in range(per_thread):
                r.call_soon_threadsafe(got.append, (k, i))

        threads = [threading.Thread(target=feed, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(got) < n_threads * per_thread:
            assert time.monotonic() < deadline
            r.run_once(0.5)
        for t in threads:
            t.join(5)
        for k in range(n_threads):  # per-thread order is kept
            assert [i for kk, i in got if kk == k] == list(range(per_thread))


def test_stop_from_another_thread_ends_run(ctx):
    r = Reactor(ctx=ctx)
    try:
        started = threading.Event()
        r.call_soon(started.set)
        t = threading.Thread(target=r.run)
        t.start()
        assert started.wait(5)
        time.sleep(0.05)  # let run() block in poll
        r.stop()
        t.join(5)
        assert not t.is_alive()
    finally:
        r.close()


def test_stop_before_run_returns_at_once_and_run_is_reusable(reactor):
    reactor.stop()
    reactor.run()  # returns immediately
    reactor.call_soon(reactor.stop)
    reactor.run()  # ran a turn, then stopped


def test_run_once_is_not_reentrant(reactor):
    errors = []

    def nested():
        try:
            reactor.run_once(0)
        except RuntimeError as exc:
            errors.append(exc)

    reactor.call_soon(nested)
    reactor.run_once(0)
    assert len(errors) == 1


def test_close(ctx):
    r = Reactor(ctx=ctx)
    a, b = inproc_pair(ctx)
    r.add_reader(b, lambda s: None)
    r.close()
    r.close()  # idempotent
    assert r.closed
    with pytest.raises(RuntimeError):
        r.call_soon_threadsafe(lambda: None)
    with pytest.raises(RuntimeError):
        r.run_once(0)
    r.stop()  # harmless
    a.send(b"still usable", zmq.NOBLOCK)  # the owner's sockets are not closed
    assert b.poll(2000) == zmq.POLLIN
    a.close()
    b.close()
