"""Rules of the Raft paper, one test each; the docstring quotes the rule and its section."""

import pytest

from cruise.core import (
    AppendEntries,
    AppendResponse,
    Entry,
    HardState,
    Heartbeat,
    NotLeader,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)

from .util import make_leader, node, persist, storage_with

IDS = ("1", "2", "3")
IDS5 = ("1", "2", "3", "4", "5")


def test_leader_only_commits_entries_of_its_term_by_counting():
    """§5.4.2 (Figure 8): "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by counting."
    """
    st = storage_with([1, 1], HardState(2, None, 1))  # index 2 is from term 1, uncommitted
    n = node("1", IDS5, st)
    make_leader(n, st, IDS5)  # leader of term 3; its no-op is index 3
    assert n.term == 3 and n.raft.log.last_index() == 3
    # Two followers acknowledge index 2 only: with the leader, a majority holds it.
    n.step(AppendResponse(3, "2", "1", 2))
    n.step(AppendResponse(3, "3", "1", 2))
    persist(n, st)
    assert n.raft.log.committed == 1, "an entry of term 1 must not commit by counting in term 3"
    # Once a majority holds the no-op of term 3, it commits and index 2 with it.
    n.step(AppendResponse(3, "2", "1", 3))
    n.step(AppendResponse(3, "3", "1", 3))
    rd = persist(n, st)
    assert n.raft.log.committed == 3
    assert [e.index for e in rd.committed] == [2, 3]


def test_vote_once_per_term():
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." The vote is in the hard state, so it must sync."""
    n = node("3", IDS)
    n.step(RequestVote(1, "1", "3", 0, 0))
    n.step(RequestVote(1, "2", "3", 0, 0))
    rd = n.ready()
    votes = [(m.to, m.granted) for m in rd.messages if isinstance(m, VoteResponse)]
    assert votes == [("1", True), ("2", False)]
    assert rd.hard_state.vote == "1" and rd.must_sync


def test_vote_survives_restart():
    """Figure 2: currentTerm and votedFor are persistent state; a restarted node
    that voted must not vote again for someone else in the same term."""
    n = node("3", IDS)
    st = n.raft.log.storage
    n.step(RequestVote(1, "1", "3", 0, 0))
    persist(n, st)
    again = node("3", IDS, st)
    again.step(RequestVote(1, "2", "3", 0, 0))
    rd = again.ready()
    assert [m.granted for m in rd.messages] == [False]


def test_up_to_date_compares_last_term_first():
    """§5.4.1: "If the logs have last entries with different terms, then the log with the
    later term is more up-to-date. If the logs end with the same term, then whichever log
    is longer is more up-to-date." (The seed compared indexes first.)"""
    st = storage_with([1, 1, 1, 1, 1])  # long log, old term
    n = node("3", IDS, st)
    n.step(RequestVote(3, "1", "3", 2, 2))  # shorter log, later term: wins
    assert n.ready().messages[0].granted
    st2 = storage_with([1, 2])
    m = node("3", IDS, st2)
    m.step(RequestVote(3, "1", "3", 5, 1))  # longer log, earlier term: loses
    assert not m.ready().messages[0].granted


def test_higher_term_resets_vote_and_role():
    """§5.1: "If a server receives a request with a higher term, it updates its term and
    reverts to follower state." A new term starts with no vote (the seed never cleared it)."""
    st = storage_with([], HardState(1, "2", 0))
    n = node("1", IDS, st)
    n.step(Heartbeat(5, "2", "1", 0))
    rd = n.ready()
    assert rd.hard_state == HardState(5, None, 0)
    assert n.role == "follower" and n.leader == "2"


def test_stale_term_message_is_answered_not_obeyed():
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request." The answer carries our term so a deposed leader steps down."""
    st = storage_with([1], HardState(4, None, 0))
    n = node("1", IDS, st)
    n.step(AppendEntries(2, "2", "1", 1, 1, (Entry(2, 2, "record", "x"),), 0))
    rd = n.ready()
    assert n.raft.log.last_index() == 1
    # Index 0: no consistency check ran, so the answer acknowledges nothing (see below).
    assert rd.messages == [AppendResponse(4, "1", "2", 0)]


