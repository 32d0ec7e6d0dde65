"""What the simulation asserts after every step: Raft's safety properties and what clients see.

Raft (the paper's Figure 3): election safety (one leader per term), at most one vote
per member per term, log matching, leader completeness, state machine safety (every
member applies the same entry at the same index, shown the same way), the applied
index moving by one, and a term that never goes back on disk.

Clients:

- every acknowledged record is in the committed log exactly once, at the index it
  was acknowledged with, and every acknowledgement of one (client, seq) names the
  same index;
- no record value (one per (client, seq)) is applied twice, however late a copy;
- a read answers an index at or above every record acknowledged before it started;
- every request a live member holds is answered, once (checked at the end, after the
  request timeout has passed for all of them);
- nothing a member is fed makes it raise (``world.SimMember.run``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core import VoteResponse
from ..core.types import RECORD, Entry, HardState
from ..fsm import Applied

if TYPE_CHECKING:
    from .sim import Simulation
    from .world import SimMember, SimReplyTo


class Violation(AssertionError):
    pass


class Checker:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.leader_of_term: dict[int, str] = {}
        self.granted: dict[tuple[str, int, int], str] = {}  # (voter, incarnation, term) -> candidate
        self.seen: dict[
            tuple[int, int], tuple[str, Any, int]
        ] = {}  # (index, term) -> (kind, value, prev term)
        self.applied: dict[int, Applied] = {}  # index -> the entry as every member shows it
        self.digests: dict[int, int] = {}  # index -> the state machine's digest after applying it
        self.record_at: dict[Any, int] = {}  # record value -> the index it was applied at
        self.acked: dict[tuple[str, int], tuple[Any, int]] = {}  # (client, seq) -> (value, index)
        self.max_acked = 0  # highest index acknowledged to any client so far
        self.waiters: list[tuple[SimMember, SimReplyTo]] = []
        self.leaders = 0

    def fail(self, text: str) -> None:
        raise Violation(text)

    # -- Raft -------------------------------------------------------------------------------------
    def on_vote(self, m: VoteResponse, incarnation: int) -> None:
        """One vote per term per data directory (a member that lost its data has forgotten
        its vote: that it must not count is what election safety checks)."""
        if m.granted and not m.pre:
            prior = self.granted.setdefault((m.frm, incarnation, m.term), m.to)
            if prior != m.to:
                self.fail(f"{m.frm} voted for {prior} and {m.to} in term {m.term}")

    def on_leader(self, sm: SimMember, term: int) -> None:
        other = self.leader_of_term.setdefault(term, sm.id)
        if other != sm.id:
            self.fail(f"election safety: {other} and {sm.id} both lead term {term}")
        self.leaders += 1
        log = sm.core_log()
        last = log.last_index()
        first = log.first_index()
        for index, e in self.applied.items():
            if index < first:
                continue  # compacted: a snapshot holds it
            if index > last or log.term(index) != e.term:
                self.fail(f"leader completeness: {sm.id} leads term {term} without committed entry {index}")

    def on_append(self, sm: SimMember, entries: Sequence[Entry]) -> None:
        raft = sm.member.raw.raft if sm.member is not None else None
        if raft is not None and raft.role == "leader" and raft.durable_term < raft.term:
            # A lone voter wins its election within one step, and writes its no-op with the
            # term that elected it. Until that write is synced nobody hears of the term, so a
            # crash before the sync may elect it again in the same term, with other entries:
            # no log ever held the first ones. Checked once they could have been seen.
            return
        log = sm.core_log()
        for e in entries:
            key = (e.index, e.term)
            got = (e.kind, e.value, log.term(e.index - 1) if e.index - 1 <= log.last_index() else -1)
            want = self.seen.setdefault(key, got)
            if want != got:
                self.fail(f"log matching: {sm.id} has {key} as {got}, another log has {want}")
            done = self.applied.get(e.index)
            if done is not None and done.term != e.term and e.index <= log.committed:
                self.fail(f"{sm.id} rewrites committed index {e.index}")

    def on_hard_state(self, sm: SimMember, hs: HardState) -> None:
        durable = sm.disk.durable[1]
        if hs.term < durable.term:
            self.fail(f"{sm.id} term went back from {durable.term} to {hs.term}")

    def on_restore(self, sm: SimMember, index: int, digest: int) -> None:
        """A member's state was replaced by a snapshot at ``index``: it must be the state
        every member that applied up to there has."""
        if index < sm.applied:
            self.fail(f"{sm.id} restored a snapshot at {index} after applying {sm.applied}")
        sm.applied = index
        self.sim.result.restores += 1
        want = self.digests.setdefault(index, digest)
        if want != digest:
            self.fail(
                f"state machine safety: {sm.id} restored a snapshot at {index} unlike the applied state"
            )

    def on_apply(self, sm: SimMember, entry: Applied, digest: int) -> None:
        if entry.index != sm.applied + 1:
            self.fail(f"{sm.id} applied {entry.index} after {sm.applied}")
        sm.applied = entry.index
        want_digest = self.digests.setdefault(entry.index, digest)
        if want_digest != digest:
            self.fail(f"state machine safety: {sm.id}'s state after {entry.index} differs from another's")
        want = self.applied.setdefault(entry.index, entry)
        if want != entry:
            self.fail(
                f"state machine safety: {sm.id} applies {entry} at {entry.index}, another applied {want}"
            )
        if entry.kind == RECORD and want is entry:
            at = self.record_at.setdefault(entry.value, entry.index)
            if at != entry.index:
                self.fail(f"record {entry.value!r} applied twice, at {at} and {entry.index}")

    # -- clients ----------------------------------------------------------------------------------
    def on_ack(self, client: str, seq: int, value: Any, index: int) -> None:
        first = self.acked.setdefault((client, seq), (value, index))
        if first[1] != index:
            self.fail(f"{client} seq {seq} acknowledged at {first[1]} and at {index}")
        e = self.applied.get(index)
        if e is not None and (e.kind != RECORD or e.value != value):
            self.fail(f"{client} seq {seq} acknowledged at {index}, which holds {e}")
        self.max_acked = max(self.max_acked, index)

    def on_read(self, who: str, index: int, bound: int) -> None:
        if index < bound:
            self.fail(f"{who}: read index {index} misses record {bound} acknowledged before the read")

    def track(self, sm: SimMember, w: SimReplyTo) -> None:
        self.waiters.append((sm, w))

    def check_waiters(self, now: float, slack: float) -> None:
        """Every request a member still runs for must be answered by its deadline (plus the
        sweep's period); requests of a process that crashed are its clients' to time out."""
        keep = []
        for sm, w in self.waiters:
            if w.answer is not None or sm.incarnation != w.incarnation or not sm.alive:
                continue
            if w.deadline + slack < now:
                self.fail(f"{w.what} was never answered (deadline {w.deadline:.3f}, now {now:.3f})")
            keep.append((sm, w))
        self.waiters = keep

    # -- at the end -------------------------------------------------------------------------------
    def final(self, now: float, slack: float) -> None:
        for (client, seq), (value, index) in self.acked.items():
            e = self.applied.get(index)
            if e is None or e.kind != RECORD or e.value != value:
                self.fail(f"{client} seq {seq} acknowledged at {index}, but the log holds {e}")
        self.check_waiters(now, slack)
