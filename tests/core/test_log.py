import pytest

from cruise.core import Entry, MemoryStorage
from cruise.core.log import RaftLog

from .util import storage_with


def log_of(terms, unstable=()):
    lg = RaftLog(storage_with(list(terms)))
    start = len(terms) + 1
    lg.append([Entry(start + i, t) for i, t in enumerate(unstable)])
    return lg


def ents(first, terms):
    return [Entry(first + i, t) for i, t in enumerate(terms)]


@pytest.mark.parametrize(
    "new,want",
    [
        ([], 0),
        (ents(1, [1, 2, 3]), 0),  # all match
        (ents(2, [2, 3]), 0),
        (ents(3, [3]), 0),
        (ents(2, [2, 3, 4, 4]), 4),  # new entries past the end
        (ents(4, [4, 4]), 4),
        (ents(1, [4, 4]), 1),  # conflicts
        (ents(2, [1, 4, 4]), 2),
        (ents(3, [1, 2, 4, 4]), 3),
    ],
)
def test_find_conflict(new, want):
    assert log_of([1, 2, 3]).find_conflict(new) == want


@pytest.mark.parametrize(
    "index,term,want",
    [
        (10, 3, 10),
        (10, 2, 6),  # the last index with term <= 2
        (5, 2, 5),
        (10, 1, 3),
        (10, 0, 0),
        (20, 3, 10),  # beyond the end: from the last index
    ],
)
def test_find_conflict_by_term(index, term, want):
    lg = log_of([1, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    assert lg.find_conflict_by_term(index, term) == want


def test_maybe_append_truncates_only_at_conflict_and_bounds_commit():
    lg = log_of([1, 1], unstable=[2, 2])
    assert lg.maybe_append(1, 1, 10, ents(2, [1])) == 2
    assert lg.last_index() == 4  # no conflict, nothing removed
    assert lg.committed == 2  # min(leader commit, last new entry)
    assert lg.maybe_append(2, 1, 2, ents(3, [3])) == 3
    assert lg.last_index() == 3 and lg.term(3) == 3
    assert lg.maybe_append(3, 2, 3, []) is None  # prev term mismatch


def test_conflict_reaching_into_stable_part_moves_unstable_offset():
    lg = log_of([1, 1, 1])
    lg.append(ents(2, [2]))
    assert lg.unstable_offset == 2 and lg.last_index() == 2
    st = lg.storage
    st.append(lg.unstable)
    lg.stable_to(2, 2)
    assert st.last_index() == 2 and not lg.unstable and lg.unstable_offset == 3


def test_committed_entries_cannot_be_overwritten():
    lg = log_of([1, 1])
    lg.commit_to(2)
    with pytest.raises(AssertionError):
        lg.append(ents(2, [2]))


def test_stable_to_ignores_replaced_entries():
    lg = log_of([1], unstable=[1, 1])
    lg.append(ents(3, [2]))  # replaces index 3 while the first write is in flight
    lg.stable_to(3, 1)  # the old write of index 3 completes: does not stabilise the new one
    assert [e.term for e in lg.unstable] == [1, 2]


def test_memory_storage_errors():
    from cruise.core import Compacted, Unavailable

    st = MemoryStorage()
    st.append(ents(1, [1, 1]))
    with pytest.raises(Unavailable):
        st.term(3)
    with pytest.raises(Unavailable):
        st.entries(1, 4)
    with pytest.raises(Compacted):
        st.entries(0, 1)
    with pytest.raises(ValueError):
        st.append(ents(4, [1]))
