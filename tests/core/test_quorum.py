import pytest

from cruise.core import quorum


@pytest.mark.parametrize(
    "match,voters,want",
    [
        ({"a": 5}, ["a"], 5),
        ({"a": 5, "b": 3, "c": 9}, ["a", "b", "c"], 5),
        ({"a": 10, "b": 9, "c": 2}, ["a", "b", "c"], 9),  # integers, not strings: "10" < "9"
        ({"a": 10, "b": 9}, ["a", "b", "c"], 9),  # a missing voter counts as 0
        ({"a": 1, "b": 2, "c": 3, "d": 4}, ["a", "b", "c", "d"], 2),  # 4 voters need 3
        ({"a": 7, "b": 7, "c": 1, "d": 1, "e": 1}, list("abcde"), 1),
        ({"a": 7, "b": 7, "c": 7, "d": 1, "e": 1}, list("abcde"), 7),
        ({"x": 100, "a": 1}, ["a"], 1),  # non-voters do not count
    ],
)
def test_committed_index(match, voters, want):
    assert quorum.committed_index(match, voters) == want


@pytest.mark.parametrize(
    "votes,voters,want",
    [
        ({"a": True}, ["a"], quorum.WON),
        ({"a": True}, ["a", "b", "c"], quorum.PENDING),
        ({"a": True, "b": True}, ["a", "b", "c"], quorum.WON),
        ({"a": True, "b": False, "c": False}, ["a", "b", "c"], quorum.LOST),
        ({"a": True, "b": False}, ["a", "b", "c", "d"], quorum.PENDING),
        ({"a": True, "b": False, "c": False}, ["a", "b", "c", "d"], quorum.LOST),  # 4 need 3
        ({"a": True, "z": True}, ["a", "b", "c"], quorum.PENDING),  # non-voter's grant ignored
    ],
)
def test_vote_result(votes, voters, want):
    assert quorum.vote_result(votes, voters) == want
