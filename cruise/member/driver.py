"""The Ready loop: persist, hold for the sync, send, apply, answer; one ordering for all.

Theory of operation
-------------------
One :meth:`Driver.turn` runs at the end of every loop turn that fed the core. It
takes the core's Ready (up to four, while feeding them produces more) and for each:

0. installs ``snapshot`` (a follower the leader sent one): saved, the log restarted
   after it and the state restored from it, before anything else of the Ready;
1. sends ``eager_messages`` (the leader's appends: followers write while it writes,
   dissertation §10.2.1); commit notices go after this turn's replies;
2. on the leader, applies ``committed`` and answers its clients at once: those
   entries are durable on a quorum already, whatever this Ready writes;
3. appends ``entries`` and the hard state to the disk, encoded once (the blob the
   leader just sent, or the one a follower received, is the WAL record's body);
4. syncs when ``must_sync``. A follower syncs inline. The leader takes its sync at
   the end of the turn (after reading the acknowledgements that came in meanwhile, so
   they commit now), or hands it to a background syncer; until the sync covering a
   write completes, it is *held*: every later Ready's ``messages`` and durable point
   wait behind it, and the leader does not count its own copy;
5. sends ``messages`` (votes and acknowledgements promise what was just persisted,
   Figure 2: only after the sync);
6. on a follower, applies ``committed`` (after acknowledging: the leader waits on the
   acknowledgement, nobody waits on this member's apply);
7. ``advance()``; then confirmed reads are served, and a change of leader is reported
   (``on_soft_state``), outside the Ready: reacting to it may feed the core.

A full disk refusing step 0 or 3 stops the Ready there (``stalled``, :mod:`.diskfull`):
no further Ready is taken until :meth:`Driver.resume` finishes it from that step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import api
from ..core import AppendEntries, Message, RawNode, Ready, Role
from ..core.types import Entry, SnapshotMeta, SoftState
from ..errors import STALE, UNAVAILABLE
from ..fsm import Applied
from ..wire import EntryBlobCache
from .applier import Applier
from .diskfull import INSTALL, WRITE, Stall, is_disk_full
from .ports import Disk, Syncer, Transport
from .reads import Reads
from .requests import LEADERSHIP_CHANGED, Proposals

DurablePoint = tuple[int, int, int | None]


@dataclass(slots=True)
class HeldSync:
    """A sync in flight; what waits for it."""

    seq: int
    points: list[DurablePoint] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)


class Observer(Protocol):
    """What the adapter's metrics learn from the driver (``cruise.metrics``). The durations are
    differences of ``now()``, which is the observer's clock: the member reads none itself."""

    def now(self) -> float: ...

    def synced(self, seconds: float) -> None:
        """An fsync taken on the member's loop took ``seconds``."""

    def applied(self, entries: int, seconds: float) -> None:
        """A batch of ``entries`` committed entries was applied and answered in ``seconds``."""


