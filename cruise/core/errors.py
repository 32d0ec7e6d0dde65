"""Errors the core raises to its caller.

Two families, as h11 separates local and remote protocol errors:

- :class:`ProposalDropped` and its subclasses: the caller asked for something the
  node cannot do right now (it is not the leader, a transfer is in flight, a queue
  is full). The caller answers its client with a contract error and goes on.
- :class:`StorageError` and its subclasses: raised by a ``Storage`` when asked for
  entries it no longer has (``Compacted``) or does not have yet (``Unavailable``),
  or when what is on disk cannot be trusted (``CorruptLog``).

A broken invariant inside the core is an ``AssertionError``: the node must crash
rather than go on with a state that Raft's proofs do not cover.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error the core raises on purpose."""


class ProposalDropped(RaftError):
    """The proposal was not appended; nothing about it reached the log."""


class NotLeader(ProposalDropped):
    """Only the leader appends proposals. ``leader`` is who this node believes leads, or None."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class TransferInProgress(ProposalDropped):
    """The leader is handing leadership over and accepts no new proposals meanwhile (§3.10)."""


class StorageError(RaftError):
    """Base class for storage failures."""


class Compacted(StorageError):
    """The requested index is below the first index the storage still holds."""


class Unavailable(StorageError):
    """The requested index is above the last index the storage holds."""


class CorruptLog(StorageError):
    """Data on disk failed its checksum before the tail, or is otherwise unusable.

    The member must stop and say where (``path`` and ``offset``) rather than serve
    wrong data.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        where = f" ({path} at offset {offset})" if path is not None else ""
        super().__init__(message + where)
        self.path = path
        self.offset = offset
