"""A deterministic cluster simulator for the core: one seed reproduces a whole run.

Theory of operation
-------------------
Time advances in *rounds*; every ``rounds_per_tick`` rounds each live node gets
one ``tick()``. A round:

1. faults may fire (crash or restart a node, start or heal a partition);
2. messages whose delivery round has come are delivered in a random order
   (a message between partitioned nodes, or to a crashed node, is lost);
3. every live node's ``Ready`` is handled the way the member runtime does it:
   eager messages out, entries and hard state into its ``MemoryStorage``, the
   other messages out, committed entries applied, ``advance()``. A crash may
   strike between the eager messages and the write, losing the write;
4. on tick rounds, every live node ticks; clients propose values to whoever
   believes it leads, ask for read indexes, and now and then ask for a
   leadership transfer.

The network loses, duplicates and delays messages (delay reorders them). A
crashed node loses everything but its ``MemoryStorage`` and restarts from it.

After every Ready and every round the checker asserts the safety properties of
the Raft paper (Figure 3): election safety (one leader per term), log matching,
leader completeness, state machine safety, and that a node's applied index
never goes back; it also checks read indexes (a confirmed read index covers
every entry committed before the read was asked). When the fault phase ends,
the network heals and every node restarts; a leader must then emerge and a
fresh proposal must be applied on every node within ``liveness_ticks``.

Nothing here reads a clock or global randomness: one ``random.Random(seed)``
drives faults, delays, workload and every node's election timeouts.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from .core import CoreConfig, MemoryStorage, NotLeader, ProposalDropped, RawNode, Role, VoteResponse, describe
from .core.types import Entry

FAULT_KINDS = ("loss", "dup", "delay", "partition", "crash")


@dataclass
class SimConfig:
    nodes: int = 3
    faults: tuple[str, ...] = FAULT_KINDS
    fault_ticks: int = 300  # length of the faulty phase
    liveness_ticks: int = 120  # bound for a leader + a commit after faults stop
    rounds_per_tick: int = 3
    loss: float = 0.05
    dup: float = 0.03
    max_delay: int = 6  # rounds; 1 when "delay" is off
    crash_rate: float = 0.004  # per node per tick
    # Targeted crashes at the moments that matter most: a leader that just won (before
    # its no-op spreads) and a leader whose commit index just moved.
    leader_crash: float = 0.05
    restart_after: tuple[int, int] = (5, 60)  # ticks a crashed node stays down
    partition_rate: float = 0.01  # per tick
    partition_len: tuple[int, int] = (10, 80)  # ticks
    propose_rate: float = 0.3  # per tick
    read_rate: float = 0.1  # per tick
    transfer_rate: float = 0.005  # per tick
    election_ticks: tuple[int, int] = (10, 20)
    max_msg_bytes: int = 4096  # small values force one entry per append and expose ordering bugs
    # Sync in the background like the member runtime: writes land at once, the fsync
    # completes 0..sync_delay rounds later, messages wait for it, a crash loses what
    # was not synced.
    async_sync: bool = False
    sync_delay: int = 4
    max_inflight: int = 8
    trace_len: int = 80


class Violation(AssertionError):
    pass


@dataclass
class SimResult:
    seed: int
    nodes: int
    violation: str | None = None
    trace: list[str] = field(default_factory=list)
    leaders: int = 0
    committed: int = 0
    crashes: int = 0
    partitions: int = 0
    messages: int = 0
    ticks: int = 0


class SimNode:
    def __init__(self, id: str, ids: tuple[str, ...], sim: Simulation) -> None:
        self.id = id
        self.ids = ids
        self.sim = sim
        self.storage = MemoryStorage()
        self.alive = True
        self.down_until = 0
        self.node: RawNode
        self.applied: int  # last index applied in this incarnation
        # Async sync: what survives a crash, and the syncs in flight, oldest first:
        # [done_round, checkpoint at request, durable points, held messages].
        self.synced = self.storage.checkpoint()
        self.syncs: deque[list] = deque()
        self.start()

    def start(self) -> None:
        cfg = CoreConfig(
            self.id,
            self.ids,
            election_ticks=self.sim.cfg.election_ticks,
            rng=random.Random(self.sim.rng.random()),
            max_msg_bytes=self.sim.cfg.max_msg_bytes,
            max_inflight=self.sim.cfg.max_inflight,
        )
        self.node = RawNode(cfg, self.storage)
        self.applied = self.node.raft.log.applied
        self.alive = True


class Simulation:
    def __init__(self, seed: int, cfg: SimConfig | None = None) -> None:
        self.seed = seed
        self.cfg = cfg or SimConfig()
        self.rng = random.Random(seed)
        self.ids = tuple(f"n{i + 1}" for i in range(self.cfg.nodes))
        self.nodes = {i: SimNode(i, self.ids, self) for i in self.ids}
        self.round = 0
        self.tick_no = 0
        # (deliver_round, seq, msg), kept as a list; small enough to scan.
        self.in_flight: list[tuple[int, int, object]] = []
        self._seq = 0
        self.partition: list[set[str]] | None = None
        self.partition_until = 0
        self.faulty = True
        self.trace: deque[str] = deque(maxlen=self.cfg.trace_len)
        self.result = SimResult(seed, self.cfg.nodes)
        # Checker state.
        self.leader_of_term: dict[int, str] = {}
        self.committed: dict[int, tuple[int, str, object]] = {}  # index -> (term, kind, value)
        self.committed_values: dict[object, int] = {}  # record value -> its committed index
        self.seen: dict[
            tuple[int, int], tuple[str, object, int]
        ] = {}  # (index, term) -> (kind, value, prev term)
        self.max_term: dict[str, int] = {}
        self.granted: dict[tuple[str, int], str] = {}  # (voter, term) -> candidate it voted for
        self.reads: dict[tuple[str, int], int] = {}  # (node, ctx) -> commit bound when asked
        self._read_seq = 0
        self._value_seq = 0

    # -- helpers ------------------------------------------------------------------
    def _t(self, text: str) -> None:
        self.trace.append(f"[r{self.round} t{self.tick_no}] {text}")

    def _fail(self, text: str) -> None:
        raise Violation(text)

    def _connected(self, a: str, b: str) -> bool:
        if self.partition is None:
            return True
        return any(a in g and b in g for g in self.partition)

    def _send(self, msg) -> None:
        f = self.cfg.faults
        if self.faulty and "loss" in f and self.rng.random() < self.cfg.loss:
            return
        copies = 2 if self.faulty and "dup" in f and self.rng.random() < self.cfg.dup else 1
        for _ in range(copies):
            delay = 1 + (self.rng.randrange(self.cfg.max_delay) if self.faulty and "delay" in f else 0)
            self._seq += 1
            self.in_flight.append((self.round + delay, self._seq, msg))
        self.result.messages += 1

    # -- the run ------------------------------------------------------------------------
    def run(self) -> SimResult:
        try:
            total_fault_rounds = self.cfg.fault_ticks * self.cfg.rounds_per_tick
            while self.round < total_fault_rounds:
                self.step()
            self._heal()
            self._check_liveness()
        except Violation as v:
            self.result.violation = str(v)
        except AssertionError as e:  # a core invariant fired: also a failure, with its trace
            self.result.violation = f"core assertion: {e!r}"
        self.result.trace = list(self.trace)
        self.result.ticks = self.tick_no
        self.result.committed = len(self.committed)
        return self.result

    def step(self) -> None:
        self.round += 1
        is_tick = self.round % self.cfg.rounds_per_tick == 0
        if is_tick:
            self.tick_no += 1
            if self.faulty:
                self._faults()
        self._deliver()
        for n in self.nodes.values():
            if n.alive:
                if n.syncs:
                    self._complete_syncs(n)
                self._handle_ready(n)
        if is_tick:
            for n in self.nodes.values():
                if n.alive:
                    n.node.tick()
            self._workload()

    def _faults(self) -> None:
        f = self.cfg.faults
        if "crash" in f:
            for n in self.nodes.values():
                if n.alive and self.rng.random() < self.cfg.crash_rate:
                    self._crash(n)
                elif not n.alive and self.tick_no >= n.down_until:
                    self._restart(n)
        if "partition" in f:
            if self.partition is None and self.rng.random() < self.cfg.partition_rate:
                ids = list(self.ids)
                self.rng.shuffle(ids)
                cut = self.rng.randrange(1, len(ids))
                self.partition = [set(ids[:cut]), set(ids[cut:])]
                self.partition_until = self.tick_no + self.rng.randint(*self.cfg.partition_len)
                self.result.partitions += 1
                self._t(f"partition {sorted(self.partition[0])} | {sorted(self.partition[1])}")
            elif self.partition is not None and self.tick_no >= self.partition_until:
                self.partition = None
                self._t("partition healed")

    def _crash(self, n: SimNode) -> None:
        if self.cfg.async_sync:
            n.storage.restore(n.synced)  # writes whose fsync had not completed are lost
            n.syncs.clear()
        n.alive = False
        n.down_until = self.tick_no + self.rng.randint(*self.cfg.restart_after)
        self.result.crashes += 1
        self._t(f"crash {n.id}")

    def _restart(self, n: SimNode) -> None:
        n.start()
        self._t(f"restart {n.id} term={n.node.term} last={n.node.raft.log.last_index()}")
        if n.node.term < self.max_term.get(n.id, 0):
            self._fail(
                f"{n.id} restarted with term {n.node.term} < {self.max_term[n.id]}: term not persisted"
            )

    def _deliver(self) -> None:
        due = [x for x in self.in_flight if x[0] <= self.round]
        if not due:
            return
        self.in_flight = [x for x in self.in_flight if x[0] > self.round]
        self.rng.shuffle(due)
        for _, _, msg in due:
            dst = self.nodes[msg.to]
            if not dst.alive or not self._connected(msg.frm, msg.to):
                continue
            self._t(describe(msg))
            dst.node.step(msg)

    def _handle_ready(self, n: SimNode) -> None:
        node = n.node
        rd = node.ready_if_any()  # as the member runtime does
        if rd is None:
            return
        crash_f = self.faulty and "crash" in self.cfg.faults
        # Targeted crash of a leader that just won: its writes reach its own disk only
        # (the paper's Figure 8 needs exactly such a leader).
        lone_write = (
            crash_f
            and rd.soft_state is not None
            and rd.soft_state.role == Role.LEADER
            and self.rng.random() < self.cfg.leader_crash
        )
        if not lone_write:
            for m in rd.eager_messages:
                self._send(m)
            if crash_f and rd.must_sync and self.rng.random() < self.cfg.crash_rate:
                # Crash after the eager sends, before the disk write: the write is lost.
                self._crash(n)
                return
        if rd.entries:
            self._check_new_entries(n, rd.entries)
            n.storage.append(rd.entries)
        if rd.hard_state is not None:
            n.storage.set_hard_state(rd.hard_state)
            if rd.hard_state.term < self.max_term.get(n.id, 0):
                self._fail(f"{n.id} term went back to {rd.hard_state.term}")
            if not self.cfg.async_sync:
                self.max_term[n.id] = rd.hard_state.term
        if lone_write:
            self._t(f"{n.id} wrote {len(rd.entries)} entries as new leader, crashes before sending")
            self._crash(n)
            return
        if self.cfg.async_sync and (rd.must_sync or n.syncs):
            if rd.must_sync:
                done = self.round + self.rng.randrange(self.cfg.sync_delay + 1)
                n.syncs.append([done, n.storage.checkpoint(), [], []])
            n.syncs[-1][2].append(node.durable_point(rd))
            n.syncs[-1][3].extend(rd.messages)
            held = True
        else:
            self._send_all(rd.messages)
            held = False
        if rd.soft_state is not None:
            s = rd.soft_state
            self._t(f"{n.id} is {s.role} term={s.term} leader={s.leader}")
            if s.role == Role.LEADER:
                self._check_new_leader(n, s.term)
        for e in rd.committed:
            self._check_apply(n, e)
        for rs in rd.read_states:
            bound = self.reads.pop((n.id, rs.ctx), None)
            if bound is not None and rs.index < bound:
                self._fail(f"{n.id} read index {rs.index} misses entry {bound} committed before the read")
        node.advance(rd, durable=not held)
        # Targeted crash of a leader whose commit index just moved, before it tells anyone.
        if (
            crash_f
            and node.role == Role.LEADER
            and rd.committed
            and self.rng.random() < self.cfg.leader_crash
        ):
            self._t(f"{n.id} crashes right after committing {rd.committed[-1].index}")
            self._crash(n)

    def _send_all(self, msgs) -> None:
        for m in msgs:
            if type(m) is VoteResponse and m.granted and not m.pre:
                prior = self.granted.setdefault((m.frm, m.term), m.to)
                if prior != m.to:
                    self._fail(f"{m.frm} voted for {prior} and {m.to} in term {m.term}")
            self._send(m)

    def _complete_syncs(self, n: SimNode) -> None:
        """Finish the node's background syncs that are due, in order."""
        while n.syncs and n.syncs[0][0] <= self.round:
            _, cp, points, msgs = n.syncs.popleft()
            n.synced = cp
            self.max_term[n.id] = max(self.max_term.get(n.id, 0), cp[1].term)
            for p in points:
                n.node.mark_durable(p)
            self._send_all(msgs)

    # -- checks -------------------------------------------------------------------------
    def _check_new_leader(self, n: SimNode, term: int) -> None:
        other = self.leader_of_term.get(term)
        if other is not None and other != n.id:
            self._fail(f"election safety: {other} and {n.id} both lead term {term}")
        self.leader_of_term[term] = n.id
        self.result.leaders += 1
        log = n.node.raft.log
        for idx, (t, _, _) in self.committed.items():
            if log.term(idx) != t:
                self._fail(
                    f"leader completeness: {n.id} leads term {term} without committed entry {idx} (term {t})"
                )

    def _check_new_entries(self, n: SimNode, ents: list[Entry]) -> None:
        log = n.node.raft.log
        for e in ents:
            prev_term = log.term(e.index - 1)
            key = (e.index, e.term)
            got = (e.kind, e.value, prev_term)
            want = self.seen.setdefault(key, got)
            if want != got:
                self._fail(f"log matching: {n.id} has {key} as {got}, another log has {want}")
            c = self.committed.get(e.index)
            if c is not None and e.index <= log.committed and c[0] != e.term:
                self._fail(f"{n.id} rewrites committed index {e.index}")

    def _check_apply(self, n: SimNode, e: Entry) -> None:
        if e.index != n.applied + 1:
            self._fail(f"{n.id} applied {e.index} after {n.applied}: applied index must move by one")
        n.applied = e.index
        got = (e.term, e.kind, e.value)
        want = self.committed.setdefault(e.index, got)
        if e.kind == "record":
            self.committed_values.setdefault(e.value, e.index)
        if want != got:
            self._fail(
                f"state machine safety: {n.id} applies {got} at {e.index}, another node applied {want}"
            )

    def _max_commit(self) -> int:
        return max((n.node.raft.log.committed for n in self.nodes.values() if n.alive), default=0)

    # -- workload ------------------------------------------------------------------------
    def _leaders(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive and n.node.role == Role.LEADER]

    def propose(self, n: SimNode | None = None) -> str | None:
        leaders = self._leaders()
        if not leaders:
            return None
        if n is None:
            n = self.rng.choice(leaders)
        self._value_seq += 1
        value = f"v{self._value_seq}"
        try:
            idx, term = n.node.propose(value)
        except ProposalDropped:
            return None
        self._t(f"propose {value} to {n.id}: {term}/{idx}")
        return value

    def _workload(self) -> None:
        if self.rng.random() < self.cfg.propose_rate:
            self.propose()
        if self.rng.random() < self.cfg.read_rate:
            live = [n for n in self.nodes.values() if n.alive]
            if live:
                n = self.rng.choice(live)
                self._read_seq += 1
                # Every entry committed anywhere before this moment must be covered.
                bound = max(
                    (
                        x.node.raft.log.committed
                        for x in self.nodes.values()
                        if x.alive and x.node.role == Role.LEADER
                    ),
                    default=0,
                )
                bound = max(bound, max(self.committed, default=0))
                if n.node.read_index(self._read_seq):
                    self.reads[(n.id, self._read_seq)] = bound
        if self.faulty and self.rng.random() < self.cfg.transfer_rate:
            leaders = self._leaders()
            if leaders:
                n = leaders[0]
                to = self.rng.choice(self.ids)
                try:
                    n.node.transfer_leader(to)
                    self._t(f"transfer {n.id} -> {to}")
                except NotLeader:
                    pass

    # -- liveness --------------------------------------------------------------------------
    def _heal(self) -> None:
        self.faulty = False
        self.partition = None
        for n in self.nodes.values():
            if not n.alive:
                self._restart(n)
        self._t("faults stop; network healed; all nodes up")

    def _check_liveness(self) -> None:
        deadline = self.tick_no + self.cfg.liveness_ticks
        value = None
        taken_by: tuple[str, int] | None = None  # (leader, term) that accepted ``value``
        while self.tick_no < deadline:
            self.step()
            if value is not None and value not in self.committed_values:
                # A leader may lose an uncommitted proposal when it loses leadership;
                # a client would retry, and so does the checker.
                lid, lterm = taken_by
                n = self.nodes[lid]
                if not (n.alive and n.node.role == Role.LEADER and n.node.term == lterm):
                    self._t(f"liveness probe {value} was lost with {lid}'s term {lterm}; retrying")
                    value = None
            if value is None and self.round % self.cfg.rounds_per_tick == 0:
                # Propose once a leader has committed an entry of its term.
                for n in self._leaders():
                    log = n.node.raft.log
                    if log.term(log.committed) == n.node.term:
                        value = self.propose(n)
                        if value is not None:
                            taken_by = (n.id, n.node.term)
                        break
            if value is not None and value in self.committed_values:
                index = self.committed_values[value]
                if all(n.applied >= index for n in self.nodes.values()):
                    return
        state = ", ".join(
            f"{n.id}:{n.node.role}/t{n.node.term}/c{n.node.raft.log.committed}" for n in self.nodes.values()
        )
        self._fail(
            f"liveness: no commit on every node within {self.cfg.liveness_ticks} ticks after faults stopped ({state})"
        )


