"""The simulator over the real core finds no violation; over a broken core it does.

A checker that has never been seen failing proves nothing, so each planted bug
below is one the Raft literature warns about, and the simulator must report it.
"""

import pytest

from cruise import simulation
from cruise.core import quorum
from cruise.core import raft as raft_mod
from cruise.core import storage as storage_mod
from cruise.core.log import RaftLog
from cruise.simulation import SimConfig, hostile, run_seed

pytestmark = pytest.mark.timeout(300)


def test_ci_seeds_pass(capsys):
    """At least 300 seeds across cluster sizes 3-7 and fault mixes (the CI run)."""
    rc = simulation.main(["--seeds", "360", "--jobs", "2"])
    out = capsys.readouterr().out
    assert "seeds=360 violations=0" in out, out
    assert "nodes=3,4,5,7" in out
    assert rc == 0


def violations(seeds, cfg):
    return [s for s in seeds if run_seed(s, cfg).violation]


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
    cfg = hostile(SimConfig(nodes=3, faults=("crash", "partition", "delay", "loss")))
    found = violations(range(1, 301), cfg)
    assert found, "the simulator missed a leader committing an old-term entry by counting"
    assert any("leader completeness" in run_seed(s, cfg).violation for s in found[:3])


def test_planted_double_vote_is_caught(monkeypatch):
    """§5.2: at most one vote per term. Forgetting the vote grants two."""
    orig = raft_mod.Raft._handle_vote_request

    def forgetful(self, m):
        self.vote = None
        orig(self, m)

    monkeypatch.setattr(raft_mod.Raft, "_handle_vote_request", forgetful)
    found = violations(range(1, 61), SimConfig(nodes=5))
    assert found
    assert any("voted for" in run_seed(s, SimConfig(nodes=5)).violation for s in found[:5])


def test_planted_vote_not_persisted_is_caught(monkeypatch):
    """Figure 2: votedFor is persistent (PySyncObj #84 lost it)."""
    orig = storage_mod.MemoryStorage.set_hard_state
    monkeypatch.setattr(
        storage_mod.MemoryStorage,
        "set_hard_state",
        lambda self, hs: orig(self, type(hs)(hs.term, None, hs.commit)),
    )
    cfg = SimConfig(nodes=5, crash_rate=0.03, restart_after=(2, 25), max_msg_bytes=1)
    assert violations(range(1, 301), cfg)


def test_planted_index_before_term_up_to_date_check_is_caught(monkeypatch):
    """§5.4.1: compare last terms before lengths (the seed compared indexes)."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, li, lt: li >= self.last_index())
    cfg = hostile(SimConfig(nodes=3))
    assert violations(range(1, 301), cfg)


def test_planted_read_without_quorum_is_caught(monkeypatch):
    """§6.4: a leader must confirm it still leads before answering a read index."""
    monkeypatch.setattr(
        raft_mod.Raft, "_start_read_round", lambda self, reqs: self._answer_reads(self.log.committed, reqs)
    )
    cfg = SimConfig(nodes=3, read_rate=0.5, partition_rate=0.05)
    found = violations(range(1, 201), cfg)
    assert found
    assert "read index" in run_seed(found[0], cfg).violation


def test_one_seed_reproduces_a_run():
    a = run_seed(1234, SimConfig(nodes=5))
    b = run_seed(1234, SimConfig(nodes=5))
    assert a.trace == b.trace and a.messages == b.messages and a.committed == b.committed


def test_planted_leader_counting_its_unsynced_write_is_caught(monkeypatch):
    """With background fsync the leader may count its own copy only once the sync is done;
    counting it at write time loses committed entries when the leader crashes."""
    from cruise.core import rawnode

    orig = rawnode.RawNode.advance

    def eager_count(self, rd, durable=True):
        orig(self, rd, durable)
        if not durable and rd.entries:
            self.raft.on_synced(rd.entries[-1].index, rd.entries[-1].term)

    monkeypatch.setattr(rawnode.RawNode, "advance", eager_count)
    cfg = SimConfig(nodes=3, async_sync=True, sync_delay=8)
    found = violations(range(1, 201), cfg)
    assert found, "the simulator missed a leader counting an unsynced write"


def test_async_sync_seeds_pass():
    cfg = SimConfig(nodes=5, async_sync=True, sync_delay=8)
    assert violations(range(1, 101), cfg) == []


def test_planted_liveness_failure_is_caught(monkeypatch):
    """After faults stop a leader must commit within the bound; followers that ignore
    every append make that impossible, and the checker must say so."""
    monkeypatch.setattr(raft_mod.Raft, "_handle_append", lambda self, m: None)
    res = run_seed(1, SimConfig(nodes=3))
    assert res.violation and res.violation.startswith("liveness")


def test_liveness_probe_lost_with_its_leader_is_retried():
    """Seed 4034 (found by the 10,000-seed run): the checker's probe went to a leader that
    lost its term before committing it, as Raft allows. A client retries; so does the
    checker, instead of reporting a liveness failure."""
    from cruise.simulation import FAULT_KINDS, _config_for

    cfg = _config_for(4034, SimConfig(faults=FAULT_KINDS), None, True)
    assert run_seed(4034, cfg).violation is None