@pytest.mark.parametrize(
    "stale",
    [
        AppendEntries(1, "1", "2", 1, 1, (Entry(2, 1, "record", "e2"),), 0),
        Heartbeat(1, "1", "2", 1),
    ],
    ids=["append", "heartbeat"],
)
def test_stale_term_append_answer_is_not_an_acknowledgement(stale):
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request"; §5.3: a leader may count a follower's entry toward a commit only once the
    follower acknowledged it after the consistency check. The answer to a stale append
    carries only the receiver's term (index 0, etcd-raft's lower-term MsgAppResp): it is
    meant for a deposed leader, but may reach the same node leading a later term, which
    must not read it as "my log matches yours up to my last index"."""
    # 1 led term 1 and sent ``stale`` then; it arrives late, after 1 won term 3.
    lst = storage_with([1, 1], HardState(2, None, 1))
    leader = node("1", IDS, lst)
    make_leader(leader, lst, IDS)  # term 3: 1/1 1/2 3/3 noop, its own copy durable
    assert leader.term == 3 and leader.raft.prs["1"].match == 3
    # 2 voted for 1 in term 3, but its entries 2-3 came from the leader of term 2: they
    # conflict with 1's log from index 2 on, although its last index is 1's last index too.
    fst = storage_with([1, 2, 2], HardState(3, "1", 1))
    follower = node("2", IDS, fst)
    follower.step(stale)
    rd = persist(follower, fst)
    assert fst.last_index() == 3 and fst.term(3) == 2, "the stale append changed the log"
    answers = [m for m in rd.messages if isinstance(m, AppendResponse)]
    assert len(answers) == 1 and answers[0].term == 3, "the answer tells the sender our term"
    pr = leader.raft.prs["2"]
    before = (pr.match, pr.next, pr.state, pr.probe_sent)
    leader.step(answers[0])
    persist(leader, lst)
    assert (pr.match, pr.next, pr.state, pr.probe_sent) == before, "a stale answer moved 2's progress"
    assert leader.raft.log.committed == 1, "2's entry 3 is of term 2, not the leader's 3/3"
    assert answers == [AppendResponse(3, "2", "1", 0)]


def test_append_rejects_on_missing_prev_and_hints_conflict_term():
    """§5.3: "Reply false if log doesn't contain an entry at prevLogIndex whose term matches
    prevLogTerm." The reply points at the last index whose term is <= prevLogTerm, so the
    leader skips a whole term per round trip."""
    st = storage_with([1, 1, 1, 4, 4, 4, 4])
    n = node("2", IDS, st)
    n.step(AppendEntries(6, "1", "2", 9, 5, (), 0))  # past our end
    n.step(AppendEntries(6, "1", "2", 7, 5, (), 0))  # term 4 entries conflict with leader's 5
    rd = n.ready()
    assert [(m.reject, m.hint_index, m.hint_term) for m in rd.messages] == [(True, 7, 4), (True, 7, 4)]
    n.advance(rd)
    n.step(AppendEntries(6, "1", "2", 6, 3, (), 0))  # leader's term at 6 is 3: skip every term-4 entry
    rd = n.ready()
    assert (rd.messages[0].hint_index, rd.messages[0].hint_term) == (3, 1)


def test_leader_uses_hint_to_skip_a_term():
    """§5.3 optimisation: with the follower's conflict term the leader moves nextIndex past
    all its entries of newer terms in one step."""
    st = storage_with([1, 1, 1, 2, 2, 2])
    n = node("1", IDS, st)
    make_leader(n, st, IDS)  # term 3, last index 7 (no-op); next for others is 7
    n.step(AppendResponse(3, "2", "1", 6, reject=True, hint_index=5, hint_term=1))
    rd = persist(n, st)
    app = [m for m in rd.eager_messages if isinstance(m, AppendEntries) and m.to == "2"]
    assert app and app[0].prev_index == 3, "the leader's last index with term <= 1 is 3"


def test_follower_keeps_matching_entries_on_duplicate_append():
    """§5.3 receiver rule 3: "If an existing entry conflicts with a new one (same index but
    different terms), delete the existing entry and all that follow it." An old, repeated
    append with matching entries must delete nothing (PySyncObj truncated here)."""
    st = storage_with([1, 1, 1, 1])
    n = node("2", IDS, st)
    n.step(AppendEntries(1, "1", "2", 1, 1, (Entry(2, 1, "record", "e2"),), 0))
    rd = persist(n, st)
    assert n.raft.log.last_index() == 4 and not rd.entries
    assert rd.messages[0].index == 2  # acknowledges what this message covered


def test_follower_truncates_at_first_conflict():
    st = storage_with([1, 1, 1, 1])
    n = node("2", IDS, st)
    n.step(AppendEntries(2, "1", "2", 2, 1, (Entry(3, 2, "record", "new"),), 0))
    rd = persist(n, st)
    assert [(e.index, e.term) for e in rd.entries] == [(3, 2)]
    assert st.last_index() == 3 and st.term(3) == 2


def test_commit_is_bounded_by_last_new_entry():
    """§5.3 receiver rule 5: "set commitIndex = min(leaderCommit, index of last new entry)"."""
    st = storage_with([1, 1, 1, 9, 9])  # entries 4-5 are stale leftovers
    n = node("2", IDS, st)
    n.step(AppendEntries(10, "1", "2", 3, 1, (), 5))
    persist(n, st)
    assert n.raft.log.committed == 3


def test_persist_before_send():
    """Figure 2: respond to RPCs only after updating stable storage. Votes and append
    acknowledgements are in ``messages`` (after the sync), never in ``eager_messages``."""
    n = node("2", IDS)
    n.step(RequestVote(1, "1", "2", 0, 0))
    rd = n.ready()
    assert rd.must_sync and rd.messages and not rd.eager_messages
    n.advance(rd)
    n.step(AppendEntries(1, "1", "2", 0, 0, (Entry(1, 1, "noop"),), 0))
    rd = n.ready()
    assert rd.entries and rd.must_sync and rd.messages and not rd.eager_messages


def test_leader_appends_before_its_own_sync_but_counts_itself_only_after():
    """Dissertation §10.2.1: the leader may send appends while it writes its own disk, but
    it counts itself toward commitment only once its write is durable."""
    st = storage_with([])
    n = node("1", IDS, st)
    make_leader(n, st, IDS)
    n.step(AppendResponse(1, "2", "1", 1))  # followers hold the no-op: streaming state
    n.step(AppendResponse(1, "3", "1", 1))
    persist(n, st)
    n.propose("x")
    rd = n.ready()
    assert any(isinstance(m, AppendEntries) and m.entries for m in rd.eager_messages)
    assert n.raft.prs["1"].match == 1, "the leader counted an entry it has not written"
    st.append(rd.entries)
    n.advance(rd)  # the runtime reports the write durable
    assert n.raft.prs["1"].match == 2 and n.raft.log.committed == 1
    n.step(AppendResponse(1, "2", "1", 2))
    persist(n, st)
    assert n.raft.log.committed == 2


def test_proposal_to_follower_names_the_leader():
    n = node("2", IDS)
    n.step(Heartbeat(1, "1", "2", 0))
    try:
        n.propose("x")
    except NotLeader as e:
        assert e.leader == "1"
    else:
        raise AssertionError("a follower accepted a proposal")


def test_check_quorum_leader_steps_down():
    """Dissertation §6.2: a leader steps down if an election timeout passes without a
    successful round of heartbeats to a majority."""
    st = storage_with([])
    n = node("1", IDS, st)
    make_leader(n, st, IDS)
    for _ in range(21):
        n.tick()
    assert n.role == "follower"


def test_timeout_now_starts_election_ignoring_lease():
    """§3.10: the transfer target starts an election at once; voters grant it even inside
    their leader lease, because the request is marked as a transfer."""
    n = node("3", IDS)
    n.step(Heartbeat(1, "1", "3", 0))
    persist(n, n.raft.log.storage)
    n.step(TimeoutNow(1, "1", "3"))
    rd = n.ready()
    rvs = [m for m in rd.messages if isinstance(m, RequestVote)]
    assert n.term == 2 and rvs and all(m.transfer and not m.pre for m in rvs)
    voter = node("2", IDS)
    voter.step(Heartbeat(1, "1", "2", 0))
    persist(voter, voter.raft.log.storage)
    voter.step(rvs[0] if rvs[0].to == "2" else rvs[1])
    assert voter.ready().messages[0].granted
