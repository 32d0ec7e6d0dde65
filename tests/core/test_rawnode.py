"""RawNode.ready_if_any: the runtime's one-call-a-turn form of has_ready() + ready()."""

from cruise.core import AppendResponse, HardState, MemoryStorage

from .harness import describe_ready
from .util import make_leader, node, persist, storage_with

IDS = ("a", "b", "c")


def _leader_pair():
    """Two identical leaders (same storage history, same rng), to compare the two APIs."""
    out = []
    for _ in range(2):
        st = MemoryStorage()
        n = node("a", IDS, st)
        make_leader(n, st, IDS)
        persist(n, st)
        out.append((n, st))
    return out


def test_idle_node_gives_none_and_keeps_no_ready_outstanding():
    (n, st), _ = _leader_pair()
    while n.has_ready():
        persist(n, st)
    assert n.ready_if_any() is None
    n.propose("x")  # accepted: nothing is outstanding after a None
    assert n.ready_if_any() is not None


def test_gives_what_ready_gives():
    (n1, st1), (n2, st2) = _leader_pair()
    for n in (n1, n2):
        n.propose("x")
    rd1 = n1.ready_if_any()
    assert n2.has_ready()
    rd2 = n2.ready()
    assert rd1 is not None and describe_ready(rd1) == describe_ready(rd2)
    assert rd1.must_sync == rd2.must_sync
    for n, st, rd in ((n1, st1, rd1), (n2, st2, rd2)):
        st.append(rd.entries)
        n.advance(rd)
        last = rd.entries[-1].index
        n.step(AppendResponse(n.term, "b", "a", last, False, 0, 0))  # b acknowledges: x commits
    rd1, rd2 = n1.ready_if_any(), n2.ready()
    assert rd1 is not None and [e.value for e in rd1.committed] == [None, "x"]  # the noop, then x
    assert describe_ready(rd1) == describe_ready(rd2)


def test_committed_entries_left_over_come_in_the_next_one():
    # A restarted node knows entries 1-3 are committed (hard state) and hands them out one
    # Ready at a time: nothing else changes between those Readys.
    st = storage_with([1, 1, 1], HardState(1, None, 3))
    n = node("a", IDS, st, max_apply_entries=1)
    got = []
    for _ in range(5):
        rd = n.ready_if_any()
        if rd is None:
            break
        got.extend(e.index for e in rd.committed)
        n.advance(rd)
    assert got == [1, 2, 3]
