"""The applied side of a member: state machines and at-most-once application.

Theory of operation
-------------------
Committed entries arrive in index order from the core. :class:`Applier` turns
each one into what users see:

- a ``record`` entry is applied to the :class:`StateMachine` once. If the entry
  carries an origin ``(client, seq)`` that was applied before (a client retried
  through another member, or across a leader change, and both attempts reached
  the log), it is *not* applied again; it is published as a ``noop`` and the
  retry is answered with the first attempt's index, term and result;
- ``noop`` and ``config`` entries pass through (config entries will change the
  membership in a later issue).

Everything here is a function of the log alone, so every member reaches the
same state and publishes the same entry at the same index.

The dedup table keeps, per client, the last ``DEDUP_PER_CLIENT`` sequence
numbers and, overall, the ``DEDUP_CLIENTS`` most recently seen clients: a
retry older than that is applied again. The bound keeps memory fixed however
many clients come and go.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from .core.types import NOOP, RECORD, Entry

DEDUP_PER_CLIENT = 256
DEDUP_CLIENTS = 100_000


class StateMachine:
    """What a member applies committed records to (contract section 6).

    ``apply`` must be deterministic: every member applies the same values in the
    same order and must reach the same state.
    """

    def apply(self, value: Any, index: int) -> Any:
        """Apply one committed record; the return value is the record's ``result``."""
        raise NotImplementedError

    def query(self, q: Any) -> Any:
        """Answer a read-only query against the applied state."""
        raise NotImplementedError

    def snapshot(self) -> bytes:
        """The whole state, for a snapshot (used from a later version on)."""
        raise NotImplementedError

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        raise NotImplementedError


class QueryNotSupported(Exception):
    """The state machine answers no queries."""


class StreamMachine(StateMachine):
    """The ``stream`` state machine: the log is the state; records apply to nothing."""

    def apply(self, value: Any, index: int) -> Any:
        return None

    def query(self, q: Any) -> Any:
        raise QueryNotSupported("the stream state machine answers no queries; read the log with `entries`")

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


class Applied(NamedTuple):
    """An applied entry as users see it (``on_apply`` callbacks, the PUB stream, ``entries``)."""

    index: int
    term: int
    kind: str
    value: Any

    def to_wire(self) -> dict[str, Any]:
        return {"index": self.index, "term": self.term, "kind": self.kind, "value": self.value}


@dataclass(slots=True)
class Outcome:
    """What applying one entry produced: the entry as users see it, and for a record its
    result and the (index, term) of the attempt that was applied (differs from the entry's
    own for a duplicate)."""

    index: int
    term: int
    kind: str  # as shown: a duplicate record shows as a noop
    value: Any
    result: Any = None
    first_index: int = 0
    first_term: int = 0
    duplicate: bool = False

    @property
    def entry(self) -> Applied:
        """The entry as subscribers and ``on_apply`` callbacks see it (made when asked for:
        most records reach neither)."""
        return Applied(self.index, self.term, self.kind, self.value)


class Applier:
    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine
        # client -> OrderedDict(seq -> (index, term, result)); LRU over clients.
        self._seen: OrderedDict[str, OrderedDict[int, tuple[int, int, Any]]] = OrderedDict()
        # Indexes whose record was a duplicate and is shown as a noop. Invariant: a
        # function of the log (only grows while the log does).
        self.duplicates: set[int] = set()
        self.applied = 0

    def lookup(self, client: str, seq: int) -> tuple[int, int, Any] | None:
        """The (index, term, result) of an applied (client, seq), if remembered."""
        per = self._seen.get(client)
        return None if per is None else per.get(seq)

    def apply(self, e: Entry) -> Outcome:
        assert e.index == self.applied + 1, f"applying {e.index} after {self.applied}"
        self.applied = e.index
        if e.kind != RECORD:
            return Outcome(e.index, e.term, e.kind, e.value)
        if e.origin is not None:
            client, seq = e.origin
            prior = self.lookup(client, seq)
            if prior is not None:
                self.duplicates.add(e.index)
                return Outcome(e.index, e.term, NOOP, None, prior[2], prior[0], prior[1], True)
        result = self.machine.apply(e.value, e.index)
        if e.origin is not None:
            self._remember(e.origin[0], e.origin[1], (e.index, e.term, result))
        return Outcome(e.index, e.term, RECORD, e.value, result, e.index, e.term)

    def shown(self, e: Entry) -> Applied:
        """How a committed entry is shown to readers (``entries`` requests): duplicates as noops."""
        if e.index in self.duplicates:
            return Applied(e.index, e.term, NOOP, None)
        return Applied(e.index, e.term, e.kind, e.value)

    def _remember(self, client: str, seq: int, what: tuple[int, int, Any]) -> None:
        per = self._seen.get(client)
        if per is None:
            per = self._seen[client] = OrderedDict()
            if len(self._seen) > DEDUP_CLIENTS:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(client)
        per[seq] = what
        if len(per) > DEDUP_PER_CLIENT:
            per.popitem(last=False)