class Driver:
    def __init__(
        self,
        raw: RawNode,
        disk: Disk,
        transport: Transport,
        applier: Applier,
        proposals: Proposals,
        reads: Reads,
        *,
        syncer: Syncer | None,
        drain_peers: Callable[[], None],
        on_soft_state: Callable[[SoftState], None],
        install: Callable[[SnapshotMeta], None],
    ) -> None:
        self.raw = raw
        self.disk = disk
        self.transport = transport
        self.applier = applier
        self.proposals = proposals
        self.reads = reads
        self.syncer = syncer
        self.drain_peers = drain_peers
        self.on_soft_state = on_soft_state
        self.install = install
        self.callbacks: list[Callable[[Applied], None]] = []
        self.callback_failed: Callable[[int, Exception], None] = lambda index, exc: None
        self.blobs = EntryBlobCache()
        self._sync_seq = 0
        self._deferred_sync = 0  # the held sync turn() runs before it ends
        self.syncs: deque[HeldSync] = deque()  # oldest first
        # Counts for metrics, read from another thread: plain ints, only ever increased.
        self.leader_changes = 0  # a leader became known that differs from the last one known
        self.proposals_committed = 0  # this member's proposals applied at their index
        self.proposals_failed = 0  # ... displaced by another term's entry, or refused as stale
        self._lead: str | None = None
        self.observer: Observer | None = None  # None: nothing is timed
        self.stalled: Stall | None = None  # a Ready whose write a full disk refused (diskfull.py)
        self._synced_in_stall = 0  # the newest background sync that completed during a stall

    # -- one turn ------------------------------------------------------------------------------
    def turn(self) -> None:
        raw = self.raw
        for _ in range(4):
            if self.stalled is not None:
                break
            rd = raw.ready_if_any()
            if rd is None:
                break
            self.handle(rd)
        seq = self._deferred_sync
        if seq:
            # The leader's fsync for this turn, taken last: acknowledgements that came in
            # while the turn ran commit (with the leader's earlier, durable writes) and are
            # answered now, not one fsync later. (Stalled on a full disk, it still syncs the
            # writes that went through before.)
            if self.stalled is None:
                self.drain_peers()
                rd = raw.ready_if_any()
                if rd is not None:
                    self.handle(rd)  # whatever it writes joins this sync
            self._deferred_sync = 0
            self.sync()
            self.on_synced(seq)

    def handle(self, rd: Ready) -> None:
        leader = self.raw.raft.role == Role.LEADER
        notices: list[Message] | None = None
        if rd.eager_messages:
            if rd.committed:
                # Appends carrying entries go first: replication is what the next replies
                # wait on. Commit notices to followers go after this turn's replies.
                appends: list[Message] = []
                notices = []
                for m in rd.eager_messages:
                    (appends if type(m) is AppendEntries and m.entries else notices).append(m)
                if appends:
                    self.transport.send(appends, self.blobs)
            else:
                self.transport.send(rd.eager_messages, self.blobs)
        self._go_on(rd, INSTALL, leader, rd.committed, notices)

    def resume(self) -> bool:
        """Try the write a full disk refused again; True once it went through (the Ready is
        then finished and the driver takes Readys again)."""
        stall = self.stalled
        if stall is None:
            return True
        self.stalled = None
        self._go_on(stall.rd, stall.phase, stall.leader, stall.committed, stall.notices)
        if self.stalled is not None:
            return False
        seq, self._synced_in_stall = self._synced_in_stall, 0
        if seq:
            self.on_synced(seq)
        return True

    def _go_on(
        self, rd: Ready, phase: str, leader: bool, committed: list[Entry], notices: list[Message] | None
    ) -> None:
        """Steps 0, 2 and 3 of a Ready from ``phase`` on; on a full disk, stop there."""
        try:
            if phase == INSTALL:
                if rd.snapshot is not None:
                    self.install(rd.snapshot)
                if committed and leader:
                    self.apply(committed)
                    committed = []
                if notices:
                    self.transport.send(notices, self.blobs)
                phase = WRITE
            if rd.entries:
                self.disk.append(rd.entries, self.blobs.blob(rd.entries), rd.hard_state)
            elif rd.hard_state is not None:
                self.disk.set_hard_state(rd.hard_state)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.stalled = Stall(
                rd, phase, leader, committed, notices if phase == INSTALL else None, str(exc)
            )
            return
        self._after_write(rd, committed, leader)

    def _after_write(self, rd: Ready, committed: list[Entry], leader: bool) -> None:
        """Steps 4 to 7 of a Ready whose writes are done."""
        raw, blobs = self.raw, self.blobs
        if rd.must_sync:
            if self.syncer is not None:
                job = self.disk.begin_sync()
                if job is not None:
                    self.syncer.submit(self.hold_for_sync(), job)
            elif leader:
                if not self._deferred_sync:
                    self._deferred_sync = self.hold_for_sync()
            else:
                self.sync()
        held = bool(self.syncs)
        if held:
            self.syncs[-1].points.append(raw.durable_point(rd))
            self.syncs[-1].messages.extend(rd.messages)
        elif rd.messages:
            self.transport.send(rd.messages, blobs)
        if committed:
            self.apply(committed)
        blobs.clear()
        if rd.read_states:
            self.reads.on_read_states(rd.read_states)
        raw.advance(rd, durable=not held)
        self.reads.serve(self.applier.applied, self.applier.machine)
        if rd.soft_state is not None:
            lead = rd.soft_state.leader
            if lead is not None and lead != self._lead:
                # As etcd counts them: a leader found again after none was known counts too.
                self.leader_changes += 1
            self._lead = lead
            self.on_soft_state(rd.soft_state)

    # -- syncs ---------------------------------------------------------------------------------
    def sync(self) -> None:
        """An fsync on the loop (inline mode), timed when an observer is set."""
        observer = self.observer
        if observer is None:
            self.disk.sync()
            return
        start = observer.now()
        self.disk.sync()
        observer.synced(observer.now() - start)

    def hold_for_sync(self) -> int:
        """Open a sync: until ``on_synced`` gets its number, every Ready's messages and
        durable point wait for it."""
        self._sync_seq += 1
        self.syncs.append(HeldSync(self._sync_seq))
        return self._sync_seq

    def on_synced(self, seq: int) -> None:
        """Every write made before sync ``seq`` was opened is durable."""
        if self.stalled is not None:
            # The core holds a Ready not yet advanced: it takes no input until then.
            self._synced_in_stall = max(self._synced_in_stall, seq)
            return
        syncs = self.syncs
        while syncs and syncs[0].seq <= seq:
            held = syncs.popleft()
            for p in held.points:
                self.raw.mark_durable(p)
            if held.messages:
                self.transport.send(held.messages, self.blobs)
                self.blobs.clear()

    # -- applying ------------------------------------------------------------------------------
    def apply(self, committed: list[Entry]) -> None:
        observer = self.observer
        if observer is None:
            self._apply(committed)
            return
        start = observer.now()
        self._apply(committed)
        observer.applied(len(committed), observer.now() - start)

    def _apply(self, committed: list[Entry]) -> None:
        apply = self.applier.apply
        take = self.proposals.take
        transport = self.transport
        callbacks = self.callbacks
        publish = transport.publishing()
        for e in committed:
            out = apply(e)
            if publish or callbacks:
                entry = out.entry
                if publish:
                    transport.publish(entry)
                for cb in callbacks:
                    try:
                        cb(entry)
                    except Exception as exc:  # a user's callback must not stop the member
                        self.callback_failed(e.index, exc)
            p = take(e.index)
            if p is None:
                continue
            if not p.answers(e.term, e.origin):
                self.proposals_failed += 1
                err = api.error(UNAVAILABLE, LEADERSHIP_CHANGED)
                for w in p.waiters():
                    w.reply(err)
            elif out.stale:
                self.proposals_failed += 1
                assert e.origin is not None  # only a record with an origin can be stale
                err = stale_reply(e.origin, self.applier.sessions.highest(e.origin[0]))
                for w in p.waiters():
                    w.reply(err)
            elif p.joined is None:
                self.proposals_committed += 1
                p.waiter.ok(out.first_index, out.first_term, out.result)
            else:
                self.proposals_committed += 1
                for w in p.waiters():
                    w.ok(out.first_index, out.first_term, out.result)


def stale_reply(origin: tuple[str, int], highest: int) -> dict[str, Any]:
    client, seq = origin
    return api.error(
        STALE,
        f"seq {seq} of client {client!r} is older than its session remembers (highest applied "
        f"{highest}); this request applied nothing, an earlier copy of it may have been applied",
    )
