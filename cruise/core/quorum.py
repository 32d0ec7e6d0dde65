"""Majority arithmetic, as pure functions (etcd-raft ``quorum/majority.go``).

Kept apart from ``Raft`` so the commit rule and the vote count can be tested
with plain tables, and so joint consensus (a later issue: two majorities at
once) is a change here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .types import NodeId

WON = "won"
LOST = "lost"
PENDING = "pending"


def majority(n: int) -> int:
    """Smallest number of voters that is more than half of ``n``."""
    return n // 2 + 1


def committed_index(match: Mapping[NodeId, int], voters: Iterable[NodeId]) -> int:
    """The highest index that a majority of ``voters`` has durably matched.

    A voter missing from ``match`` counts as 0. Indexes are compared as
    integers (the seed sorted them as strings: "10" < "9").

    >>> committed_index({"a": 5, "b": 3, "c": 9}, ["a", "b", "c"])
    5
    """
    idx = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not idx:
        return 0
    return idx[majority(len(idx)) - 1]


def vote_result(votes: Mapping[NodeId, bool], voters: Iterable[NodeId]) -> str:
    """WON once a majority granted, LOST once a majority cannot be reached, else PENDING."""
    voters = list(voters)
    need = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return WON
    if len(voters) - rejected < need:
        return LOST
    return PENDING


def has_quorum(active: Iterable[NodeId], voters: Iterable[NodeId]) -> bool:
    """Whether the ``active`` set holds a majority of ``voters``."""
    voters = set(voters)
    return len(voters & set(active)) >= majority(len(voters))
