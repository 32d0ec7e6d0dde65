"""The fault schedule: drawn from the seed up front, then applied to the live cluster.

:func:`plan` turns ``(seed, duration, kinds, member ids)`` into a list of :class:`Planned`
faults with ``random.Random(seed)`` alone, before anything runs, so the same seed always gives
the same schedule: the same times, kinds, durations and the same seeded choices of members.
Some targets can only be named when the fault fires ("the leader", "a follower"): the plan
holds a seeded pick in ``[0, 1)`` for them, and :class:`Injector` applies it to the members
that qualify at that moment. The schedule is then as reproducible as the cluster's elections
are, and the report shows whom each fault actually hit.

One fault is active at a time: it starts, lasts its duration, heals, and a quiet gap follows.
Faults that overlap would make a run's unavailability impossible to attribute to one cause,
and an overlap that takes out a majority (two kills of three) tests nothing but waiting.

The kinds:

- ``kill``: SIGKILL a member (the leader or a seeded one), restart it on the same data dir
  when the fault heals;
- ``pause``: SIGSTOP a member, SIGCONT when it heals: a process that stops answering while
  its sockets stay open, as a long GC pause or a stalled VM does;
- ``partition``: a majority/minority split of a seeded shuffle of the members, or the leader
  isolated from everyone else;
- ``bridge``: two majorities that share one member, which alone hears both (the cut runs
  only between the halves' other members);
- ``oneway``: packets from one side to the other are dropped but not the reverse (the
  leader's sends to the others, the others' sends to the leader, or a seeded member's);
- ``transfer``: ``transfer_leader`` to a follower; nothing to heal, the duration is a pause
  before the next fault;
- ``diskfull``: fill the file system of a member's data directory (the leader's or a seeded
  one's; a tmpfs of its own, :mod:`chaoslib.disk`) to the last byte, free it when the fault
  heals; the report says whether the member stood still on it (``disk_full`` in its status);
- ``membership``: replace a member (the leader or a seeded one) as an operator whose disk died
  would: ``remove_member``, SIGKILL it, delete its data directory, start it empty with
  ``--join``; when the fault heals, ``add_member`` it again (it catches up as a learner and is
  promoted). While it is out, the cluster runs one voter short.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["KINDS", "Applied", "Cluster", "Injector", "Planned", "plan"]

KINDS = ("kill", "pause", "partition", "oneway", "bridge", "transfer", "diskfull", "membership")

FIRST_AT = (1.5, 3.0)  # seconds after the workload starts: let it record before the first fault
LASTS = (2.0, 5.0)  # how long a fault lasts
GAP = (1.0, 3.0)  # quiet after a heal, so each fault's unavailability is its own
TAIL = 2.0  # no fault in the run's last seconds: the end of the run is for healing


@dataclass(frozen=True)
class Planned:
    """One fault of the schedule, as drawn from the seed.

    ``who`` names a member, or ``"leader"``; ``pick`` chooses among members known only at run
    time; ``split`` is a seeded order of the members for partitions and bridges.
    """

    at: float
    kind: str
    variant: str
    duration: float
    who: str
    pick: float
    split: tuple[str, ...]


@dataclass
class Applied:
    """A fault as it happened: when (monotonic seconds), whom, and how it ended."""

    planned: Planned
    started: float
    targets: list[str]
    detail: str
    healed: float | None = None
    errors: list[str] = field(default_factory=list)
    # When every member was back after the heal: following one leader and applied up to what
    # it had committed at the heal (None: not by ``watched``, the next fault or the run's end).
    rejoined: float | None = None
    watched: float | None = None
    leader: str | None = None  # the leader when it began


class Cluster(Protocol):
    """What the injector needs of the cluster: the harness provides it."""

    ids: list[str]

    def leader(self) -> str | None:
        """The member a quorum of answers name as leader, or None when none is known."""
        ...

    def signal(self, id: str, sig: signal.Signals) -> None:
        """Send ``sig`` to member ``id``'s process (no-op if it is not running)."""
        ...

    def kill(self, id: str) -> None:
        """SIGKILL member ``id`` and reap it."""
        ...

    def start(self, id: str, join: bool = False) -> None:
        """Start member ``id`` on its data dir (a restart after :meth:`kill`); ``join``: as a
        member not yet added, which waits to be."""
        ...

    def fill_disk(self, id: str) -> int:
        """Fill the file system of ``id``'s data directory; the bytes it took."""
        ...

    def free_disk(self, id: str) -> None:
        """Give that space back."""
        ...

    def disk_full(self, id: str) -> str | None:
        """What ``id``'s status says of its disk (None: nothing, or no answer)."""
        ...

    def wipe(self, id: str) -> None:
        """Delete ``id``'s data directory (the member is down)."""
        ...

    def is_member(self, id: str) -> bool | None:
        """Whether the leader's configuration holds ``id`` (None: no leader answered)."""
        ...

    def remove_member(self, id: str) -> None:
        """``remove_member`` through any member (raises on failure)."""
        ...

    def add_member(self, id: str) -> None:
        """``add_member`` with ``id``'s addresses through any member (raises on failure)."""
        ...

    def cut(self, drops: Sequence[tuple[str, str]]) -> None:
        """Drop packets from each first member to the second; replaces earlier cuts."""
        ...

    def heal_network(self) -> None:
        """Remove every cut."""
        ...

    def transfer(self, to: str) -> str:
        """Ask for leadership to go to ``to``; the new leader's id (raises on failure)."""
        ...