def run_seed(seed: int, cfg: SimConfig) -> SimResult:
    return Simulation(seed, cfg).run()


def _config_for(seed: int, base: SimConfig, nodes: int | None, mix: bool) -> SimConfig:
    """Vary cluster size and fault mix by seed unless fixed on the command line."""
    r = random.Random(seed * 7919 + 1)
    cfg = SimConfig(**{k: getattr(base, k) for k in base.__dataclass_fields__})
    cfg.nodes = nodes if nodes is not None else r.choice((3, 3, 4, 5, 5, 7))
    if mix:
        kinds = [k for k in base.faults if r.random() < 0.75]
        cfg.faults = tuple(kinds or base.faults)
        # Intensity: some seeds crash often and restart fast, some append one entry per message.
        cfg.crash_rate = r.choice((0.002, 0.004, 0.01, 0.03))
        if cfg.crash_rate >= 0.01:
            cfg.restart_after = (2, 25)
        cfg.max_msg_bytes = r.choice((1, 4096))
        cfg.max_delay = r.choice((2, 6, 12))
        if r.random() < 0.3:
            cfg = hostile(cfg)
        cfg.async_sync = r.random() < 0.5
    return cfg


def hostile(cfg: SimConfig) -> SimConfig:
    """A profile that aims at commit-rule bugs (Figure 8): leaders crash right after
    winning or committing half the time, partitions come and go fast, and every append
    carries one entry so replication catches up piece by piece."""
    cfg.leader_crash = 0.5
    cfg.partition_rate = 0.05
    cfg.partition_len = (5, 30)
    cfg.max_msg_bytes = 1
    cfg.restart_after = (1, 20)
    return cfg


