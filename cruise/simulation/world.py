"""The simulated world around each member: its disk, its transport, its answers.

A :class:`SimMember` is one member process: a real :class:`cruise.member.Member` over
a :class:`SimDisk` and a :class:`SimTransport`. A crash throws the Member away, with
everything it held in memory, and rolls the disk back to its last sync; a restart
builds a new Member (a new process incarnation) over what survived. A data-loss restart
(``wipe``) builds it over a new, empty disk with a new identity, as an operator starting a
member on an empty data directory would.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import api
from ..core import MemoryStorage, Message, VoteResponse
from ..core.log import RaftLog
from ..core.types import Entry, HardState
from ..fsm import Applied
from ..member import Member, MemberConfig
from ..member.identity import MemoryIdentity, new_id
from ..wire import EntryBlobCache
from .checks import Violation
from .machine import DigestMachine
from .network import FORWARD, FORWARD_REPLY, PEER, REPLY, Packet

if TYPE_CHECKING:
    from .sim import Simulation


class Crash(Exception):
    """Raised from inside a member's I/O to crash it at that very point."""


class SimDisk(MemoryStorage):
    """A ``MemoryStorage`` that remembers what was synced; a crash keeps only that.

    ``crash_point`` (set by the simulation) may raise :class:`Crash` at a write or a
    sync, so a member dies between any two steps of its Ready loop. While ``full``, every
    write raises ``ENOSPC`` as a full file system does, having changed nothing (syncs of
    what was written go through).
    """

    def __init__(self) -> None:
        super().__init__()
        self.durable = self.checkpoint()
        self.crash_point: Callable[[str], None] = lambda where: None
        self.on_append: Callable[[Sequence[Entry]], None] = lambda entries: None
        self.on_hard_state: Callable[[HardState], None] = lambda hs: None
        self.full = False

    def check_space(self) -> None:
        """Refuse a write as a full file system does: ``ENOSPC`` while ``full``."""
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def append(
        self, entries: Sequence[Entry], packed_rows: bytes | None = None, hard_state: HardState | None = None
    ) -> None:
        self.crash_point("append")
        self.check_space()
        self.on_append(entries)
        super().append(entries)
        if hard_state is not None:
            self.set_hard_state(hard_state)

    def set_hard_state(self, hs: HardState) -> None:
        self.check_space()
        self.on_hard_state(hs)
        super().set_hard_state(hs)

    def sync(self) -> None:
        self.crash_point("sync")
        super().sync()
        self.durable = self.checkpoint()

    def begin_sync(self) -> SimSyncJob:
        return SimSyncJob(self, self.checkpoint())

    def save_snapshot(self, index: int, term: int, data: bytes | bytearray, meta: dict | None = None) -> None:
        self.crash_point("snapshot")
        self.check_space()
        super().save_snapshot(index, term, data, meta)

    def adopt_snapshot(self, handle: tuple[int, int, bytes, dict | None]) -> None:
        # The writer wrote the file (or met the full disk, see complete_snapshots): adopting
        # it writes nothing more.
        self.crash_point("snapshot")
        super().save_snapshot(*handle)

    def write_snapshot(self, job: tuple[int, int, Callable[[], Any], dict | None]) -> tuple:
        """Encode a snapshot "in the background": now, rounds after the state was frozen."""
        index, term, pieces, meta = job
        return index, term, b"".join(pieces()), meta

    def compact(self, index: int) -> None:
        self.crash_point("compact")
        self.check_space()
        super().compact(index)
        self.durable = self.checkpoint()  # compaction syncs, as the WAL's does

    def crash(self) -> None:
        self.restore(self.durable)


class SimIdentity(MemoryIdentity):
    """The identity file on a :class:`SimDisk`: while the disk is full, saving the cluster id
    is refused as every other write is."""

    def __init__(self, incarnation: int, disk: SimDisk) -> None:
        super().__init__(incarnation)
        self.disk = disk

    def save_cluster(self, cluster: int) -> None:
        self.disk.check_space()
        super().save_cluster(cluster)


class SimSyncJob:
    """A background fsync: makes the writes made before it began durable when it runs."""

    def __init__(self, disk: SimDisk, cp: Any) -> None:
        self.disk = disk
        self.cp = cp

    def run(self) -> None:
        self.disk.durable = self.cp

    def discard(self) -> None:
        pass


class SimSnapshotWriter:
    """Writes a snapshot "in the background": it becomes durable some rounds later, unless
    the member crashes first."""

    def __init__(self, m: SimMember) -> None:
        self.m = m

    def write(self, index: int, term: int, pieces: Callable[[], Any], meta: dict | None = None) -> None:
        m = self.m
        due = m.sim.net.round + m.sim.rng.randrange(1, 4 * m.sync_delay + 2)
        m.snapshot_jobs.append((due, index, (index, term, pieces, meta)))


