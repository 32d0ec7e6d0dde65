"""§7 log compaction in the core: a leader whose log no longer holds what a follower lacks
sends its snapshot; the follower replaces its log with it; the runtime's report of a
failed transfer sends it again."""

from cruise.core import AppendEntries, AppendResponse, HeartbeatResponse, InstallSnapshot, SnapshotMeta
from cruise.core.progress import REPLICATE, SNAPSHOT

from .util import make_leader, node, persist, storage_with

IDS = ("n1", "n2", "n3")


def compacted_leader():
    st = storage_with([1] * 10)
    st.save_snapshot(8, 1, b"state")
    st.compact(8)
    n1 = node("n1", IDS, st)
    make_leader(n1, st, IDS)
    return n1, st


def probe_to_snapshot(n1, st):
    """n2 has nothing: its rejection walks the leader back below its first index."""
    n1.step(AppendResponse(n1.term, "n2", "n1", 10, reject=True, hint_index=0))
    return sent_to(persist(n1, st), "n2")


def sent_to(rd, to):
    return [m for m in rd.eager_messages + rd.messages if m.to == to]


def test_a_follower_behind_the_compaction_point_gets_the_snapshot():
    n1, st = compacted_leader()
    msgs = probe_to_snapshot(n1, st)
    assert msgs == [InstallSnapshot(n1.term, "n1", "n2", 8, 1)]
    assert n1.raft.prs["n2"].state == SNAPSHOT
    # Nothing else goes to it while the snapshot is on its way, heartbeats answered or not.
    n1.step(HeartbeatResponse(n1.term, "n2", "n1"))
    assert not [m for m in n1.raft.msgs if m.to == "n2"]
    # Its answer at the snapshot's index moves it to REPLICATE and the rest follows.
    n1.step(AppendResponse(n1.term, "n2", "n1", 8))
    assert n1.raft.prs["n2"].state == REPLICATE
    (app,) = sent_to(persist(n1, st), "n2")
    assert isinstance(app, AppendEntries) and app.prev_index == 8 and app.entries


def test_a_failed_transfer_is_sent_again_after_the_next_probe():
    n1, st = compacted_leader()
    probe_to_snapshot(n1, st)
    n1.report_snapshot("n2", ok=False)
    assert n1.raft.prs["n2"].state == "probe"
    n1.step(HeartbeatResponse(n1.term, "n2", "n1"))
    assert sent_to(persist(n1, st), "n2") == [InstallSnapshot(n1.term, "n1", "n2", 8, 1)]


def test_the_follower_replaces_its_log_and_answers_after_saving():
    st = storage_with([1, 1, 2])  # a stale tail from an old term
    n2 = node("n2", IDS, st)
    n2.step(InstallSnapshot(3, "n1", "n2", 8, 3))
    rd = n2.ready()
    assert rd.snapshot == SnapshotMeta(8, 3) and rd.must_sync
    assert rd.committed == [] and rd.entries == []
    assert rd.messages == [AppendResponse(3, "n2", "n1", 8)]  # only after the snapshot is saved
    st.save_snapshot(8, 3, b"state")
    st.compact(8)
    n2.advance(rd)
    assert (n2.raft.log.committed, n2.raft.log.applied, n2.raft.log.first_index()) == (8, 8, 9)
    # An older or equal snapshot afterwards changes nothing, and claims only the commit index.
    n2.step(InstallSnapshot(3, "n1", "n2", 5, 2))
    assert persist(n2, st).messages == [AppendResponse(3, "n2", "n1", 8)]


def test_a_snapshot_of_entries_the_follower_holds_only_moves_its_commit():
    st = storage_with([1, 1, 1, 1])
    n2 = node("n2", IDS, st)
    n2.step(InstallSnapshot(1, "n1", "n2", 3, 1))
    rd = n2.ready()
    assert rd.snapshot is None and n2.raft.log.committed == 3
    # Entry 4 may still conflict with the leader's log: the answer claims 3, not 4.
    assert rd.messages == [AppendResponse(1, "n2", "n1", 3)]
