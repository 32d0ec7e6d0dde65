"""Client sessions (dissertation §6.3): a seq is applied at most once however late a copy comes."""

import pytest

from cruise.member.sessions import DUPLICATE, NEW, STALE, Sessions


def test_new_duplicate_and_stale():
    s = Sessions(window=4)
    assert s.check("c", 1).kind == NEW
    for seq in range(1, 11):
        s.applied("c", seq, 100 + seq, 1, f"r{seq}")
    assert s.check("c", 10).kind == DUPLICATE and s.check("c", 10).first == (110, 1, "r10")
    assert s.check("c", 7).kind == DUPLICATE  # inside the window: 7..10
    v = s.check("c", 6)  # below the window: nobody knows any more whether 6 was applied
    assert v.kind == STALE and v.highest == 10
    assert s.check("c", 11).kind == NEW
    assert s.check("other", 1).kind == NEW


def test_a_seq_inside_the_window_never_applied_is_new():
    """Pipelined seqs apply out of order: 3 is still new after 4 and 5 were applied."""
    s = Sessions(window=4)
    for seq in (1, 2, 4, 5):
        s.applied("c", seq, seq, 1, None)
    assert s.check("c", 3).kind == NEW
    s.applied("c", 3, 6, 1, None)
    assert s.check("c", 3).kind == DUPLICATE


@pytest.mark.parametrize("order", [list(range(1, 40)), [5, 1, 2, 9, 3, 4, 6, 8, 7, 30, 10, 31, 29]])
def test_the_window_stays_bounded_whatever_the_order(order):
    s = Sessions(window=4)
    for i, seq in enumerate(order, 1):
        if s.check("c", seq).kind == NEW:  # the applier applies only what is new
            s.applied("c", seq, i, 1, None)
        (_, highest, results) = s.state()[0]
        assert len(results) <= 4
        assert all(r[0] > highest - 4 for r in results)


def test_the_session_idle_longest_over_the_log_expires_first():
    s = Sessions(window=4, max_sessions=2)
    s.applied("a", 1, 1, 1, None)
    s.applied("b", 1, 2, 1, None)
    s.applied("a", 2, 3, 1, None)  # a is now the most recently active
    s.applied("c", 1, 4, 1, None)  # three sessions: b, idle longest, goes
    assert [c for c, _, _ in s.state()] == ["a", "c"]
    assert s.check("b", 1).kind == NEW


def test_results_are_bounded_over_all_sessions():
    s = Sessions(window=4, max_sessions=100, max_results=10)
    for client in "abcdef":
        for seq in range(1, 5):
            s.applied(client, seq, 0, 1, None)
    assert sum(len(r) for _, _, r in s.state()) <= 10
    assert [c for c, _, _ in s.state()] == ["e", "f"]


def test_a_machine_that_raises_answers_an_error_result():
    from cruise.core.types import Entry
    from cruise.fsm import StateMachine
    from cruise.member.applier import Applier

    class Broken(StateMachine):
        def apply(self, value, index):
            raise ValueError("no")

    out = Applier(Broken()).apply(Entry(1, 1, "record", "x", ("c", 1)))
    assert out.result == {"error": "apply failed: ValueError: no"}