class SimReplyTo:
    """An answer slot; the checker requires each to be answered exactly once (by a live
    incarnation) and never twice."""

    __slots__ = ("deadline", "sink", "incarnation", "answer", "what")

    def __init__(self, deadline: float, sink: Callable[[dict[str, Any]], None], incarnation: int, what: str):
        self.deadline = deadline
        self.sink = sink
        self.incarnation = incarnation
        self.answer: dict[str, Any] | None = None
        self.what = what

    def ok(self, index: int, term: int, result: Any) -> None:
        self.reply({"ok": True, "index": index, "term": term, "result": result})

    def reply(self, reply: dict[str, Any]) -> None:
        if self.answer is not None:
            raise AssertionError(f"{self.what} answered twice: {self.answer} then {reply}")
        self.answer = reply
        self.sink(reply)


class SimTransport:
    def __init__(self, m: SimMember) -> None:
        self.m = m

    def send(self, msgs: list[Message], blobs: EntryBlobCache) -> None:
        m = self.m
        for msg in msgs:
            m.crash_point("send")
            if type(msg) is VoteResponse:
                m.sim.checker.on_vote(msg, m.data.incarnation)
            assert m.member is not None
            m.sim.net.send(Packet(PEER, m.id, msg.to, (msg, m.member.stamp(msg.to))))

    def forward(self, to: str, rid: int, frame: bytes) -> bool:
        self.m.sim.net.send(Packet(FORWARD, self.m.id, to, (rid, frame)))
        return True

    def publishing(self) -> bool:
        return True

    def set_members(self, peers: list[dict[str, Any]]) -> None:
        pass  # the simulated network routes by id

    def publish(self, entry: Applied) -> None:
        pass  # the driver publishes the entry it hands on_apply, which the checker reads


class SimSyncer:
    def __init__(self, m: SimMember) -> None:
        self.m = m

    def submit(self, seq: int, job: Any) -> None:
        # Syncs complete in the order they were submitted, as the fsync thread runs them.
        m = self.m
        due = m.sim.net.round + m.sim.rng.randrange(m.sync_delay + 1)
        if m.syncs:
            due = max(due, m.syncs[-1][0])
        m.syncs.append((due, seq, job))


