"""Timers and clocks, on a FakeClock: no test here sleeps."""

import pytest

from brokerless import Clock, FakeClock, MonotonicClock, Timers

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def timers(clock):
    return Timers(clock)


# -- clocks ---------------------------------------------------------------------------------


def test_fake_clock_moves_only_when_told():
    c = FakeClock(10.0)
    assert c.now() == 10.0
    c.jump(2.5)
    assert c.now() == 12.5
    c.set(20.0)
    assert c.now() == 20.0
    c.jump(0)
    assert c.now() == 20.0


def test_fake_clock_refuses_to_go_backwards():
    c = FakeClock(5.0)
    with pytest.raises(ValueError, match="time can't go backwards"):
        c.jump(-0.1)
    with pytest.raises(ValueError, match="time can't go backwards"):
        c.set(4.0)
    assert c.now() == 5.0


def test_clocks_satisfy_the_protocol():
    assert isinstance(FakeClock(), Clock)
    assert isinstance(MonotonicClock(), Clock)
    m = MonotonicClock()
    a = m.now()
    assert m.now() >= a


# -- ordering -------------------------------------------------------------------------------


def test_fire_in_deadline_order_then_fifo(clock, timers):
    log = []
    timers.call_later(3, log.append, "c")
    timers.call_later(1, log.append, "a1")
    timers.call_later(2, log.append, "b")
    timers.call_later(1, log.append, "a2")
    assert timers.next_deadline() == 1
    assert timers.fire_due(0.999) == 0
    assert log == []
    assert timers.fire_due(5) == 4
    assert log == ["a1", "a2", "b", "c"]
    assert timers.next_deadline() is None
    assert len(timers) == 0


def test_only_due_timers_fire(clock, timers):
    log = []
    timers.call_later(1, log.append, 1)
    timers.call_later(2, log.append, 2)
    assert timers.fire_due(1.0) == 1  # deadline == now counts as due
    assert log == [1]
    assert timers.next_deadline() == 2


def test_delay_is_relative_to_the_clock(clock, timers):
    clock.set(100)
    h = timers.call_later(0.5, lambda: None)
    assert h.deadline == 100.5
    assert timers.next_deadline() == 100.5


def test_negative_delay_counts_as_zero(clock, timers):
    log = []
    timers.call_later(-5, log.append, "x")
    assert timers.next_deadline() == 0
    assert timers.fire_due(0) == 1
    assert log == ["x"]


# -- cancel ---------------------------------------------------------------------------------


def test_cancel(clock, timers):
    log = []
    h = timers.call_later(1, log.append, "cancelled")
    timers.call_later(2, log.append, "kept")
    h.cancel()
    h.cancel()  # idempotent
    assert h.cancelled
    assert len(timers) == 1
    assert timers.next_deadline() == 2  # the cancelled head is skipped
    assert timers.fire_due(10) == 1
    assert log == ["kept"]


def test_cancel_after_firing_is_harmless(clock, timers):
    h = timers.call_later(1, lambda: None)
    timers.fire_due(1)
    h.cancel()
    assert len(timers) == 0
    assert timers._cancelled == 0


def test_cancelled_timers_do_not_accumulate(clock, timers):
    """An election timer reset on every heartbeat must not grow the heap."""
    h = timers.call_later(1.0, lambda: None)
    for _ in range(10_000):
        h.cancel()
        h = timers.call_later(1.0, lambda: None)
    assert len(timers) == 1
    assert len(timers._heap) <= 4  # compaction keeps at most ~2x the live timers


def test_compaction_keeps_live_timers(clock, timers):
    log = []
    handles = [timers.call_later(i, log.append, i) for i in range(100)]
    for h in handles[:90]:
        h.cancel()
    assert len(timers._heap) < 100  # compacted once more than half were cancelled
    assert len(timers) == 10
    assert timers.fire_due(1000) == 10
    assert log == list(range(90, 100))


# -- call_every -----------------------------------------------------------------------------


def test_call_every_fixed_rate(clock, timers):
    fired = []
    timers.call_every(1.0, lambda: fired.append(clock.now()))
    for t in (0.5, 1.0, 1.5, 2.3, 3.0):
        clock.set(t)
        timers.fire_due(clock.now())
    assert fired == [1.0, 2.3, 3.0]
    # Late by 0.3 at t=2.3, yet the next deadline stayed on the 1-second grid.
    assert timers.next_deadline() == 4.0


