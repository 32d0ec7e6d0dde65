"""Hypothesis drives one core with arbitrary (even hostile) messages and ticks and checks
invariants that must hold whatever a peer sends: the term never decreases, one vote per
term, the commit index never goes back and never passes the log, applied <= committed."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cruise.core import (
    AppendEntries,
    AppendResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    ReadIndex,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)

from .util import node, persist

IDS = ("1", "2", "3")
peer = st.sampled_from(["2", "3"])
term = st.integers(0, 6)
idx = st.integers(0, 8)


@st.composite
def entries(draw, prev):
    terms = draw(st.lists(st.integers(1, 6), max_size=4))
    return tuple(Entry(prev + 1 + i, t, "record", i) for i, t in enumerate(sorted(terms)))


@st.composite
def messages(draw):
    kind = draw(st.sampled_from(["rv", "vr", "ae", "ar", "hb", "hr", "tn", "ri", "tick"]))
    t, frm = draw(term), draw(peer)
    if kind == "tick":
        return "tick"
    if kind == "rv":
        return RequestVote(
            t, frm, "1", draw(idx), draw(term), pre=draw(st.booleans()), transfer=draw(st.booleans())
        )
    if kind == "vr":
        return VoteResponse(t, frm, "1", draw(st.booleans()), pre=draw(st.booleans()))
    if kind == "ae":
        prev = draw(idx)
        return AppendEntries(t, frm, "1", prev, draw(term), draw(entries(prev)), draw(idx))
    if kind == "ar":
        return AppendResponse(t, frm, "1", draw(idx), draw(st.booleans()), draw(idx), draw(term))
    if kind == "hb":
        return Heartbeat(t, frm, "1", draw(idx), draw(st.none() | st.integers(0, 3)))
    if kind == "hr":
        return HeartbeatResponse(t, frm, "1", draw(st.none() | st.integers(0, 3)))
    if kind == "tn":
        return TimeoutNow(t, frm, "1")
    return ReadIndex(t, frm, "1", draw(st.integers(0, 3)))


@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(st.lists(messages(), max_size=60), st.booleans())
def test_invariants_hold_for_any_input(msgs, propose_when_leader):
    n = node("1", IDS)
    storage = n.raft.log.storage
    votes: dict[int, str] = {}
    last_term = last_commit = 0
    for m in msgs:
        if m == "tick":
            n.tick()
        else:
            # Peers may send commit indexes past our log; the core must bound them itself.
            n.step(m)
        if propose_when_leader and n.role == "leader":
            n.propose("p")
        rd = persist(n, storage)
        r = n.raft
        assert r.term >= last_term
        if r.vote is not None:
            assert votes.setdefault(r.term, r.vote) == r.vote, "two votes in one term"
        assert r.log.committed >= last_commit
        assert r.log.committed <= r.log.last_index()
        assert r.log.applied <= r.log.committed
        for out in rd.messages + rd.eager_messages:
            assert out.term <= r.term or isinstance(out, VoteResponse)
        last_term, last_commit = r.term, r.log.committed