def _run_one(args: tuple[int, SimConfig]) -> SimResult:
    seed, cfg = args
    return run_seed(seed, cfg)


def _strip_seeds(argv: list[str] | None) -> str:
    """The command-line flags of this run minus the seed selection, to reproduce one seed."""
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    skip = False
    for x in args:
        if skip:
            skip = False
            continue
        if x in ("--seeds", "--start", "--seed", "--jobs"):
            skip = True
            continue
        if x.split("=")[0] in ("--seeds", "--start", "--seed", "--jobs"):
            continue
        out.append(x)
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="simulate", description="Run seeded fault schedules against the Raft core."
    )
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    p.add_argument("--start", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--seed", type=int, help="run just this seed and print its trace")
    p.add_argument("--nodes", type=int, help="cluster size (default: 3 to 7, varied by seed)")
    p.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated fault kinds from {','.join(FAULT_KINDS)}, or 'none' (default: all, mixed by seed)",
    )
    p.add_argument("--no-mix", action="store_true", help="use exactly --faults for every seed")
    p.add_argument("--ticks", type=int, default=SimConfig.fault_ticks, help="ticks of faults per seed")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--trace", type=int, default=40, help="trace lines to print for a failing seed")
    a = p.parse_args(argv)

    faults = () if a.faults == "none" else tuple(x.strip() for x in a.faults.split(",") if x.strip())
    bad = [x for x in faults if x not in FAULT_KINDS]
    if bad:
        p.error(f"unknown fault kind(s): {', '.join(bad)} (choose from {', '.join(FAULT_KINDS)})")
    if a.nodes is not None and not 1 <= a.nodes <= 9:
        p.error("--nodes must be between 1 and 9")
    if a.seeds < 1 or a.ticks < 1:
        p.error("--seeds and --ticks must be positive")
    base = SimConfig(faults=faults, fault_ticks=a.ticks)
    seeds = [a.seed] if a.seed is not None else list(range(a.start, a.start + a.seeds))
    work = [(s, _config_for(s, base, a.nodes, mix=not a.no_mix)) for s in seeds]

    t0 = time.monotonic()
    results: list[SimResult] = []
    failures: list[SimResult] = []
    show_progress = sys.stderr.isatty() and len(work) > 1
    if a.jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(a.jobs) as ex:
            for r in ex.map(_run_one, work, chunksize=4):
                results.append(r)
                if r.violation:
                    failures.append(r)
                if show_progress and len(results) % 50 == 0:
                    print(f"  {len(results)}/{len(work)} seeds, {len(failures)} violations", file=sys.stderr)
    else:
        for w in work:
            r = _run_one(w)
            results.append(r)
            if r.violation:
                failures.append(r)
            if show_progress and len(results) % 50 == 0:
                print(f"  {len(results)}/{len(work)} seeds, {len(failures)} violations", file=sys.stderr)
    dt = time.monotonic() - t0
    sizes = sorted({r.nodes for r in results})
    print(
        f"seeds={len(results)} violations={len(failures)} nodes={','.join(map(str, sizes))} "
        f"leaders={sum(r.leaders for r in results)} committed={sum(r.committed for r in results)} "
        f"crashes={sum(r.crashes for r in results)} partitions={sum(r.partitions for r in results)} "
        f"messages={sum(r.messages for r in results)} seconds={dt:.1f}"
    )
    for r in failures[:1]:
        print(f"FAILED seed={r.seed} nodes={r.nodes}: {r.violation}")
        print(f"reproduce: tools/simulate --seed {r.seed} {_strip_seeds(argv)}".rstrip())
        print("last steps:")
        for line in r.trace[-a.trace :]:
            print("  " + line)
    if a.seed is not None and not failures:
        for line in results[0].trace[-a.trace :]:
            print("  " + line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
