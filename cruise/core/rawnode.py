"""RawNode: the facade the runtime drives, and the ``Ready`` it hands back.

Theory of operation
-------------------
The runtime's loop, one turn at a time (etcd-raft ``doc.go``):

1. feed inputs: ``tick()``, ``step(msg)``, ``propose(...)``, ``read_index(ctx)``;
2. ``rd = node.ready()``;
   if ``rd.snapshot`` is set, save the snapshot the leader sent and restore the
   state machine from it before anything else (its entries are not in the log);
3. send ``rd.eager_messages`` (a leader's appends: safe before its own disk
   write, so followers write in parallel with it, dissertation §10.2.1);
4. persist ``rd.entries`` and ``rd.hard_state``, then sync when ``rd.must_sync``;
5. send ``rd.messages`` (votes, acknowledgements, anything that promises
   what was just persisted);
6. apply ``rd.committed`` in order and serve ``rd.read_states``;
7. ``node.advance(rd)``.

Committed entries (step 6) may be applied before step 4: they are durable on a
quorum already, whatever this Ready writes, so a runtime may answer their
clients without waiting for this Ready's fsync.

Steps 4 before 5 is the durability rule of Figure 2 ("respond to RPCs only
after updating stable storage"): the split between ``eager_messages`` and
``messages`` puts it in the data, not in a convention.

A runtime may instead sync in the background (so the loop keeps serving while
the disk works, and one fsync covers several turns): it writes ``rd.entries``
and ``rd.hard_state``, calls ``advance(rd, durable=False)``, holds
``rd.messages`` (and the messages of every later Ready) until the fsync that
covers the write completes, then calls ``mark_durable(point)`` with
``durable_point(rd)`` and sends what it held, in order. Until then the leader
does not count its own copy of those entries toward a commit.

One Ready is outstanding at a time: no input may be fed between ``ready()``
and ``advance()`` (asserted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import CoreConfig
from .messages import AppendEntries, AppendResponse, Heartbeat, Message
from .raft import Logger, Raft
from .storage import Storage
from .types import (
    CONFIG,
    NOOP,
    RECORD,
    Entry,
    HardState,
    NodeId,
    ReadState,
    Role,
    SnapshotMeta,
    SoftState,
)

# Messages a leader may send before its own write is durable (a tuple: isinstance on a
# `X | Y` union builds the union on every call).
_EAGER_KINDS = (AppendEntries, Heartbeat)


@dataclass(slots=True)
class Ready:
    # Changed volatile state (None: unchanged since the last Ready).
    soft_state: SoftState | None = None
    # A snapshot from the leader to save (and restore the state from) before ``entries``.
    snapshot: SnapshotMeta | None = None
    # Changed hard state to persist with ``entries`` (None: unchanged).
    hard_state: HardState | None = None
    # Entries to append to stable storage (may start at or below storage's last index: replace from there).
    entries: list[Entry] = field(default_factory=list)
    # Committed entries to apply, in index order.
    committed: list[Entry] = field(default_factory=list)
    # Messages that may go before the persistence of this Ready.
    eager_messages: list[Message] = field(default_factory=list)
    # Messages that must go only after ``entries`` and ``hard_state`` are persisted (and synced if must_sync).
    messages: list[Message] = field(default_factory=list)
    # Confirmed read indexes for local read requests.
    read_states: list[ReadState] = field(default_factory=list)
    # Whether persistence must fsync before ``messages`` go (new entries, or term/vote changed).
    must_sync: bool = False

    def is_empty(self) -> bool:
        return not (
            self.snapshot
            or self.soft_state
            or self.hard_state
            or self.entries
            or self.committed
            or self.eager_messages
            or self.messages
            or self.read_states
        )


def _coalesce_acks(msgs: list[Message]) -> list[Message]:
    """Keep only the highest successful AppendResponse per (recipient, term).

    A follower that handled several appends in one turn acknowledges the last matched
    index of each; acknowledgements are cumulative, so the highest one says everything the
    others do. Dropping the others is what losing them would do, which Raft tolerates.
    Rejections and every other message are kept, in order.
    """
    best: dict[tuple[NodeId, int], AppendResponse] = {}
    for m in msgs:
        if type(m) is AppendResponse and not m.reject:
            k = (m.to, m.term)
            cur = best.get(k)
            if cur is None or m.index > cur.index:
                best[k] = m
    if not best:
        return msgs
    out: list[Message] = []
    for m in msgs:
        if type(m) is AppendResponse and not m.reject:
            k = (m.to, m.term)
            if best.get(k) is m:
                out.append(m)
                del best[k]  # keep the first occurrence of the best only
        else:
            out.append(m)
    return out


class RawNode:
    """A Raft node without I/O. See the module docstring for the loop that drives it."""

    def __init__(
        self, config: CoreConfig, storage: Storage, applied: int = 0, logger: Logger | None = None
    ) -> None:
        self.raft = Raft(config, storage, applied, logger)
        self._prev_soft = self._soft()
        self._prev_hard = storage.initial_state()
        self._outstanding: Ready | None = None

    # -- inputs -----------------------------------------------------------------
    def tick(self) -> None:
        self._check_idle()
        self.raft.tick()

    def step(self, msg: Message) -> None:
        self._check_idle()
        self.raft.step(msg)

    def campaign(self) -> None:
        """Start an election now (with pre-vote when configured)."""
        self._check_idle()
        self.raft.campaign(pre=self.raft.config.pre_vote)

    def propose(self, value: Any, origin: tuple[str, int] | None = None) -> tuple[int, int]:
        """Append one record; returns its (index, term). Raises NotLeader / TransferInProgress."""
        self._check_idle()
        return self.raft.propose([(RECORD, value, origin)])

    def propose_batch(self, items: list[tuple[Any, tuple[str, int] | None]]) -> tuple[int, int]:
        """Append many records as one batch; returns (first index, term)."""
        self._check_idle()
        return self.raft.propose_records(items)

    def propose_config(self, value: Any) -> tuple[int, int]:
        """Append a configuration entry (membership changes arrive with a later issue)."""
        self._check_idle()
        return self.raft.propose([(CONFIG, value, None)])

    def report_snapshot(self, to: NodeId, ok: bool) -> None:
        """The runtime's transfer of a snapshot to ``to`` ended (``ok``: all of it arrived)."""
        self._check_idle()
        self.raft.report_snapshot(to, ok)

    def read_index(self, ctx: Any) -> bool:
        self._check_idle()
        return self.raft.read_index(ctx)

    def transfer_leader(self, to: NodeId) -> None:
        self._check_idle()
        self.raft.transfer_leader(to)

    # -- outputs ------------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        r.flush()
        return bool(
            r.msgs
            or r.log.pending_snapshot
            or r.log.unstable
            or r.read_states
            or r.log.has_next_committed()
            or self._soft() != self._prev_soft
            or self._hard() != self._prev_hard
        )

    def ready(self) -> Ready:
        """Everything to persist, send and apply since the last ``advance``."""
        rd = self.ready_if_any()
        if rd is None:
            rd = self._outstanding = Ready()
        return rd

    def ready_if_any(self) -> Ready | None:
        """``ready()`` when ``has_ready()``, else None (nothing outstanding then), for the
        price of one check: the runtime's loop calls this once a turn."""
        self._check_idle()
        r = self.raft
        r.flush()
        soft = self._soft()
        hard = self._hard()
        soft_changed = soft != self._prev_soft
        hard_changed = hard != self._prev_hard
        log = r.log
        if not (
            r.msgs
            or log.pending_snapshot
            or log.unstable
            or r.read_states
            or soft_changed
            or hard_changed
            or log.has_next_committed()
        ):
            return None
        rd = Ready()
        if soft_changed:
            rd.soft_state = soft
        if hard_changed:
            rd.hard_state = hard
        rd.snapshot = log.pending_snapshot
        rd.entries = list(r.log.unstable)
        rd.committed = r.log.next_committed(r.config.max_apply_entries)
        if r.msgs:
            if len(r.msgs) > 1:
                r.msgs = _coalesce_acks(r.msgs)
            eager_ok = r.role == Role.LEADER and r.term == r.durable_term
            for m in r.msgs:
                if eager_ok and isinstance(m, _EAGER_KINDS):
                    rd.eager_messages.append(m)
                else:
                    rd.messages.append(m)
            r.msgs = []
        rd.read_states, r.read_states = r.read_states, []
        rd.must_sync = (
            bool(rd.entries)
            or rd.snapshot is not None
            or (hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote)
        )
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready, durable: bool = True) -> None:
        """The runtime wrote (and, with ``durable``, synced), sent and applied ``rd``.

        With ``durable=False`` the runtime must call ``mark_durable(durable_point(rd))``
        once its fsync covering this write completes, and hold every message
        meanwhile (see the module docstring).
        """
        assert rd is self._outstanding, "advance() takes the Ready last returned by ready()"
        self._outstanding = None
        r = self.raft
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.log.snapshot_saved(rd.snapshot)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
        if rd.committed:
            r.log.applied_to(rd.committed[-1].index)
        if durable:
            self.mark_durable(self.durable_point(rd))

    @staticmethod
    def durable_point(rd: Ready) -> tuple[int, int, int | None]:
        """(last entry index, its term, hard-state term) that ``rd`` makes durable once synced."""
        last = rd.entries[-1] if rd.entries else None
        return (
            last.index if last else 0,
            last.term if last else 0,
            rd.hard_state.term if rd.hard_state is not None else None,
        )

    def mark_durable(self, point: tuple[int, int, int | None]) -> None:
        """Everything the Ready with this ``durable_point`` wrote is now synced."""
        self._check_idle()
        index, term, hard_term = point
        r = self.raft
        if hard_term is not None:
            r.durable_term = max(r.durable_term, hard_term)
        if index:
            r.on_synced(index, term)

    # -- reporting ------------------------------------------------------------------
    def _soft(self) -> SoftState:
        r = self.raft
        return SoftState(r.role, r.lead, r.term)

    def _hard(self) -> HardState:
        r = self.raft
        return HardState(r.term, r.vote, r.log.committed)

    def _check_idle(self) -> None:
        assert self._outstanding is None, "feed no input between ready() and advance()"

    @property
    def role(self) -> str:
        """``follower``, ``candidate`` (pre-candidates too) or ``leader``."""
        role = self.raft.role
        return Role.CANDIDATE if role == Role.PRE_CANDIDATE else role

    @property
    def leader(self) -> NodeId | None:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    def status(self) -> dict[str, Any]:
        r = self.raft
        st: dict[str, Any] = {
            "id": r.id,
            "role": self.role,
            "term": r.term,
            "leader": r.lead,
            "commit_index": r.log.committed,
            "applied_index": r.log.applied,
            "last_index": r.log.last_index(),
        }
        if r.role == Role.LEADER:
            st["progress"] = {
                v: {"match": pr.match, "next": pr.next, "state": pr.state} for v, pr in sorted(r.prs.items())
            }
        return st


__all__ = ["RawNode", "Ready", "NOOP", "RECORD", "CONFIG"]
