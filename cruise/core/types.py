"""Plain data shared by every part of the core: entries, hard and soft state, roles.

Theory of operation
-------------------
The log is a sequence of :class:`Entry` values numbered from 1. Index 0 is a
sentinel with term 0 that every log "contains", so the first AppendEntries of a
term can name ``prev_index=0, prev_term=0`` and always match.

:class:`HardState` is what Raft requires on stable storage before a node answers
anyone (§5.1, Figure 2 "Persistent state on all servers"): the current term and
the vote cast in it. ``commit`` rides along because it is cheap and lets a
restarted member re-apply what it knows is committed without waiting for a
leader; it is never required for safety.

:class:`SoftState` is volatile and only reported (who leads, which role).

Nothing here does I/O; the types are slotted so tests can compare them with
``==`` and the simulator can keep millions of them. They are frozen, except
:class:`Entry`: one is made per record on every member, and a frozen
dataclass's ``__init__`` (every field set through ``object.__setattr__``) costs
several times as much. Nothing changes an entry once it is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NodeId = str

# Entry kinds. Plain strings: they go on the wire and to subscribers as-is.
RECORD = "record"  # a client value; the state machine applies it
NOOP = "noop"  # appended by each new leader at the start of its term (§8)
CONFIG = "config"  # a configuration change (membership); reserved for later issues

ENTRY_KINDS = (RECORD, NOOP, CONFIG)


@dataclass(slots=True)
class Entry:
    """One log entry.

    Invariant: ``index >= 1`` and ``term >= 1`` for every entry in a log.
    """

    index: int
    term: int
    kind: str = RECORD
    # Opaque to the core: the runtime decides what a record or config holds.
    value: Any = None
    # (client id, sequence number) of the proposer, or None. Opaque to the core;
    # the applied state machine uses it to apply a retried record at most once.
    origin: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be on stable storage before any message that depends on it is sent."""

    term: int = 0
    vote: NodeId | None = None  # candidate voted for in ``term``, or None
    commit: int = 0  # highest index known committed (an optimisation, not a safety need)

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote is None and self.commit == 0


class Role:
    """Role names as the contract prints them."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"  # reported as "candidate" to users
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting when it changes."""

    role: str
    leader: NodeId | None
    term: int


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot stands in the log: it holds the applied state of every entry up to
    ``index``, whose term is ``term``. ``index == 0``: no snapshot. The state itself is the
    runtime's business; the core only needs the position."""

    index: int = 0
    term: int = 0
    # The configuration at ``index`` (a ``config`` entry's value), or None: the runtime's
    # initial one. Opaque here; ``confchange.conf_of`` reads it.
    conf: Any = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed read index: every entry up to ``index`` is committed and the
    leader was still leader after the read request with ``ctx`` arrived (§6.4)."""

    index: int
    ctx: Any
