"""The member simulator finds no violation in the real code, and finds each planted bug.

A checker never seen failing proves nothing. Each test below plants one bug that a
review of cruise found (or that the Raft literature warns about) back into the code,
and requires the simulator to report it within a bounded range of seeds.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import msgpack
import pytest

from cruise import simulation
from cruise.core import quorum, rawnode
from cruise.core import raft as raft_mod
from cruise.core import storage as storage_mod
from cruise.core.log import RaftLog
from cruise.core.messages import AppendEntries, AppendResponse, Heartbeat, ReadIndexResponse
from cruise.core.types import ReadState
from cruise.member import applier as applier_mod
from cruise.member import driver as driver_mod
from cruise.member import member as member_mod
from cruise.member import requests as requests_mod
from cruise.member import sessions as sessions_mod
from cruise.member import transfer as transfer_mod
from cruise.simulation import NetConfig, SimConfig, config_for, hostile, run_seed
from cruise.simulation import sim as sim_mod
from cruise.simulation.machine import DigestMachine
from cruise.timing import CoreTiming

pytestmark = pytest.mark.timeout(600)


def first_violation(seeds, cfg_for):
    """(seed, violation) of the first seed in ``seeds`` that reports one, else None."""
    for s in seeds:
        r = run_seed(s, cfg_for(s))
        if r.violation:
            return s, r.violation
    return None


def mixed(seed):
    """The fault mix the planted-bug tests below were written against (full disks, which came
    later, change the runs of the seeds that draw them; they have tests of their own)."""
    kinds = tuple(k for k in sim_mod.FAULT_KINDS if k != "diskfull")
    return config_for(seed, SimConfig(faults=kinds), None, mix=True)


def no_snapshots(cfg):
    """For bugs of the core: a snapshot written from the applied state can restore what a
    crash took from the log, which hides the very loss these tests look for."""
    return replace(cfg, snapshot_every=10**9)


def test_ci_seeds_pass(capsys):
    """300 seeds across cluster sizes 3-7, every fault kind mixed by seed (the CI run)."""
    rc = simulation.main(["--seeds", "300", "--jobs", "2"])
    out = capsys.readouterr().out
    assert "seeds=300 violations=0" in out, out
    assert "nodes=3,4,5,7" in out
    assert rc == 0


def test_same_seed_same_run():
    a, b = run_seed(7, mixed(7)), run_seed(7, mixed(7))
    assert (a.trace, a.committed, a.messages) == (b.trace, b.committed, b.messages)


# -- bug 1: a follower answered an append of an older term with a success at its last index ------
def test_planted_stale_term_success_is_caught(monkeypatch):
    """§5.3: a success acknowledges only what the consistency check matched. Answering an old
    term's append with ``last_index`` lets the sender, leading a later term, count a match that
    is not there."""
    orig = raft_mod.Raft.step

    def step(self, m):
        if m.term < self.term and isinstance(m, AppendEntries | Heartbeat):
            self._send(AppendResponse(self.term, self.id, m.frm, self.log.last_index()))
            return
        orig(self, m)

    monkeypatch.setattr(raft_mod.Raft, "step", step)
    found = first_violation(range(1, 301), lambda s: hostile(mixed(s)))
    assert found, "the simulator missed a false match from a stale-term answer"


# -- bug 2: at-most-once by "the last N seqs per client" ------------------------------------------
def test_planted_count_bounded_dedup_is_caught(monkeypatch):
    """§6.3: a session must refuse a seq older than it remembers; forgetting it re-applies a
    late copy."""
    orig = sessions_mod.Sessions.check

    def forgetful(self, client, seq):
        v = orig(self, client, seq)
        return sessions_mod.Verdict(sessions_mod.NEW) if v.kind == sessions_mod.STALE else v

    monkeypatch.setattr(sessions_mod.Sessions, "check", forgetful)
    found = first_violation(range(1, 301), mixed)
    assert found and "applied twice" in found[1], found


# -- bug 3: a waiter keyed only by index --------------------------------------------------------
def test_planted_waiter_by_index_is_caught(monkeypatch):
    """A proposal displaced from its index by a later term's proposal must be answered, and a
    retry may join only the proposal of its own (client, seq)."""

    def add(self, first, term, batch):
        for i, (r, w) in enumerate(batch, first):
            origin = None if r.client is None else (r.client, r.seq)
            self.by_index[i] = requests_mod.Pending(term, origin, w)
            if origin is not None:
                self.by_origin[origin] = i
        return []  # nothing reported displaced: the old waiter is silently overwritten

    def join(self, origin, waiter):
        i = self.by_origin.get(origin)
        p = None if i is None else self.by_index.get(i)
        if p is None:
            return False
        p.joined = [*(p.joined or []), waiter]
        return True

    monkeypatch.setattr(requests_mod.Proposals, "add", add)
    monkeypatch.setattr(requests_mod.Proposals, "join", join)
    monkeypatch.setattr(requests_mod.Pending, "answers", lambda self, term, origin: term == self.term)
    found = first_violation(range(1, 301), lambda s: replace(hostile(mixed(s)), request_timeout_ticks=150))
    assert found, "the simulator missed a waiter overwritten at its index"


# -- bug 4: read contexts numbered from 1 in every process ----------------------------------------
def test_planted_read_context_reuse_is_caught(monkeypatch):
    """Identifiers a peer may remember must not repeat across a member's restarts: an old read
    round's answer would release a new read with an old index."""
    orig = member_mod.Member.read

    def read_numbered_from_1(self, req, waiter, frame=None):
        # As before the fix: every process numbers its read contexts 1, 2, 3, ...
        self.__dict__.setdefault("_planted_ids", iter(range(1, 1 << 62)))
        self._ids, ids = self._planted_ids, self._ids
        try:
            orig(self, req, waiter, frame)
        finally:
            self._ids = ids

    monkeypatch.setattr(member_mod.Member, "read", read_numbered_from_1)
    found = first_violation(range(1, 301), lambda s: replace(hostile(mixed(s)), read_rate=0.8, writers=4))
    assert found and "read index" in found[1], found


