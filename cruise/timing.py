"""Milliseconds in the configuration -> ticks of the core.

Theory of operation
-------------------
The core reads no clock: it counts ``tick()`` calls (``cruise.core.config``). The member
calls ``tick()`` every ``tick_ms`` and hands the core its heartbeat interval and election
timeout bounds counted in those ticks. :func:`core_timing` is that conversion, kept apart
so that the configuration loader can refuse a file the core would refuse, before anything
opens storage or binds.

Rounding down to whole ticks can bring two different durations to the same count: with
``heartbeat_ms: 25`` and ``election_timeout_ms: [26, 40]`` both are 2 ticks of 10 ms,
although 26 > 25. The core requires the election timeout's lower bound to exceed the
heartbeat interval (a follower must not time out between two heartbeats of a healthy
leader), so the rule is checked here on the tick counts, not on the milliseconds. Likewise
the election timeout's range must still span two tick counts once rounded, or there is no
randomization left (§5.2).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TICK_MS", "CoreTiming", "core_timing"]

# The core's unit of time, unless the heartbeat is shorter (then one tick is one heartbeat).
TICK_MS = 10


@dataclass(frozen=True, slots=True)
class CoreTiming:
    """The core's timing: how often to tick, and the timeouts counted in ticks.

    Invariant: ``0 < heartbeat_ticks < election_ticks[0] <= election_ticks[1]`` (what
    ``CoreConfig.validate`` requires).
    """

    tick_ms: int  # the member calls the core's tick() this often
    heartbeat_ticks: int  # a leader sends heartbeats every this many ticks
    election_ticks: tuple[int, int]  # election timeout drawn from [lo, hi] ticks (§5.2)


def core_timing(heartbeat_ms: int, election_timeout_ms: tuple[int, int]) -> CoreTiming:
    """Convert the configuration's durations to the core's ticks.

    Args:
        heartbeat_ms: the leader's heartbeat interval.
        election_timeout_ms: the election timeout range ``(lo, hi)``.

    Returns:
        The tick length and the heartbeat and election timeouts in ticks, each rounded down.

    Raises:
        ValueError: the durations are out of range, or the election timeout's lower bound
            does not exceed the heartbeat interval once both are counted in ticks. The
            message is one line.
    """
    lo, hi = election_timeout_ms
    if heartbeat_ms < 1:
        raise ValueError(f"heartbeat must be at least 1 ms, got {heartbeat_ms}")
    if not 0 < lo <= hi:
        raise ValueError(f"election timeout must satisfy 0 < lo <= hi, got [{lo}, {hi}]")
    tick_ms = min(TICK_MS, heartbeat_ms)
    heartbeat_ticks = max(1, heartbeat_ms // tick_ms)
    election_ticks = (max(2, lo // tick_ms), max(2, hi // tick_ms))
    if election_ticks[0] <= heartbeat_ticks:
        # heartbeat_ticks >= 1, so (heartbeat_ticks + 1) ticks is also above the floor of 2.
        need = (heartbeat_ticks + 1) * tick_ms
        raise ValueError(
            f"election timeout lower bound {lo} ms is {election_ticks[0]} ticks of {tick_ms} ms,"
            f" not more than the {heartbeat_ticks} ticks of the {heartbeat_ms} ms heartbeat:"
            f" it must be at least {need} ms"
        )
    if election_ticks[1] == election_ticks[0]:
        # Without a spread every member times out after the same count: after a split vote
        # all of them campaign again together, and elections can go on for ever (§5.2; the
        # paper's Figure 16: without randomization, elections took over 10 s).
        raise ValueError(
            f"election timeout [{lo}, {hi}] ms is {election_ticks[0]} ticks of {tick_ms} ms at both ends:"
            f" it must be randomized over at least two tick counts, for example [{lo}, {2 * lo}]"
        )
    return CoreTiming(tick_ms, heartbeat_ticks, election_ticks)
