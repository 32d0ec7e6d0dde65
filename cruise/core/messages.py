"""The peer RPCs, one frozen dataclass each, and ``describe()`` for logs and goldens.

Theory of operation
-------------------
Every message carries ``term``, ``frm`` and ``to`` (hashicorp/raft puts the same
header in every RPC). ``Raft.step`` settles the term rules once for all of them
(§5.1: a higher term turns anyone into a follower; a lower term is stale), then
hands the message to the role's step function.

Requests and their responses:

- :class:`RequestVote` / :class:`VoteResponse`: elections (§5.2) and, with
  ``pre=True``, the pre-vote round (dissertation §9.6) that asks "would you vote
  for me?" without bumping anyone's term.
- :class:`AppendEntries` / :class:`AppendResponse`: replication (§5.3). A
  rejection carries a hint (``hint_index``, ``hint_term``) so the leader skips a
  whole conflicting term per round trip instead of one index (§5.3, "the
  follower can include the term of the conflicting entry").
- :class:`Heartbeat` / :class:`HeartbeatResponse`: leader liveness, commit
  propagation to followers that already match, and read-index confirmation
  (``ctx``) without touching the log (§6.4).
- :class:`ReadIndex` / :class:`ReadIndexResponse`: a follower asks the leader for
  a confirmed read index (§6.4, follower reads).
- :class:`TimeoutNow`: leadership transfer; the target campaigns at once (§3.10).
- :class:`InstallSnapshot`: the leader no longer holds the entries a follower lacks
  (they were compacted into a snapshot, §7); the follower replaces its log with the
  snapshot at ``index`` and answers with an AppendResponse. The core carries only the
  snapshot's position: the runtime streams the state itself in chunks and steps this
  message into the follower's core once all of it has arrived intact.

The encoding for the wire lives in ``cruise.wire``; nothing here knows msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .types import Entry, NodeId


@dataclass(frozen=True, slots=True)
class RequestVote:
    term: int
    frm: NodeId
    to: NodeId
    last_index: int  # candidate's last log index (§5.4.1 up-to-date check)
    last_term: int  # term of that entry
    pre: bool = False  # a pre-vote: term is the term the candidate *would* use
    transfer: bool = False  # campaign caused by TimeoutNow: bypasses the leader lease


@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    frm: NodeId
    to: NodeId
    granted: bool
    pre: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    term: int
    frm: NodeId
    to: NodeId
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int  # leader's commit index


@dataclass(frozen=True, slots=True)
class AppendResponse:
    term: int
    frm: NodeId
    to: NodeId
    # On success: the follower's last index that now matches the leader; 0 when
    # answering an append of an older term, which claims no match (Raft.step).
    # On rejection: the prev_index that was rejected.
    index: int
    reject: bool = False
    # On rejection: where the leader should probe next. ``hint_term`` is the
    # follower's term at ``hint_index`` (0 if the follower's log is shorter).
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    term: int
    frm: NodeId
    to: NodeId
    commit: int  # min(leader commit, follower's match): never past what the follower holds
    ctx: Any = None  # read-index round this heartbeat confirms, or None
    # Only carries a new commit index to a follower that acknowledged everything: no
    # reply wanted (an empty append would cost a reply that tells the leader nothing).
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    frm: NodeId
    to: NodeId
    ctx: Any = None


@dataclass(frozen=True, slots=True)
class ReadIndex:
    term: int
    frm: NodeId
    to: NodeId
    ctx: Any


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    term: int
    frm: NodeId
    to: NodeId
    index: int
    ctx: Any
    reject: bool = False  # the receiver is not a leader able to serve reads


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    term: int
    frm: NodeId
    to: NodeId


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    frm: NodeId
    to: NodeId
    index: int  # last index the snapshot covers
    snap_term: int  # term of that entry
    conf: Any = None  # the configuration at ``index`` (a config entry's value), None: the initial one


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Part of a snapshot's state, from the leader. Not a core message: the runtime
    streams a snapshot in chunks after the core emits ``InstallSnapshot`` and steps that
    message into the follower's core once every chunk arrived intact."""

    term: int
    frm: NodeId
    to: NodeId
    index: int  # the snapshot's InstallSnapshot.index
    snap_term: int
    offset: int  # of ``data`` within the state
    total: int  # bytes of state in all
    crc: int  # crc32 of all of it
    data: bytes
    conf: Any = None  # InstallSnapshot.conf: the configuration at ``index``


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """The follower's answer to chunks: it holds the first ``offset`` bytes (``done``:
    all of them, checked and handed to its core; ``reject``: the whole failed its check;
    ``gap``: a chunk past ``offset`` arrived, so one went missing)."""

    term: int
    frm: NodeId
    to: NodeId
    index: int
    offset: int
    done: bool = False
    reject: bool = False
    gap: bool = False


Message = (
    RequestVote
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | ReadIndex
    | ReadIndexResponse
    | TimeoutNow
    | InstallSnapshot
)

MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    ReadIndex,
    ReadIndexResponse,
    TimeoutNow,
    InstallSnapshot,
)


def describe_entry(e: Entry) -> str:
    if e.kind == "record":
        return f"{e.term}/{e.index} {e.value!r}"
    return f"{e.term}/{e.index} {e.kind}" + (f" {e.value!r}" if e.value is not None else "")


def describe(msg: Message) -> str:
    """One line per message, stable across runs: used in logs, traces and golden files."""
    name = type(msg).__name__
    parts = [f"{msg.frm}->{msg.to} {name} term={msg.term}"]
    for f in fields(msg):
        if f.name in ("term", "frm", "to"):
            continue
        if f.name.startswith("hint_") and not getattr(msg, "reject", False):
            continue
        v = getattr(msg, f.name)
        if f.name == "entries":
            parts.append("entries=[" + ", ".join(describe_entry(e) for e in v) + "]")
        elif isinstance(v, bool):
            if v:
                parts.append(f.name)
        elif v is not None:
            parts.append(f"{f.name}={v}")
    return " ".join(parts)