def test_planted_forward_id_reuse_is_caught(monkeypatch):
    """The same for the ids of forwarded requests: an old answer would answer a new request."""
    monkeypatch.setattr(member_mod, "_ID_SPACE", 1)
    assert first_violation(range(1, 101), lambda s: hostile(mixed(s)))


# -- bug 5: feeding the core between ready() and advance() ------------------------------------------
def test_planted_soft_state_inside_ready_is_caught(monkeypatch):
    """A member that reacts to a new leader inside a Ready (re-routing a forwarded transfer to
    itself) feeds the core before advance(): the member must not raise."""
    orig = driver_mod.Driver.handle

    def handle(self, rd):
        if rd.soft_state is not None:
            self.on_soft_state(rd.soft_state)
        orig(self, rd)

    monkeypatch.setattr(driver_mod.Driver, "handle", handle)
    found = first_violation(range(1, 301), lambda s: replace(mixed(s), transfer_rate=0.3))
    assert found and "raised" in found[1], found


# -- bug 6: a timing the config loader accepts and the core refuses ----------------------------------
def test_planted_unchecked_timing_is_caught(monkeypatch):
    """The simulator draws timings as an operator might write them and uses the loader's
    conversion: a conversion that lets through what the core refuses makes a member raise."""

    def unchecked(heartbeat_ms, election_timeout_ms):
        lo, hi = election_timeout_ms
        tick = min(10, heartbeat_ms)
        return CoreTiming(tick, max(1, heartbeat_ms // tick), (max(2, lo // tick), max(2, hi // tick)))

    monkeypatch.setattr(sim_mod, "core_timing", unchecked)
    found = first_violation(range(1, 301), mixed)
    assert found and "could not start" in found[1], found


def test_planted_figure8_commit_by_counting_is_caught(monkeypatch):
    """§5.4.2: committing an entry of an earlier term by counting replicas loses it."""

    def buggy_maybe_commit(self):
        mci = quorum.committed_index({v: pr.match for v, pr in self.prs.items()}, self.voters)
        if mci > self.log.committed:  # no check that log.term(mci) == self.term
            self.log.commit_to(mci)
            self._dirty.update(v for v in self.voters if v != self.id)
            return True
        return False

    monkeypatch.setattr(raft_mod.Raft, "_maybe_commit", buggy_maybe_commit)
    found = first_violation(
        range(1, 601),
        lambda s: no_snapshots(replace(hostile(mixed(s)), nodes=3, partition_rate=0.01, crash_io=0.0)),
    )
    assert found, "the simulator missed a leader committing an old-term entry by counting"


def test_planted_double_vote_is_caught(monkeypatch):
    """§5.2: at most one vote per term. Forgetting the vote grants two."""
    orig = raft_mod.Raft._handle_vote_request

    def forgetful(self, m):
        self.vote = None
        orig(self, m)

    monkeypatch.setattr(raft_mod.Raft, "_handle_vote_request", forgetful)
    found = first_violation(range(1, 101), lambda s: replace(mixed(s), nodes=5))
    assert found


def test_planted_vote_not_persisted_is_caught(monkeypatch):
    """Figure 2: votedFor is persistent (PySyncObj #84 lost it)."""
    orig = storage_mod.MemoryStorage.set_hard_state
    monkeypatch.setattr(
        storage_mod.MemoryStorage,
        "set_hard_state",
        lambda self, hs: orig(self, type(hs)(hs.term, None, hs.commit)),
    )
    found = first_violation(range(1, 301), lambda s: replace(mixed(s), nodes=5, crash_rate=0.03))
    assert found


def test_planted_index_before_term_up_to_date_check_is_caught(monkeypatch):
    """§5.4.1: compare last terms before lengths (the seed compared indexes)."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, li, lt: li >= self.last_index())
    assert first_violation(range(1, 301), lambda s: no_snapshots(hostile(mixed(s))))


def test_planted_read_without_quorum_is_caught(monkeypatch):
    """§6.4: a leader must confirm it still leads before answering a read index."""
    monkeypatch.setattr(
        raft_mod.Raft, "_start_read_round", lambda self, reqs: self._answer_reads(self.log.committed, reqs)
    )
    # No crashes: the deposed leader must live on, unaware, and answer.
    found = first_violation(
        range(1, 301),
        lambda s: no_snapshots(
            replace(hostile(mixed(s)), read_rate=1.0, nodes=3, crash_rate=0, crash_io=0, leader_crash=0)
        ),
    )
    assert found and "read index" in found[1], found


def test_planted_leader_counting_its_unsynced_write_is_caught(monkeypatch):
    """With background fsync the leader may count its own copy only once the sync is done;
    counting it at write time loses committed entries when the leader crashes."""
    orig = rawnode.RawNode.advance

    def eager_count(self, rd, durable=True):
        orig(self, rd, durable)
        if not durable and rd.entries:
            self.raft.on_synced(rd.entries[-1].index, rd.entries[-1].term)

    monkeypatch.setattr(rawnode.RawNode, "advance", eager_count)
    # Lossy: the append to the other follower is lost, so the leader's premature count and
    # one follower's copy commit the entry, and the leader's crash then loses its own copy.
    found = first_violation(
        range(1, 301),
        lambda s: no_snapshots(
            replace(
                hostile(mixed(s)),
                background_sync=True,
                sync_delay=20,  # a slow disk: the leader's copy stays unsynced for long
                nodes=3,
                partition_rate=0,
                crash_io=0,
                net=NetConfig(loss=0.2, redeliver=0.0),
            )
        ),
    )
    assert found, "the simulator missed a leader counting an unsynced write"


def test_planted_liveness_failure_is_caught(monkeypatch):
    """After faults stop a leader must commit within the bound; followers that ignore every
    append make that impossible, and the checker must say so."""
    monkeypatch.setattr(raft_mod.Raft, "_handle_append", lambda self, m: None)
    res = run_seed(1, mixed(1))
    assert res.violation and res.violation.startswith("liveness")


# -- snapshots ------------------------------------------------------------------------------------
def snapshotting(seed):
    """Snapshots every few entries, nothing retained behind them: followers that fall
    behind can only catch up by InstallSnapshot."""
    return replace(mixed(seed), snapshot_every=3, retain_entries=0)


def test_snapshot_seeds_pass():
    """Compaction at every few entries, transfers in one-byte to 1 KiB chunks, background
    and inline snapshot writes: the invariants hold, and followers do get restored."""
    restores = 0
    for s in range(60):
        r = run_seed(s, snapshotting(s))
        assert r.violation is None, (s, r.violation, r.trace[-15:])
        restores += r.restores
    assert restores > 20


def test_planted_snapshot_without_sessions_is_caught(monkeypatch):
    """At-most-once must survive a snapshot: a snapshot that leaves out the session table
    lets a member restored from it apply a late copy a second time."""
    orig = applier_mod.Applier.snapshot

    def forgetful(self):
        snap = msgpack.unpackb(orig(self), raw=False, strict_map_key=False)
        snap["sessions"] = []
        return msgpack.packb(snap, use_bin_type=True)

    monkeypatch.setattr(applier_mod.Applier, "snapshot", forgetful)
    assert first_violation(range(60), snapshotting), "the simulator missed a snapshot without sessions"


def test_planted_restore_without_state_is_caught(monkeypatch):
    """A follower restored from a snapshot must hold the state every other member applied."""
    orig = applier_mod.Applier.restore

    def stateless(self, data, index):
        machine = self.machine.snapshot()
        orig(self, data, index)
        self.machine.restore(machine)  # the state machine keeps what it had

    monkeypatch.setattr(applier_mod.Applier, "restore", stateless)
    found = first_violation(range(60), snapshotting)
    assert found and "state machine safety" in found[1], found


def test_planted_unchecked_chunks_are_caught(monkeypatch):
    """Chunks that go missing must be sent again, and the whole checked: a follower that
    takes whatever offset arrives, and no checksum, installs a state that is not the
    leader's."""
    orig = transfer_mod.Incoming.on_chunk

    def careless(self, m):
        if self._key is not None and m.offset > len(self._buf):
            m = replace(m, offset=len(self._buf))  # take a later chunk as the next one
        # ... and believe whatever was assembled: the crc it "expects" is its own.
        return orig(self, replace(m, crc=zlib.crc32(m.data, self._crc)))

    monkeypatch.setattr(transfer_mod.Incoming, "on_chunk", careless)
    assert first_violation(range(60), snapshotting), "the simulator missed chunks taken out of order"


def test_planted_snapshot_of_the_live_state_is_caught(monkeypatch):
    """A snapshot encoded later must be of the state frozen when it was asked for; one that
    reads the live state then holds entries past its index, applied twice after a restore."""
    monkeypatch.setattr(DigestMachine, "snapshot_later", lambda self: lambda: iter((self.snapshot(),)))
    found = first_violation(range(60), lambda s: replace(snapshotting(s), background_snapshots=True))
    assert found and "state machine safety" in found[1], found


def test_planted_follower_read_batch_mixup_is_caught(monkeypatch):
    """A follower asks the leader once for all the reads of a turn; the answer confirms that
    batch only. Releasing later batches with it answers reads that arrived after the leader
    confirmed, with an index that may miss records acknowledged before them."""
    orig = raft_mod.Raft._step_follower

    def step(self, m):
        if isinstance(m, ReadIndexResponse):
            if not m.reject:
                for batch in self._read_batches.values():
                    self.read_states.extend(ReadState(m.index, ctx) for ctx in batch)
            self._read_batches.clear()
            return
        orig(self, m)

    monkeypatch.setattr(raft_mod.Raft, "_step_follower", step)
    found = first_violation(range(1, 61), lambda s: replace(hostile(mixed(s)), read_rate=1.0))
    assert found and "read index" in found[1], found


# -- membership -----------------------------------------------------------------------------------
def churning(seed):
    """Three voters, two spares, and an operator adding, promoting and removing members about
    every five ticks, on top of the seed's other faults."""
    cfg = replace(mixed(seed), membership_rate=0.2, spares=2, nodes=3)
    cfg.faults = tuple(sorted(set(cfg.faults) | {"membership"}))
    return cfg


def test_membership_churn_seeds_pass():
    changes = 0
    for s in range(1, 61):
        sim = simulation.Simulation(s, churning(s))
        r = sim.run()
        assert r.violation is None, (s, r.violation, r.trace[-15:])
        changes += sum(1 for e in sim.checker.applied.values() if e.kind == "config")
    assert changes > 60, changes


def test_planted_two_configuration_changes_in_flight_are_caught(monkeypatch):
    """One change at a time (§4.1): two uncommitted single-server changes are an arbitrary
    change, whose old and new majorities need not overlap."""
    orig = raft_mod.Raft.propose

    def propose(self, values):
        self.pending_conf_index = 0  # forget the change in flight
        return orig(self, values)

    monkeypatch.setattr(raft_mod.Raft, "propose", propose)
    # The member checks too (it answers nothing from a configuration not yet committed):
    # forget it there as well, so the core's rule is what is tested.
    from cruise.member import membership

    orig_submit = membership.Membership.submit

    def submit(self, req, waiter):
        self.raw.raft.pending_conf_index = 0
        return orig_submit(self, req, waiter)

    monkeypatch.setattr(membership.Membership, "submit", submit)
    found = first_violation(range(1, 301), churning)
    assert found, "the simulator missed two configuration changes in flight"


def test_planted_configuration_in_force_at_commit_is_caught(monkeypatch):
    """A configuration takes effect when its entry is appended (§4.1), not when it commits."""
    from cruise.core.confchange import ConfState, conf_of

    def committed_conf(self):
        value = self.log.conf_at(self.log.committed)
        if value is None:
            return ConfState(tuple(self.config.voters), tuple(self.config.learners))
        return conf_of(value) or ConfState((), ())

    orig_step = raft_mod.Raft.step

    def step(self, m):
        orig_step(self, m)
        self._conf_version = -1  # look again: a commit may have moved the configuration
        self._check_conf()

    monkeypatch.setattr(raft_mod.Raft, "conf_state", committed_conf)
    monkeypatch.setattr(raft_mod.Raft, "step", step)
    found = first_violation(range(1, 301), churning)
    assert found, "the simulator missed a configuration put in force at commit"


# -- data loss ------------------------------------------------------------------------------------
def losing_data(seed):
    """Three voters that crash often, every crash losing the data directory when the cluster
    can recognize it (``Simulation._may_wipe``); the operator removes and re-adds each."""
    cfg = replace(mixed(seed), nodes=3, crash_rate=0.02, restart_after=(2, 25), dataloss_share=1.0)
    cfg.faults = tuple(sorted(set(cfg.faults) | {"crash", "dataloss"}))
    return cfg


def test_data_loss_seeds_pass():
    wipes = 0
    for s in range(1, 101):
        r = run_seed(s, losing_data(s))
        assert r.violation is None, (s, r.violation, r.trace[-15:])
        wipes += r.wipes
    assert wipes >= 20, wipes


def test_planted_wiped_members_vote_counted_is_caught(monkeypatch):
    """A member that lost its data forgot its vote and its log; if the identity check lets its
    votes and acknowledgements count, a leader is elected without committed entries."""
    from cruise.member import identity

    monkeypatch.setattr(identity.IdentityGuard, "admit", lambda self, frm, msg_type, stamp: True)
    found = first_violation(range(1, 101), losing_data)
    assert found and "leader completeness" in found[1], found


# -- full disks -----------------------------------------------------------------------------------
def filling_disks(seed):
    """Disks fill up often and for long, snapshots every few entries (a follower's install
    of the leader's snapshot can meet the full disk too)."""
    return replace(snapshotting(seed), faults=(*mixed(seed).faults, "diskfull"), diskfull_rate=0.02)


def test_full_disk_seeds_pass():
    """A member whose writes are refused stands still and goes on when space returns: every
    invariant holds, and every record acknowledged is applied everywhere after."""
    fulls = 0
    for s in range(60):
        r = run_seed(s, filling_disks(s))
        assert r.violation is None, (s, r.violation, r.trace[-15:])
        fulls += r.disk_fulls
    assert fulls > 100, fulls


def quiet_filling_disks(seed):
    """Disks fill up often while one client writes: a member is idle between a commit and
    its next tick now and then, so the disk can fill there, before its next write meets it."""
    return replace(filling_disks(seed), diskfull_rate=0.05, writers=1, embedded_writers=0)


def test_a_disk_that_fills_between_writes_is_met_by_more_than_the_wal():
    """The cluster id is stored when a tick learns it; a full disk refuses that write too,
    and the member goes on with the id in memory, storing it once space returns."""
    for s in range(60):
        r = run_seed(s, quiet_filling_disks(s))
        assert r.violation is None, (s, r.violation, r.trace[-15:])


def test_planted_stop_on_a_refused_cluster_id_write_is_caught(monkeypatch):
    from cruise.member import identity

    monkeypatch.setattr(
        identity.IdentityGuard, "_save_cluster", lambda self: self.store.save_cluster(self.cluster)
    )
    found = first_violation(range(60), quiet_filling_disks)
    assert found and "No space left" in found[1], found


def test_planted_resume_without_the_refused_write_is_caught(monkeypatch):
    """A member that, when space returns, finishes the Ready without doing the write the full
    disk refused acknowledges entries it never stored."""

    def resume_skipping_the_write(self):
        stall = self.stalled
        if stall is None:
            return True
        self.stalled = None
        self._after_write(stall.rd, stall.committed, stall.leader)
        return True

    monkeypatch.setattr(driver_mod.Driver, "resume", resume_skipping_the_write)
    found = first_violation(range(60), filling_disks)
    assert found, "the simulator missed writes lost to a full disk"
