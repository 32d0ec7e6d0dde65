"""Member: one cruise member's decisions, as a plain object with an injected clock.

Theory of operation
-------------------
Inputs, each from the adapter's loop (``cruise.node``) or the simulator:

- ``tick()``: one core tick passed (every ``MemberConfig.tick_ms``);
- ``on_peer(msg, stamp)``: a decoded peer message and the identity it came with (the
  adapter checked that it came on the connection of the member it names; ``identity.py``
  decides whether it may count);
- ``submit(request, waiter, frame)``: a decoded client request; ``waiter`` is where
  its one answer goes, ``frame`` the encoded request (reused when forwarding);
- ``on_forward_reply(rid, reply)``: a leader's answer to a request forwarded to it;
- ``on_synced(seq, error)``: a background fsync completed;
- ``on_snapshot_written(index, handle, error)``: a background snapshot write completed;
- ``sweep()``: every 50 ms or so, answers requests whose deadline passed;
- ``process()``: the end of a loop turn: propose what the turn collected, then run the
  Ready loop (``driver.py``). Inputs call ``schedule()``, so the adapter runs
  ``process()`` once after whatever burst of inputs it was handling.

Outputs go through the ports (``ports.py``): peer messages, forwarded requests and
published entries through the ``Transport``, writes and syncs to the ``Disk``,
answers to each request's ``ReplyTo``. Nothing here touches a socket, a file, a
thread or the real clock.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import api
from ..core import CoreConfig, Message, RawNode
from ..core.messages import InstallSnapshot, SnapshotAck, SnapshotChunk
from ..core.types import SnapshotMeta, SoftState
from ..errors import UNAVAILABLE
from ..fsm import StateMachine
from .applier import Applier
from .diskfull import Standstill
from .driver import Driver
from .forwarding import Forwarding
from .handover import Handovers
from .identity import UNSTAMPED, IdentityGuard, MemoryIdentity, Stamp, new_id
from .intake import Intake
from .membership import Membership
from .ports import Clock, Disk, IdentityStore, ReplyTo, SnapshotWriter, Syncer, Transport
from .reads import Read, Reads
from .reports import Reports
from .requests import Proposals
from .snapshots import Snapshots
from .transfer import CHUNK_BYTES, Incoming, Streams

MAX_PENDING = 100_000  # requests waiting for a commit, a leader, a forward or a read
_ID_SPACE = 1 << 62
# What a member standing still on a full disk still takes: none of them feeds the core.
# Records go to the intake, which refuses them there (after answering a retry of one already
# applied from the session table), on the sockets' hot path and here alike.
_ANSWERED_WHEN_STALLED = frozenset({api.Status, api.Health, api.Entries, api.Record})


@dataclass(frozen=True, slots=True)
class MemberConfig:
    core: CoreConfig
    peers: tuple[str, ...]  # every other member's id
    members: tuple[dict[str, Any], ...]  # as `status` shows them
    request_timeout: float = 5.0  # seconds a request may wait for a leader or a commit
    max_pending: int = MAX_PENDING
    snapshot_every: int = 10_000  # entries applied between snapshots
    retain_entries: int = 100_000  # entries kept behind a snapshot for late readers
    snapshot_chunk_bytes: int = CHUNK_BYTES

    @property
    def id(self) -> str:
        return self.core.id


def _null_log(event: str, **kw: Any) -> None:
    pass


class Member:
    def __init__(
        self,
        config: MemberConfig,
        disk: Disk,
        machine: StateMachine,
        transport: Transport,
        clock: Clock,
        *,
        schedule: Callable[[], None],
        drain_peers: Callable[[], None] = lambda: None,
        syncer: Syncer | None = None,
        snapshot_writer: SnapshotWriter | None = None,
        identity: IdentityStore | None = None,
        rng: random.Random | None = None,
        log: Callable[..., None] = _null_log,
    ) -> None:
        self.config = config
        self.id = config.id
        self.clock = clock
        self.log = log
        self._schedule = schedule
        self.disk = disk
        self.applier = Applier(machine)
        # Start from the newest snapshot, then the log after it (raises CorruptLog for a
        # damaged snapshot: the member must not serve from a state it cannot trust).
        saved = disk.load_snapshot()
        if saved is not None:
            self.applier.restore(saved[2], saved[0])
        self.raw = RawNode(config.core, disk, applied=self.applier.applied, logger=self._core_event)
        self.streams = Streams(
            self.id, self.raw, disk, transport, chunk_bytes=config.snapshot_chunk_bytes, log=log
        )
        transport = self.transport = self.streams
        self.incoming = Incoming(self.id, self.raw, transport)
        self.snapshots = Snapshots(
            self.raw,
            disk,
            self.applier,
            snapshot_writer,
            every=config.snapshot_every,
            retain=config.retain_entries,
            log=log,
        )
        self.proposals = Proposals()
        self.reads = Reads()
        rng = rng or random.Random()
        # Context and request ids of this process start at a random point, so they never
        # meet the ids of this member's earlier processes (a peer may still hold those).
        self._ids = iter(range(rng.randrange(_ID_SPACE), 1 << 63))
        self.forwarding = Forwarding(
            transport, f"member-{self.id}-{rng.getrandbits(48):012x}", next(self._ids)
        )
        self.identity = IdentityGuard(
            self.id,
            self.raw,
            identity or MemoryIdentity(new_id(rng)),
            random.Random(rng.getrandbits(64)),
            log,
        )
        self.identity.on_new_incarnation = self._new_incarnation
        self.driver = Driver(
            self.raw,
            disk,
            transport,
            self.applier,
            self.proposals,
            self.reads,
            syncer=syncer,
            drain_peers=drain_peers,
            on_soft_state=self._on_soft_state,
            install=self._install,
        )
        self.driver.callback_failed = lambda index, exc: log(
            "on_apply_callback_failed",
            index=index,
            error=repr(exc),
            traceback="".join(traceback.format_exception(exc)),
        )
        # Called with the index after the state was replaced by a leader's snapshot.
        self.on_restore: list[Callable[[int], None]] = []
        self._kicked = False
        self.failed: BaseException | None = None
        self.standstill = Standstill(self.driver, clock, log)
        self.intake = Intake(
            self.raw,
            self.applier.sessions,
            self.proposals,
            busy=self._busy,
            route=self._route,
            kick=self.kick,
            halted=self.standstill.halted,
        )
        self.membership = Membership(self.id, self.raw, config.members, self.proposals, self.identity, log)
        self.handovers = Handovers(self.raw, self.membership.is_member, self._route)
        self.reports = Reports(
            self.id,
            self.raw,
            self.applier,
            self.snapshots,
            self.membership,
            self.identity,
            self.standstill,
        )
        self._dispatch: dict[type, Callable[[Any, ReplyTo, bytes | None], None]] = {
            api.Record: self.intake.take,
            api.Status: lambda req, w, frame: w.reply(self.reports.status()),
            api.Health: lambda req, w, frame: w.reply(self.reports.health()),
            api.Entries: lambda req, w, frame: w.reply(self.reports.entries(req)),
            api.ReadIndexReq: self.read,
            api.Query: self.read,
            api.TransferLeader: self.handovers.ask,
            api.AddMember: self.change_membership,
            api.RemoveMember: self.change_membership,
            api.PromoteMember: self.change_membership,
        }
        self._conf_version = -1
        self.sync_members()

    # -- inputs ----------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.driver.stalled is not None:
            if self.standstill.retry():
                self.kick()
            return
        self.identity.tick()
        if not (self.identity.needs_readd and self.raw.raft.role != "leader"):
            self.raw.tick()  # a member that lost its data does not campaign
        self.streams.tick()
        self.membership.tick()
        self.sync_members()
        self.kick()

    def on_peer(self, msg: Message | SnapshotChunk | SnapshotAck, stamp: Stamp = UNSTAMPED) -> bool:
        """Feed a peer message; False (and nothing fed) when it is not for this member. A
        message its sender's identity does not let count is dropped here (``identity.py``
        logs that once per sender)."""
        # From any other member, in our configuration or not: a member whose configuration
        # is behind (it missed the entry that re-added the leader) must still follow it.
        if msg.to != self.id or msg.frm == self.id:
            return False
        if self.driver.stalled is not None:
            return True  # standing still on a full disk: lost, as on a lossy network
        t = type(msg)
        if t is InstallSnapshot:
            # Never sent between members: the leader streams chunks, and the follower's own
            # Incoming steps this into its core once all of them arrived intact. One from the
            # wire would ask the core to install bytes nobody holds.
            return True
        if not self.identity.admit(msg.frm, t, stamp):
            return True
        if t is SnapshotChunk:
            self.incoming.on_chunk(msg)  # type: ignore[arg-type]
        elif t is SnapshotAck:
            self.streams.on_ack(msg)  # type: ignore[arg-type]
        else:
            self.raw.step(msg)  # type: ignore[arg-type]
        self.sync_members()
        self.kick()
        return True

    def stamp(self, to: str) -> Stamp:
        """The identity to send with a message to ``to``."""
        return self.identity.stamp(to)

    def _new_incarnation(self, id: str) -> None:
        """A member not bound to an incarnation came back as another (its data is gone): what
        the leader knew of its log is void."""
        self.raw.raft.forget_progress(id)
        self.log("peer_new_incarnation", peer=id, action="replicating to it from the start")

    def sync_members(self) -> None:
        """Tell the transport who the members are when the configuration changed (before
        anything of the turn that changed it is sent)."""
        version = self.raw.raft.log.conf_version
        if version != self._conf_version:
            self._conf_version = version
            self.transport.set_members([m for m in self.membership.members() if m["id"] != self.id])

    def submit(self, req: api.Request, waiter: ReplyTo, frame: bytes | None = None) -> None:
        if self.driver.stalled is not None and type(req) not in _ANSWERED_WHEN_STALLED:
            waiter.reply(api.error(UNAVAILABLE, self.standstill.message()))
            return
        self._dispatch[type(req)](req, waiter, frame)
        self.kick()

    def on_forward_reply(self, rid: int, reply: dict[str, Any]) -> None:
        self.forwarding.on_reply(rid, reply)

    def on_synced(self, seq: int, error: BaseException | None = None) -> None:
        if error is not None:
            # The disk may have dropped our writes; nothing we promise can be trusted.
            self.failed = error
            self.log("fsync_failed", error=str(error), action="stopping the member")
            return
        self.driver.on_synced(seq)
        self.kick()

    def on_snapshot_written(self, index: int, handle: Any, error: BaseException | None = None) -> None:
        self.snapshots.on_written(index, handle, error)
        self.kick()

    def kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self._schedule()

    def process(self) -> None:
        """The end of a loop turn: propose the turn's records, then run the Ready loop."""
        self._kicked = False
        if self.driver.stalled is not None:
            return  # the intake refuses records while the member stands still
        self.intake.propose()
        self.driver.turn()
        if self.driver.stalled is not None:
            self.standstill.began(self.raw.raft.role)
            self.intake.refuse(api.error(UNAVAILABLE, self.standstill.message()))
            return
        if self.streams.failed or self.streams.finished:
            self.streams.report()
            self.driver.turn()
        self.snapshots.maybe_take()

    def _install(self, meta: SnapshotMeta) -> None:
        """Inside a Ready: install the leader's snapshot (``snapshots.py``), then tell the
        ``on_restore`` listeners."""
        self.snapshots.install(meta, self.incoming.take)
        for cb in self.on_restore:
            cb(meta.index)

    # -- routing to the leader -------------------------------------------------------------------
    def _route(self, req: api.Request, waiter: ReplyTo, frame: bytes | None) -> None:
        leader = self.raw.leader
        if leader is None or leader == self.id:
            self.forwarding.park(req, waiter, frame)
        elif not self.membership.is_member(leader):
            waiter.reply(api.error(UNAVAILABLE, f"leader {leader} is not a known member", leader=leader))
        else:
            self.forwarding.forward(leader, req, waiter, frame)

    def _resubmit(self, items: list) -> None:
        for p in items:
            self._dispatch[type(p.request)](p.request, p.waiter, p.frame)

    def _on_soft_state(self, s: SoftState) -> None:
        """Called by the driver after ``advance()``: the core may be fed again here."""
        self.log(
            "role_changed",
            role="candidate" if s.role == "pre-candidate" else s.role,
            term=s.term,
            leader=s.leader,
            commit_index=self.raw.raft.log.committed,
            last_index=self.raw.raft.log.last_index(),
        )
        if s.leader is None:
            return
        self.handovers.led_by(s.leader)
        self._resubmit(self.forwarding.take_moved(s.leader))
        self._resubmit(self.forwarding.take_parked())
        self.kick()

    # -- reads and membership changes ------------------------------------------------------------
    def read(self, req: api.ReadIndexReq | api.Query, waiter: ReplyTo, frame: bytes | None = None) -> None:
        ctx = next(self._ids)
        if not self.raw.read_index(ctx):
            self.forwarding.park(req, waiter, None)
            return
        self.reads.asked_for(ctx, Read(req, waiter))

    def change_membership(self, req: Any, waiter: ReplyTo, frame: bytes | None = None) -> None:
        if self.raw.raft.role != "leader":
            self._route(req, waiter, frame)
        else:
            self.membership.submit(req, waiter)
            self.sync_members()

    # -- deadlines -------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Answer what waited too long; route what waits for a leader if one is known now."""
        now = self.clock.now()
        err = api.error(UNAVAILABLE, "no leader or no quorum within the request timeout")
        if self.raw.leader is not None:
            err["leader"] = self.raw.leader
        expired = self.proposals.expire(now) + self.forwarding.expire(now) + self.reads.expire(now)
        for w in expired:
            w.reply(err)
        self.membership.expire(now)
        self.handovers.expire(now)
        if self.raw.leader is not None and self.forwarding.parked and self.driver.stalled is None:
            self._resubmit(self.forwarding.take_parked())
        self.kick()

    def deadline(self) -> float:
        return self.clock.now() + self.config.request_timeout

    def waiters(self) -> list[ReplyTo]:
        """Every request still waiting for an answer."""
        out = [w for _, w in self.intake.batch]
        out.extend(self.proposals.waiters())
        out.extend(self.forwarding.waiters())
        out.extend(self.reads.waiters())
        out.extend(self.handovers.waiters())
        out.extend(self.membership.waiters())
        return out

    def _busy(self) -> bool:
        return len(self.proposals) + len(self.forwarding) + len(self.reads) > self.config.max_pending

    def _core_event(self, event: str, **kw: Any) -> None:
        raw = getattr(self, "raw", None)
        self.log(event, commit_index=raw.raft.log.committed if raw is not None else None, **kw)
