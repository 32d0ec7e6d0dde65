"""A deterministic simulation of whole members: one seed reproduces a whole run.

Theory of operation
-------------------
The members are the production :class:`cruise.member.Member` objects, each over a
:class:`~cruise.simulation.world.SimDisk` and a simulated network
(:mod:`~cruise.simulation.network`); clients (:mod:`~cruise.simulation.clients`)
talk to them through the same client protocol, encoded and decoded as on the wire.

Time moves in rounds; ``rounds_per_tick`` rounds make one core tick (``tick_ms``
of the member's clock, a ``FakeClock``). A round:

1. on tick rounds, faults may fire: a member crashes (it loses every write it did
   not sync) or restarts as a new process; a partition splits the members or cuts
   one direction between two of them, or heals;
2. the packets due this round are delivered in a random order;
3. background syncs that are due complete;
4. every member that asked to is processed (its Ready loop runs);
5. on tick rounds, members tick, sweep their deadlines every ``sweep_ticks``, and
   clients act.

Besides crashes at a round's edge, a member may crash at any write, sync or send of
its Ready loop, half-way through a turn.

When the fault phase ends, the network heals and stays reliable, every member
restarts, and within ``liveness_ticks`` a leader must emerge, every writer's record
in flight must be acknowledged, and a fresh record must reach every member. Then the
final checks run (:mod:`~cruise.simulation.checks`).

Nothing here reads a clock or global randomness: one ``random.Random(seed)`` drives
faults, delays, timing, the workload and every member's randomness.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field, replace

from brokerless.clock import FakeClock

from ..core import CoreConfig
from ..member import MemberConfig
from ..timing import core_timing
from .checks import Checker, Violation
from .clients import Operator, Reader, SimClient, Writer
from .network import REPLY, NetConfig, Network
from .world import SimMember

FAULT_KINDS = (
    "loss",
    "dup",
    "delay",
    "redeliver",
    "partition",
    "oneway",
    "crash",
    "transfer",
    "membership",
    "dataloss",
    "diskfull",
)


@dataclass
class SimConfig:
    nodes: int = 3
    faults: tuple[str, ...] = FAULT_KINDS
    fault_ticks: int = 300
    liveness_ticks: int = 400
    rounds_per_tick: int = 3
    # Timing in ms, as a config file gives it; None: drawn by seed (and refused draws
    # drawn again, as the config loader would refuse them).
    heartbeat_ms: int | None = None
    election_timeout_ms: tuple[int, int] | None = None
    request_timeout_ticks: int = 40
    client_timeout_ticks: int = 15  # shorter than the member's: retries overtake first copies
    sweep_ticks: int = 5
    net: NetConfig = field(default_factory=NetConfig)
    crash_rate: float = 0.004  # per member per tick
    crash_io: float = 0.002  # per write, sync or send
    leader_crash: float = 0.02  # per turn in which a leader won or moved its commit index
    restart_after: tuple[int, int] = (5, 60)  # ticks
    partition_rate: float = 0.01  # per tick
    partition_len: tuple[int, int] = (10, 80)  # ticks
    writers: int = 3
    embedded_writers: int = 1
    write_rate: float = 0.5  # chance per tick that an idle writer starts its next record
    read_rate: float = 0.1  # per tick
    transfer_rate: float = 0.01  # per tick
    # Membership: spare members start empty (as `join: true` does) and an operator adds,
    # promotes and removes members at this rate per tick. None: drawn per seed (0-2).
    spares: int | None = None
    membership_rate: float = 0.03
    # Data loss: this share of crashes loses the member's whole data directory (one member
    # at a time, in clusters of three voters or more), and the operator re-adds it.
    dataloss_share: float = 0.3
    # A member's disk fills up (every write refused) at this rate per member per tick, for
    # diskfull_len ticks; the member stands still and goes on when space returns.
    diskfull_rate: float = 0.002
    diskfull_len: tuple[int, int] = (5, 80)
    background_sync: bool = False
    sync_delay: int = 4  # rounds
    max_msg_bytes: int = 4096
    max_inflight: int = 8
    session_window: int = 8  # small, so late copies fall outside it
    # Snapshots: None draws per seed (often every few entries, sometimes never); chunks
    # are small so that transfers take many of them.
    snapshot_every: int | None = None
    retain_entries: int | None = None
    snapshot_chunk_bytes: int | None = None
    background_snapshots: bool | None = None
    trace_len: int = 80


@dataclass
class SimResult:
    seed: int
    nodes: int
    violation: str | None = None
    trace: list[str] = field(default_factory=list)
    leaders: int = 0
    committed: int = 0
    acked: int = 0
    crashes: int = 0
    partitions: int = 0
    messages: int = 0
    ticks: int = 0
    restores: int = 0  # states replaced by a snapshot (at a restart or from the leader)
    wipes: int = 0  # members that lost their data directory
    disk_fulls: int = 0  # times a member's disk filled up


class Simulation:
    def __init__(self, seed: int, cfg: SimConfig | None = None) -> None:
        self.seed = seed
        self.cfg = cfg = cfg or SimConfig()
        self.rng = random.Random(seed)
        initial = tuple(f"n{i + 1}" for i in range(cfg.nodes))
        r = random.Random(f"snapshots-{seed}")  # drawn apart from the run's own stream
        spares = 0
        if "membership" in cfg.faults:
            spares = cfg.spares if cfg.spares is not None else r.choice((0, 1, 2))
        self.ids = initial + tuple(f"s{i + 1}" for i in range(spares))
        self.initial = initial
        self.attempts = itertools.count(1)
        self.net = Network(replace(cfg.net), random.Random(self.rng.random()))  # a copy: runs may share cfg
        self._apply_fault_kinds()
        self.trace_lines: deque[str] = deque(maxlen=cfg.trace_len)
        self.result = SimResult(seed, cfg.nodes)
        self.checker = Checker(self)
        self.faulty = True
        self.tick_no = 0
        self.partition_until = 0
        self._leading: dict[str, int] = {}  # member -> term it was last seen leading
        timing = self._timing()
        self.tick_ms = timing.tick_ms
        # A long delay outlasts the longest election timeout.
        self.net.cfg.long_delay_rounds = max(
            self.net.cfg.long_delay_rounds, 2 * timing.election_ticks[1] * cfg.rounds_per_tick
        )
        self.clock = FakeClock()
        # Drawn apart from the run's own stream, so a run without snapshots is the run it was
        # before snapshots existed (planted-bug tests keep finding what they found).
        every = cfg.snapshot_every or r.choice((3, 8, 20, 50, 10**9))
        retain = cfg.retain_entries if cfg.retain_entries is not None else r.choice((0, 2, 10, 40))
        chunk = cfg.snapshot_chunk_bytes or r.choice((1, 16, 64, 1024))
        self.background_snapshots = (
            cfg.background_snapshots if cfg.background_snapshots is not None else r.random() < 0.5
        )
        self.addresses = {i: sim_addresses(i) for i in self.ids}
        self.members: dict[str, SimMember] = {}
        for i in self.ids:
            core = CoreConfig(
                i,
                initial if i in initial else (),  # a spare starts in no configuration
                election_ticks=timing.election_ticks,
                heartbeat_ticks=timing.heartbeat_ticks,
                rng=random.Random(self.rng.random()),
                max_msg_bytes=cfg.max_msg_bytes,
                max_inflight=cfg.max_inflight,
            )
            mc = MemberConfig(
                core,
                tuple(x for x in initial if x != i),
                tuple({**self.addresses[x], "voter": True} for x in initial),
                request_timeout=cfg.request_timeout_ticks * self.tick_ms / 1000.0,
                snapshot_every=every,
                retain_entries=retain,
                snapshot_chunk_bytes=chunk,
            )
            try:
                self.members[i] = SimMember(self, i, mc)
            except Exception as e:  # a configuration the loader accepted and the member refuses
                self.result.violation = f"{i} could not start: {type(e).__name__}: {e}"
                break
        self.clients: dict[str, SimClient] = {}
        for k in range(cfg.writers):
            # Sequential and pipelining clients, the deepest at the session window.
            depth = (1, cfg.session_window // 2, cfg.session_window)[k % 3]
            self._add(Writer(self, f"w{k + 1}", depth=depth))
        for k in range(cfg.embedded_writers):
            self._add(Writer(self, f"e{k + 1}", session=False))
        self._add(Reader(self, "r1"))
        self.operator = Operator(self, "o1")
        self._add(self.operator)

    def _add(self, c: SimClient) -> None:
        self.clients[c.id] = c

    def _apply_fault_kinds(self) -> None:
        f, n = self.cfg.faults, self.net.cfg
        if "loss" not in f:
            n.loss = 0.0
        if "dup" not in f:
            n.dup = 0.0
        if "delay" not in f:
            n.max_delay, n.long_delay = 1, 0.0
        if "redeliver" not in f:
            n.redeliver = 0.0

    def _timing(self):
        """The configured timing, or one drawn for this seed the way an operator might
        write it (close to the limits); a draw the config loader refuses is drawn again."""
        cfg = self.cfg
        if cfg.heartbeat_ms is not None and cfg.election_timeout_ms is not None:
            return core_timing(cfg.heartbeat_ms, cfg.election_timeout_ms)
        r = random.Random(self.rng.random())
        while True:
            hb = r.randint(5, 50)
            lo = r.randint(hb + 1, 12 * hb)
            hi = r.randint(lo, 2 * lo)
            try:
                t = core_timing(hb, (lo, hi))
            except ValueError:
                continue
            if t.election_ticks[0] >= 4:  # below that the simulated network is too slow to elect
                return t

    def _slack(self) -> float:
        """How late past its deadline a request may be answered: two sweeps."""
        return 2 * self.cfg.sweep_ticks * self.tick_ms / 1000.0

    # -- helpers for the world ----------------------------------------------------------------------
    def member_seed(self) -> int:
        return self.rng.getrandbits(64)

    def trace(self, text: str) -> None:
        self.trace_lines.append(f"[r{self.net.round} t{self.tick_no}] {text}")

    def fail(self, text: str) -> None:
        raise Violation(text)

    def crash_now(self, sm: SimMember, where: str) -> bool:
        if not (self.faulty and "crash" in self.cfg.faults):
            return False
        p = self.cfg.leader_crash if where == "leader" else self.cfg.crash_io
        m = sm.member
        if where == "send" and m is not None and m.raw.raft.role == "leader":
            log = m.raw.raft.log
            if log.term(log.committed) != m.raw.term:
                # A leader whose term has committed nothing yet, as it sends: its new
                # entries may reach some followers, or none (the paper's Figure 8).
                p = max(p, self.cfg.leader_crash / 8)
        return self.rng.random() < p

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> SimResult:
        if self.result.violation:
            return self.result
        try:
            rounds = self.cfg.fault_ticks * self.cfg.rounds_per_tick
            while self.net.round < rounds:
                self.step()
            self._heal()
            self._check_liveness()
            # Let every deadline pass, then check that every request was answered.
            for _ in range(
                (self.cfg.request_timeout_ticks + 2 * self.cfg.sweep_ticks) * self.cfg.rounds_per_tick
            ):
                self.step()
            self.checker.final(self.clock.now(), self._slack())
        except Violation as v:
            self.result.violation = str(v)
        except AssertionError as e:
            self.result.violation = f"assertion: {e!r}"
        r = self.result
        r.trace = list(self.trace_lines)
        r.ticks = self.tick_no
        r.committed = len(self.checker.applied)
        r.acked = len(self.checker.acked)
        r.leaders = self.checker.leaders
        r.messages = self.net.sent
        return r

    def step(self) -> None:
        net = self.net
        net.round += 1
        self.clock.jump(self.tick_ms / 1000.0 / self.cfg.rounds_per_tick)
        is_tick = net.round % self.cfg.rounds_per_tick == 0
        if is_tick:
            self.tick_no += 1
            if self.faulty:
                self._faults()
        for p in net.due():
            if p.kind == REPLY:
                self.clients[p.dst].on_reply(*p.body)
            else:
                self.members[p.dst].deliver(p)
        for sm in self.members.values():
            if sm.alive:
                sm.complete_syncs()
                sm.complete_snapshots()
                sm.process()
                self._check_leader(sm)
        if is_tick:
            sweep = self.tick_no % self.cfg.sweep_ticks == 0
            for sm in self.members.values():
                if sm.member is not None:
                    sm.run(sm.member.tick)
                if sm.member is not None and sweep:
                    sm.run(sm.member.sweep)
            if sweep:
                self.checker.check_waiters(self.clock.now(), self._slack())
            for c in self.clients.values():
                c.act(self.tick_no)

    def _check_leader(self, sm: SimMember) -> None:
        m = sm.member
        if m is not None and m.raw.raft.role == "leader" and self._leading.get(sm.id) != m.raw.term:
            self._leading[sm.id] = m.raw.term
            self.trace(f"{sm.id} leads term {m.raw.term}")
            self.checker.on_leader(sm, m.raw.term)

    def _faults(self) -> None:
        cfg, rng, f = self.cfg, self.rng, self.cfg.faults
        if "crash" in f:
            for sm in self.members.values():
                if sm.alive and rng.random() < cfg.crash_rate:
                    self.trace(f"{sm.id} crashes")
                    sm.crash()
                    sm.down_until = self.tick_no + rng.randint(*cfg.restart_after)
                    self.result.crashes += 1
                    if "dataloss" in f and rng.random() < cfg.dataloss_share and self._may_wipe(sm):
                        self.trace(f"{sm.id} loses its data directory")
                        sm.wipe()
                        self.operator.readd(sm.id)
                        self.result.wipes += 1
        for sm in self.members.values():
            if not sm.alive and self.tick_no >= sm.down_until:
                if sm.down_until == 0:  # crashed inside its Ready loop: down from now
                    sm.down_until = self.tick_no + rng.randint(*cfg.restart_after)
                    self.result.crashes += 1
                    continue
                self.trace(f"{sm.id} restarts")
                sm.down_until = 0
                sm.start()
        if "diskfull" in f:
            for sm in self.members.values():
                if sm.disk.full and self.tick_no >= sm.full_until:
                    self.trace(f"{sm.id}'s disk has space again")
                    sm.disk.full = False
                elif not sm.disk.full and rng.random() < cfg.diskfull_rate:
                    self.trace(f"{sm.id}'s disk is full")
                    sm.disk.full = True
                    sm.full_until = self.tick_no + rng.randint(*cfg.diskfull_len)
                    self.result.disk_fulls += 1
        if self.net.cuts and self.tick_no >= self.partition_until:
            self.trace("partition heals")
            self.net.heal()
        elif not self.net.cuts and rng.random() < cfg.partition_rate:
            kinds = [k for k in ("partition", "oneway") if k in f]
            if kinds:
                self._partition(rng.choice(kinds))

    def _may_wipe(self, victim: SimMember) -> bool:
        """Whether ``victim`` may lose its data now and the cluster be expected to recognize
        it: no other member waits to be re-added and no membership change may be in flight,
        the cluster has three voters or more (so the rest can commit its removal), every
        initial member holds the committed cluster id, and every other member binds the
        victim to its incarnation."""
        if (
            self.operator.readds
            or self.tick_no - self.operator.last_change < self.cfg.request_timeout_ticks + 60
        ):
            # Nor while a membership change the operator asked for may still be in flight: a
            # member removed while another lost its data can leave two voters, one of them
            # empty, and no quorum ever again (an operator's mistake, not the cluster's).
            return False
        if any(self.members[i].data.cluster == 0 for i in self.initial):
            return False
        voters = [sm.member.raw.raft.voters for sm in self.members.values() if sm.member is not None]
        if not voters or min(len(v) for v in voters) < 3:
            return False
        # Every other member, up, and binding the victim to the directory it is about to lose:
        # a candidate that does not hold that binding cannot tell the wiped member from a
        # voter that never spoke (the limit ``cruise.member.identity`` documents).
        inc = victim.data.incarnation
        others = [sm for sm in self.members.values() if sm is not victim]
        return all(sm.member is not None and sm.member.identity.bound(victim.id) == inc for sm in others)

    def _partition(self, kind: str) -> None:
        rng = self.rng
        self.partition_until = self.tick_no + rng.randint(*self.cfg.partition_len)
        self.result.partitions += 1
        if kind == "oneway":
            a, b = rng.sample(self.ids, 2)
            self.net.cut_one_way(a, b)
            if rng.random() < 0.5:  # and sometimes more: a member that hears but is not heard
                for other in self.ids:
                    if other != a:
                        self.net.cut_one_way(a, other)
            self.trace(f"one-way cut from {a} ({sorted(self.net.cuts)})")
            return
        ids = list(self.ids)
        rng.shuffle(ids)
        k = rng.randint(1, len(ids) - 1)
        groups = [set(ids[:k]), set(ids[k:])]
        leaders = [
            sm.id for sm in self.members.values() if sm.member is not None and sm.member.raw.role == "leader"
        ]
        if leaders and rng.random() < 0.5:
            # Isolate the leader: it goes on taking records it cannot commit, then comes back.
            groups = [{leaders[0]}, set(self.ids) - {leaders[0]}]
        self.net.split(groups)
        self.trace(f"partition {sorted(groups[0])} | {sorted(groups[1])}")

    def _conf(self) -> tuple[str, ...]:
        """The members of the leader's configuration (empty when no member leads)."""
        for sm in self.members.values():
            if sm.member is not None and sm.member.raw.role == "leader":
                return sm.member.raw.raft.conf_state().members
        return ()

    # -- the end ------------------------------------------------------------------------------------
    def _heal(self) -> None:
        self.faulty = False
        self.net.quiet()
        for c in self.clients.values():
            if isinstance(c, Writer):
                c.limit = c.seq  # finish the record in flight, start no other
        for sm in self.members.values():
            sm.disk.full = False
            if not sm.alive:
                sm.down_until = 0
                sm.start()
        self.trace("faults stop; network healed; disks have space; every member up")

    def _check_liveness(self) -> None:
        deadline = self.tick_no + self.cfg.liveness_ticks
        probe: Writer | None = None
        probe_seq = 0
        while self.tick_no < deadline:
            self.step()
            writers = [c for c in self.clients.values() if isinstance(c, Writer) and c.session]
            if probe is None and writers and all(w.idle() for w in writers):
                probe = writers[0]
                # Its next record is the probe: it must reach every member.
                probe_seq = probe.limit = probe.seq + 1
            if probe is not None and probe.seq >= probe_seq and probe.idle():
                _, index = self.checker.acked[(probe.id, probe_seq)]
                # Every member of the configuration in force (removed members and spares
                # never added hear nothing more).
                conf = self._conf()
                if conf and all(self.members[i].applied >= index for i in conf):
                    return
        state = ", ".join(
            f"{sm.id}:{sm.member.raw.role}/t{sm.member.raw.term}/c{sm.member.raw.raft.log.committed}"
            for sm in self.members.values()
            if sm.member is not None
        )
        busy = [c.id for c in self.clients.values() if not c.idle()]
        self.fail(
            f"liveness: not every record acknowledged and applied everywhere within "
            f"{self.cfg.liveness_ticks} ticks after faults stopped ({state}; waiting: {busy})"
        )


def run_seed(seed: int, cfg: SimConfig | None = None) -> SimResult:
    return Simulation(seed, cfg).run()


def sim_addresses(id: str) -> dict[str, str]:
    """Made-up addresses for member ``id``: the protocol requires them, the network ignores them."""
    port = 7000 + 10 * (int(id[1:]) + (50 if id[0] == "s" else 0))
    return {
        "id": id,
        "raft": f"tcp://127.0.0.1:{port}",
        "client": f"tcp://127.0.0.1:{port + 1}",
        "publish": f"tcp://127.0.0.1:{port + 2}",
    }