class SimMember:
    def __init__(self, sim: Simulation, id: str, config: MemberConfig) -> None:
        self.sim = sim
        self.id = id
        self.config = config
        self.new_disk()
        self.member: Member | None = None
        self.incarnation = 0
        self.down_until = 0
        self.full_until = 0  # while its disk is full: the tick it has space again
        self.applied = 0
        self.syncs: list[tuple[int, int, Any]] = []  # (due round, seq, job) of background syncs
        self.snapshot_jobs: list[tuple[int, int, Any]] = []  # (due round, index, handle)
        # Disks differ: some members sync fast, some slowly (a slow disk on the leader lets
        # its followers' acknowledgements arrive before its own sync completes).
        self.sync_delay = sim.rng.choice((1, sim.cfg.sync_delay, 2 * sim.cfg.sync_delay))
        self.wanted = False  # process() asked for
        self.start()

    def new_disk(self) -> None:
        """An empty data directory, with a new incarnation."""
        sim = self.sim
        self.disk = SimDisk()
        self.disk.crash_point = self.crash_point
        self.disk.on_append = lambda entries: sim.checker.on_append(self, entries)
        self.disk.on_hard_state = lambda hs: sim.checker.on_hard_state(self, hs)
        # Drawn apart from the run's own stream, so that a run without data loss is the run
        # it was before identities existed.
        self.wipes = getattr(self, "wipes", -1) + 1
        self.data = SimIdentity(
            new_id(random.Random(f"identity-{sim.seed}-{self.id}-{self.wipes}")), self.disk
        )
        self.applied = 0

    def wipe(self) -> None:
        """Lose the data directory (the member is down): the next start is on an empty one."""
        assert self.member is None
        self.new_disk()

    @property
    def alive(self) -> bool:
        return self.member is not None

    def core_log(self) -> RaftLog:
        assert self.member is not None, f"{self.id} is down"
        return self.member.raw.raft.log

    def start(self) -> None:
        sim = self.sim
        self.incarnation += 1
        self.syncs = []
        self.snapshot_jobs = []
        self.machine = DigestMachine()
        self.member = Member(
            self.config,
            self.disk,
            self.machine,
            SimTransport(self),
            sim.clock,
            schedule=self._schedule,
            syncer=SimSyncer(self) if sim.cfg.background_sync else None,
            snapshot_writer=SimSnapshotWriter(self) if sim.background_snapshots else None,
            identity=self.data,
            rng=random.Random(sim.member_seed()),
        )
        self.member.applier.sessions.window = sim.cfg.session_window
        self.applied = 0
        self._restored(self.member.applier.applied)
        self.member.driver.callbacks.append(self._applied)
        self.member.on_restore.append(self._restored)
        # The checker's callback raises on a violation; the member would log and go on.
        self.member.driver.callback_failed = self._callback_failed
        self.wanted = True

    def crash(self) -> None:
        self.member = None
        self.disk.crash()

    def crash_point(self, where: str) -> None:
        if self.sim.crash_now(self, where):
            raise Crash(where)

    def _schedule(self) -> None:
        self.wanted = True

    @staticmethod
    def _callback_failed(index: int, exc: Exception) -> None:
        raise exc

    def _applied(self, entry: Applied) -> None:
        self.sim.checker.on_apply(self, entry, self.machine.digest)

    def _restored(self, index: int) -> None:
        if index:
            self.sim.trace(f"{self.id} restores a snapshot at {index}")
            self.sim.checker.on_restore(self, index, self.machine.digest)

    # -- driving the member: every call goes through run(), which turns a Crash into a crash
    # and anything else a member raises into a violation.
    def run(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.member is None:
            return
        try:
            fn(*args)
        except Violation:
            raise
        except Crash as c:
            self.sim.trace(f"{self.id} crashes at {c}")
            self.crash()
            return
        except Exception as e:
            self.sim.fail(f"{self.id} raised {type(e).__name__}: {e} (from {getattr(fn, '__name__', fn)})")
        if self.member is not None and self.member.failed is not None:
            self.sim.fail(f"{self.id} stopped: {self.member.failed}")

    def deliver(self, p: Packet) -> None:
        m = self.member
        if m is None:
            return
        if p.kind == PEER:
            self.run(m.on_peer, *p.body)
        elif p.kind == FORWARD_REPLY:
            rid, reply = p.body
            self.run(m.on_forward_reply, rid, reply)
        else:  # a client's request, or one forwarded by another member
            tag, frame = p.body
            src, back = p.src, (FORWARD_REPLY if p.kind == FORWARD else REPLY)
            w = SimReplyTo(
                m.deadline(),
                lambda reply: self.sim.net.send(Packet(back, self.id, src, (tag, reply))),
                self.incarnation,
                f"{p.kind} from {src} to {self.id}",
            )
            self.sim.checker.track(self, w)
            try:
                req = api.decode_request([frame], 1 << 20)
            except api.CruiseError as e:
                if p.kind == FORWARD:
                    self.sim.fail(f"{self.id} could not decode a request forwarded by {src}: {e}")
                w.reply(e.reply())
                return
            self.run(m.submit, req, w, frame)

    def complete_syncs(self) -> None:
        due = [s for s in self.syncs if s[0] <= self.sim.net.round]
        if not due:
            return
        self.syncs = [s for s in self.syncs if s[0] > self.sim.net.round]
        for _, seq, job in due:
            if self.member is None:  # crashed while sending what the last sync released
                return
            job.run()
            self.run(self.member.on_synced, seq, None)

    def complete_snapshots(self) -> None:
        due = [j for j in self.snapshot_jobs if j[0] <= self.sim.net.round]
        if not due:
            return
        self.snapshot_jobs = [j for j in self.snapshot_jobs if j[0] > self.sim.net.round]
        for _, index, job in due:
            if self.member is None:
                return
            if self.disk.full:
                err = OSError(errno.ENOSPC, "No space left on device (simulated)")
                self.run(self.member.on_snapshot_written, index, None, err)
            else:
                self.run(self.member.on_snapshot_written, index, self.disk.write_snapshot(job), None)

    def process(self) -> None:
        m = self.member
        if m is None or not self.wanted:
            return
        self.wanted = False
        log = m.raw.raft.log
        before = (m.raw.term, m.raw.role, log.committed)
        self.run(m.process)
        if self.member is not None and m.raw.role == "leader":
            # The moments that matter most: a leader that just won (before its no-op
            # spreads) and a leader whose commit index just moved (before it tells anyone).
            if before[:2] != (m.raw.term, "leader") or log.committed > before[2]:
                if self.sim.crash_now(self, "leader"):
                    self.sim.trace(
                        f"{self.id} crashes as leader of term {m.raw.term} at commit {log.committed}"
                    )
                    self.crash()
