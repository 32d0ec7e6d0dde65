"""Cluster configurations: who votes, who only learns, and how a configuration entry says so.

Theory of operation
-------------------
Membership changes go through the log, one server at a time (dissertation chapter 4).
A ``config`` entry's value is a map whose ``"members"`` is the whole new membership, a
list of maps each with an ``"id"`` and a ``"voter"`` flag; any other field (addresses,
for the runtime) is opaque here. A configuration takes effect on every member as soon as
its entry is in the member's log, committed or not (§4.1): a leader counts the new
majority for the entry that adds or removes a member, and a truncated entry takes its
configuration back with it.

One change at a time keeps any two consecutive majorities overlapping, which is what
makes single-server changes safe without joint consensus: a leader proposes no new
configuration while one it proposed is uncommitted.

Learners (non-voters) replicate and apply like anyone else but neither vote nor count
toward a commit; a new member joins as one and is promoted once it has caught up, so a
cluster never waits on a member that holds nothing yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .types import NodeId


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()

    @property
    def members(self) -> tuple[NodeId, ...]:
        return self.voters + self.learners

    @classmethod
    def of(cls, voters: Iterable[NodeId], learners: Iterable[NodeId] = ()) -> ConfState:
        return cls(tuple(sorted(voters)), tuple(sorted(learners)))


def conf_of(value: Any) -> ConfState | None:
    """The configuration a ``config`` entry's value states, or None for a value that states
    none (the runtime validated it before proposing; a bad one changes nothing)."""
    members = value.get("members") if isinstance(value, dict) else None
    if not isinstance(members, list):
        return None
    voters: list[NodeId] = []
    learners: list[NodeId] = []
    for m in members:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str):
            return None
        (voters if m.get("voter", True) else learners).append(m["id"])
    if len(set(voters + learners)) != len(voters) + len(learners):
        return None
    return ConfState.of(voters, learners)


def single_change(old: ConfState, new: ConfState) -> str | None:
    """Why ``new`` is not one server's change from ``old`` (None when it is): a member added
    as a learner, a learner promoted, one member removed, or no member changed. Adding a voter directly would
    make a majority wait on a member that holds nothing yet; the runtime adds it as a
    learner and promotes it once it is caught up."""
    ov, ol, nv, nl = set(old.voters), set(old.learners), set(new.voters), set(new.learners)
    added = (nv | nl) - (ov | ol)
    removed = (ov | ol) - (nv | nl)
    promoted = nv & ol
    demoted = nl & ov
    if not (added or removed or promoted or demoted):
        return None  # the same members, other details (an identity bound, ``identity.py``)
    if demoted:
        return f"demoting a voter ({', '.join(sorted(demoted))}) is not supported"
    if added & nv:
        return "a new member joins as a learner first"
    if len(added) + len(removed) + len(promoted) != 1:
        return "exactly one member may change at a time"
    if not nv:
        return "the last voter cannot be removed"
    return None
