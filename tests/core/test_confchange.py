"""Configurations in the core: what a config entry states, which changes are one server's,
and that a configuration is in force from the moment its entry is appended until it is
truncated (§4.1)."""

import pytest

from cruise.core import AppendEntries, AppendResponse, Entry
from cruise.core.confchange import ConfState, conf_of, single_change
from cruise.core.errors import ProposalDropped

from .util import make_leader, node, persist, storage_with

IDS = ("n1", "n2", "n3")


def conf(*voters, learners=()):
    return {
        "members": [{"id": v, "voter": True} for v in voters] + [{"id": x, "voter": False} for x in learners]
    }


def test_conf_of_reads_ids_and_voter_flags_only():
    assert conf_of(conf("b", "a", learners=("c",))) == ConfState(("a", "b"), ("c",))
    assert conf_of({"members": [{"id": "a", "raft": "tcp://x:1"}]}) == ConfState(("a",), ())
    for bad in (None, {}, {"members": "a"}, {"members": [{"id": 1}]}, conf("a", "a")):
        assert conf_of(bad) is None


@pytest.mark.parametrize(
    "old,new,ok",
    [
        (ConfState(("a", "b")), ConfState(("a", "b"), ("c",)), True),  # add a learner
        (ConfState(("a", "b"), ("c",)), ConfState(("a", "b", "c")), True),  # promote it
        (ConfState(("a", "b", "c")), ConfState(("a", "b")), True),  # remove a voter
        (ConfState(("a", "b")), ConfState(("a", "b", "c")), False),  # a voter straight in
        (ConfState(("a", "b")), ConfState(("a",), ("b",)), False),  # demote
        (ConfState(("a", "b")), ConfState(("a", "b"), ("c", "d")), False),  # two at once
        (ConfState(("a",)), ConfState(()), False),  # the last voter
    ],
)
def test_single_change(old, new, ok):
    assert (single_change(old, new) is None) == ok


def test_a_configuration_is_in_force_when_appended_and_undone_when_truncated():
    st = storage_with([1, 1])
    n2 = node("n2", IDS, st)
    n2.step(
        AppendEntries(1, "n1", "n2", 2, 1, (Entry(3, 1, "config", conf("n1", "n2", learners=("n3",))),), 2)
    )
    assert (n2.raft.voters, n2.raft.learners) == (("n1", "n2"), ("n3",))  # uncommitted, in force
    persist(n2, st)
    # A leader of term 2 replaces entry 3: the configuration goes with it.
    n2.step(AppendEntries(2, "n1", "n2", 2, 1, (Entry(3, 2, "record", "x"),), 2))
    assert (n2.raft.voters, n2.raft.learners) == (IDS, ())


def test_one_change_at_a_time_and_none_before_the_new_term_commits():
    st = storage_with([])
    n1 = node("n1", IDS, st)
    make_leader(n1, st, IDS)
    with pytest.raises(ProposalDropped):  # its no-op is not committed yet
        n1.raft.propose([("config", conf("n1", "n2", "n3", learners=("n4",)), None)])
    n1.raft.log.commit_to(n1.raft.log.last_index())
    n1.raft.propose([("config", conf("n1", "n2", "n3", learners=("n4",)), None)])
    assert "n4" in n1.raft.prs and n1.raft.learners == ("n4",)
    with pytest.raises(ProposalDropped):  # the first is not committed
        n1.raft.propose([("config", conf("n1", "n2", "n3"), None)])


def test_a_learner_is_replicated_to_and_never_counted():
    st = storage_with([])
    n1 = node("n1", ("n1", "n2"), st)
    make_leader(n1, st, ("n1", "n2"))
    n1.step(AppendResponse(n1.term, "n2", "n1", n1.raft.log.last_index()))
    persist(n1, st)
    n1.raft.propose([("config", conf("n1", "n2", learners=("n3",)), None)])
    rd = persist(n1, st)
    assert {m.to for m in rd.eager_messages + rd.messages} == {"n2", "n3"}
    last = n1.raft.log.last_index()
    n1.step(AppendResponse(n1.term, "n3", "n1", last))  # the learner has everything
    assert n1.raft.log.committed < last  # and that commits nothing
    n1.step(AppendResponse(n1.term, "n2", "n1", last))
    assert n1.raft.log.committed == last