def plan(seed: int, duration: float, kinds: Sequence[str], ids: Sequence[str]) -> list[Planned]:
    """The schedule for a run of ``duration`` seconds; depends on its arguments alone."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(unknown)} (known: {', '.join(KINDS)})")
    rng = random.Random(seed)
    out: list[Planned] = []
    if not kinds:
        return out
    at = rng.uniform(*FIRST_AT)
    while True:
        kind = rng.choice(list(kinds))
        lasts = rng.uniform(*LASTS)
        if kind == "diskfull":
            lasts *= 2  # the member first uses up the space its WAL segment reserved
        if at + lasts > duration - TAIL:
            return out
        variant = _variant(rng, kind)
        who = "leader" if rng.random() < 0.5 else rng.choice(list(ids))
        split = list(ids)
        rng.shuffle(split)
        out.append(Planned(round(at, 3), kind, variant, round(lasts, 3), who, rng.random(), tuple(split)))
        at += lasts + rng.uniform(*GAP)


def _variant(rng: random.Random, kind: str) -> str:
    if kind == "partition":
        return rng.choice(["split", "isolate-leader"])
    if kind == "oneway":
        return rng.choice(["from-leader", "to-leader", "from-member"])
    return ""


class Injector:
    """Applies planned faults to a cluster and heals them, recording what happened.

    ``now`` is the clock of the run (monotonic seconds); every exception a fault's action
    raises is kept on its :class:`Applied` rather than ending the run: a transfer the cluster
    refuses is an answer worth reporting, not a harness failure.
    """

    def __init__(self, cluster: Cluster, now: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.now = now
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.filled: set[str] = set()
        self.removed: set[str] = set()

    def apply(self, p: Planned) -> Applied:
        """Start fault ``p``; the returned record says whom it hit.

        ``started`` is when the action completed (the process is dead or stopped, the rules
        are in the kernel), not when it was asked for: an operation invoked while ``nft``
        was still loading its rules would otherwise count as one that beat the fault.
        """
        ids = list(self.cluster.ids)
        leader = self.cluster.leader()
        try:
            targets, detail = self._start(p, ids, leader)
        except Exception as e:  # noqa: BLE001 -- recorded on the fault, see the class docstring
            errors = [f"{type(e).__name__}: {e}"]
            return Applied(p, self.now(), [], f"not applied ({leader=})", errors=errors, leader=leader)
        return Applied(p, self.now(), targets, detail, leader=leader)

    def heal(self, a: Applied) -> None:
        """End fault ``a``: restart, resume, or remove the cuts."""
        try:
            if a.planned.kind == "kill":
                for t in a.targets:
                    self.cluster.start(t)
                    self.killed.discard(t)
            elif a.planned.kind == "pause":
                for t in a.targets:
                    self.cluster.signal(t, signal.SIGCONT)
                    self.paused.discard(t)
            elif a.planned.kind in ("partition", "oneway", "bridge"):
                self.cluster.heal_network()
            elif a.planned.kind == "diskfull":
                for t in a.targets:
                    said = self.cluster.disk_full(t)
                    a.detail += f"; {t} stood still ({said})" if said else f"; {t} had not met it"
                    self.cluster.free_disk(t)
                    self.filled.discard(t)
            elif a.planned.kind == "membership":
                for t in a.targets:
                    self._readd(t)
        except Exception as e:  # noqa: BLE001 -- kept on the record; heal_all() retries at the end
            a.errors.append(f"heal: {type(e).__name__}: {e}")
        a.healed = self.now()

    def heal_all(self) -> None:
        """Undo whatever is still in effect (the end of a run, or an interrupted one)."""
        self.cluster.heal_network()
        for t in sorted(self.filled):
            self.cluster.free_disk(t)
        self.filled.clear()
        for t in sorted(self.paused):
            self.cluster.signal(t, signal.SIGCONT)
        self.paused.clear()
        for t in sorted(self.killed):
            self.cluster.start(t)
        self.killed.clear()
        for t in sorted(self.removed):
            self._readd(t)

    def _readd(self, t: str, tries: float = 20.0) -> None:
        """Add ``t`` back until the configuration holds it (a change may be refused while
        another is in flight, or time out while it catches up as a learner)."""
        deadline = self.now() + tries
        errors: list[str] = []
        while True:
            held = self.cluster.is_member(t)
            if held:
                self.removed.discard(t)
                return
            if held is False:
                try:
                    self.cluster.add_member(t)
                except Exception as e:  # noqa: BLE001 -- retried until the deadline
                    errors.append(f"{type(e).__name__}: {e}")
            if self.now() > deadline:
                raise RuntimeError(f"{t} not added back within {tries:g}s: {'; '.join(errors[-3:])}")
            time.sleep(0.5)

    # -- one kind each ----------------------------------------------------------------------------

    def _start(self, p: Planned, ids: list[str], leader: str | None) -> tuple[list[str], str]:
        if p.kind == "kill":
            t = self._member(p, ids, leader)
            self.cluster.kill(t)
            self.killed.add(t)
            return [t], f"SIGKILL {_names([t], leader)}"
        if p.kind == "pause":
            t = self._member(p, ids, leader)
            self.cluster.signal(t, signal.SIGSTOP)
            self.paused.add(t)
            return [t], f"SIGSTOP {_names([t], leader)}"
        if p.kind == "partition":
            if p.variant == "isolate-leader" and leader is not None:
                small, big = [leader], [i for i in ids if i != leader]
            else:
                small, big = _halves(p.split)
            self.cluster.cut(_between(small, big) + _between(big, small))
            return small, f"{_names(small, leader)} | {_names(big, leader)}"
        if p.kind == "bridge":
            shared, a, b = _bridge(p.split)
            self.cluster.cut(_between(a, b) + _between(b, a))
            return [shared], f"{_names(a, leader)} | {_names(b, leader)}, {_names([shared], leader)} in both"
        if p.kind == "oneway":
            src = leader if p.variant != "from-member" and leader is not None else _pick(p.pick, ids)
            others = [i for i in ids if i != src]
            if p.variant == "to-leader" and leader is not None:
                drops, dirs = _between(others, [src]), (others, [src])
            else:
                drops, dirs = _between([src], others), ([src], others)
            self.cluster.cut(drops)
            return [src], f"{_names(dirs[0], leader)} -> {_names(dirs[1], leader)} dropped"
        if p.kind == "diskfull":
            t = self._member(p, ids, leader)
            took = self.cluster.fill_disk(t)
            self.filled.add(t)
            return [t], f"filled {_names([t], leader)}'s disk ({took >> 20} MiB)"
        if p.kind == "membership":
            t = self._member(p, ids, leader)
            self.removed.add(t)  # heal_all() makes sure it is a member again, whatever happens
            try:
                self.cluster.remove_member(t)
            except Exception:
                if self.cluster.is_member(t) is not False:
                    raise
                # Removed all the same (the answer was lost): replace it as planned.
            self.cluster.kill(t)
            self.cluster.wipe(t)
            self.cluster.start(t, join=True)
            return [t], f"removed {_names([t], leader)}, wiped it, started it empty to be added back"
        if p.kind == "transfer":
            followers = [i for i in ids if i != leader]
            to = _pick(p.pick, followers)
            got = self.cluster.transfer(to)
            return [to], f"transfer_leader {leader} -> {to}: {got} leads"
        raise ValueError(f"unknown fault kind {p.kind}")

    def _member(self, p: Planned, ids: list[str], leader: str | None) -> str:
        if p.who == "leader":
            return leader if leader is not None else _pick(p.pick, ids)
        return p.who


def _pick(x: float, among: Sequence[str]) -> str:
    return sorted(among)[int(x * len(among)) % len(among)]


def _names(ids: Sequence[str], leader: str | None) -> str:
    """Member ids, the leader's starred: which side of a cut the leader was on."""
    return " ".join(f"{i}*" if i == leader else i for i in ids)


def _halves(order: Sequence[str]) -> tuple[list[str], list[str]]:
    """A minority (the first ``(n - 1) // 2`` of ``order``, at least one) and the rest."""
    k = max(1, (len(order) - 1) // 2)
    return list(order[:k]), list(order[k:])


def _bridge(order: Sequence[str]) -> tuple[str, list[str], list[str]]:
    """The shared member and the two sides' other members.

    Each side is a minority alone and a majority with the shared member, so both sides can
    elect (only through it) and the shared member hears two leaders' claims: Jepsen's bridge.
    """
    shared, rest = order[0], list(order[1:])
    half = len(rest) // 2
    return shared, rest[:half], rest[half:]


def _between(src: Sequence[str], dst: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in src for b in dst if a != b]