def test_call_every_no_burst_after_a_stall(clock, timers):
    fired = []
    h = timers.call_every(1.0, lambda: fired.append(clock.now()))
    clock.set(5.5)  # the loop was blocked for 4.5 intervals
    assert timers.fire_due(clock.now()) == 1  # once, not five times
    assert h.deadline == 6.5  # rescheduled from now
    clock.set(6.4)
    assert timers.fire_due(clock.now()) == 0
    clock.set(6.5)
    assert timers.fire_due(clock.now()) == 1
    assert fired == [5.5, 6.5]


def test_call_every_exactly_one_interval_late_reschedules_from_now(clock, timers):
    h = timers.call_every(1.0, lambda: None)
    timers.fire_due(2.0)  # deadline 1.0, fired at 2.0: a whole interval behind
    assert h.deadline == 3.0


def test_call_every_cancel_from_its_own_callback(clock, timers):
    fired = []

    def tick():
        fired.append(clock.now())
        if len(fired) == 3:
            handle.cancel()

    handle = timers.call_every(1.0, tick)
    for t in range(1, 10):
        clock.set(t)
        timers.fire_due(t)
    assert fired == [1, 2, 3]
    assert timers.next_deadline() is None


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_call_every_rejects_bad_interval(timers, bad):
    with pytest.raises(ValueError):
        timers.call_every(bad, lambda: None)


# -- reentrancy -----------------------------------------------------------------------------


def test_zero_delay_timer_scheduled_while_firing_waits_for_next_call(clock, timers):
    count = []

    def rearm():
        count.append(1)
        timers.call_later(0, rearm)

    timers.call_later(0, rearm)
    assert timers.fire_due(0) == 1
    assert timers.fire_due(0) == 1
    assert timers.fire_due(0) == 1
    assert len(count) == 3


def test_callback_cancels_a_timer_due_in_the_same_batch(clock, timers):
    log = []
    victim = None

    def killer():
        log.append("killer")
        victim.cancel()

    timers.call_later(1, killer)
    victim = timers.call_later(1, log.append, "victim")
    timers.call_later(1, log.append, "bystander")
    assert timers.fire_due(1) == 2
    assert log == ["killer", "bystander"]
    assert len(timers) == 0
    assert timers._cancelled == 0


def test_callback_schedules_and_cancels_many(clock, timers):
    """Cancelling enough inside a callback triggers compaction mid-batch; nothing is lost."""
    log = []
    later = [timers.call_later(10 + i, log.append, i) for i in range(10)]

    def churn():
        for h in later:
            h.cancel()
        timers.call_later(0.5, log.append, "new")

    timers.call_later(1, churn)
    timers.call_later(1, log.append, "same-batch")
    assert timers.fire_due(1) == 2
    assert log == ["same-batch"]
    assert timers.fire_due(100) == 1
    assert log == ["same-batch", "new"]


def test_exception_propagates_and_keeps_the_rest(clock, timers):
    log = []

    def boom():
        raise RuntimeError("boom")

    timers.call_later(1, log.append, "before")
    timers.call_later(2, boom)
    timers.call_later(3, log.append, "after")
    every = timers.call_every(1.5, boom)
    with pytest.raises(RuntimeError):
        timers.fire_due(3)  # before(1), every(1.5) raises
    assert log == ["before"]
    # A raising periodic timer stays armed (a whole interval late at t=3, so from now).
    assert not every.cancelled and every.deadline == 4.5
    with pytest.raises(RuntimeError):
        timers.fire_due(3)  # boom(2) was put back and raises now
    assert timers.fire_due(3) == 1  # "after" was not lost
    assert log == ["before", "after"]
    every.cancel()
    assert timers.fire_due(10) == 0
    assert len(timers) == 0


def test_exception_after_compaction_mid_batch_keeps_the_rest(clock, timers):
    """A callback that cancels most timers (compacting the heap) and then raises loses nothing."""
    log = []
    later = [timers.call_later(10 + i, log.append, i) for i in range(10)]

    def cancel_then_raise():
        for h in later:
            h.cancel()
        raise RuntimeError("after compaction")

    timers.call_later(1, cancel_then_raise)
    timers.call_later(1, log.append, "same-batch")
    with pytest.raises(RuntimeError):
        timers.fire_due(1)
    assert timers.next_deadline() == 1
    assert timers.fire_due(1) == 1
    assert log == ["same-batch"]
    assert len(timers) == 0
