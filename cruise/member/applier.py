"""The applied side of a member: committed entries in, what users see out.

Theory of operation
-------------------
Committed entries arrive in index order. :class:`Applier` turns each one into an
:class:`Outcome`:

- a ``record`` entry with no origin is applied to the state machine;
- a ``record`` entry with an origin ``(client, seq)`` goes through the session table
  (``sessions.py``): a new seq is applied and remembered; a duplicate (a retry whose
  first copy reached the log too) and a stale seq (older than the session's window)
  are *not* applied and are shown as ``noop`` entries; the duplicate's waiter gets the
  first attempt's index, term and result, the stale one's gets ``stale``;
- ``noop`` and ``config`` entries pass through.

Everything here is a function of the log alone, so every member reaches the same
state and shows the same entry at the same index.

A snapshot (:meth:`Applier.snapshot`) holds all of it: the state machine's bytes,
the session table (at-most-once must survive a restart from a snapshot) and the
hidden indexes still in the retained log, behind a small versioned header.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from ..core.types import NOOP, RECORD, Entry
from ..fsm import Applied, StateMachine
from .sessions import DUPLICATE, STALE, Sessions


@dataclass(slots=True)
class Outcome:
    """What applying one entry produced: the entry as users see it and, for a record, its
    result and the (index, term) of the copy that was applied (the first copy's for a
    duplicate). ``stale`` is set when a record was refused as older than its session."""

    index: int
    term: int
    kind: str  # as shown: a duplicate or stale record shows as a noop
    value: Any
    result: Any = None
    first_index: int = 0
    first_term: int = 0
    duplicate: bool = False
    stale: bool = False

    @property
    def entry(self) -> Applied:
        """The entry as subscribers and ``on_apply`` callbacks see it (made when asked for:
        most records reach neither)."""
        return Applied(self.index, self.term, self.kind, self.value)


SNAPSHOT_VERSION = 1
_LEN = struct.Struct("<I")


class Applier:
    def __init__(self, machine: StateMachine, sessions: Sessions | None = None) -> None:
        self.machine = machine
        self.sessions = sessions or Sessions()
        # Indexes whose record was not applied (a duplicate or stale copy) and is shown as a
        # noop. Invariant: a function of the log.
        self.hidden: set[int] = set()
        self.applied = 0

    def apply(self, e: Entry) -> Outcome:
        assert e.index == self.applied + 1, f"applying {e.index} after {self.applied}"
        self.applied = e.index
        if e.kind != RECORD:
            return Outcome(e.index, e.term, e.kind, e.value, None, e.index, e.term)
        origin = e.origin
        if origin is None:
            result = self._apply(e)
            return Outcome(e.index, e.term, RECORD, e.value, result, e.index, e.term)
        client, seq = origin
        verdict = self.sessions.check(client, seq)
        if verdict.kind == DUPLICATE:
            self.hidden.add(e.index)
            first = verdict.first
            assert first is not None
            return Outcome(e.index, e.term, NOOP, None, first[2], first[0], first[1], duplicate=True)
        if verdict.kind == STALE:
            self.hidden.add(e.index)
            return Outcome(e.index, e.term, NOOP, None, stale=True)
        result = self._apply(e)
        self.sessions.applied(client, seq, e.index, e.term, result)
        return Outcome(e.index, e.term, RECORD, e.value, result, e.index, e.term)

    def snapshot(self) -> Callable[[], Iterator[bytes]]:
        """The applied state at ``applied``, frozen now: a function that yields the
        snapshot's bytes and may run on another thread while applying goes on.

        Layout: a 4-byte little-endian length, a msgpack map of this table's own state
        (version, applied index, sessions, hidden indexes), then the state machine's bytes.
        The machine's part comes from its ``snapshot_later()`` when it has one (a frozen
        copy, encoded later), else from ``snapshot()``, called here."""
        head = msgpack.packb(
            {
                "v": SNAPSHOT_VERSION,
                "applied": self.applied,
                "sessions": self.sessions.state(),
                "hidden": sorted(self.hidden),
            },
            use_bin_type=True,
        )
        later = self.machine.snapshot_later()
        if later is None:
            body = self.machine.snapshot()
            later = lambda: (body,)  # noqa: E731

        def pieces() -> Iterator[bytes]:
            yield _LEN.pack(len(head))
            yield head
            yield from later()

        return pieces

    def restore(self, data: bytes | bytearray | memoryview, index: int) -> None:
        """Replace everything with the state of a snapshot at ``index``.

        Raises:
            ValueError: the bytes are not a snapshot of this version at ``index``.
        """
        view = memoryview(data)
        try:
            (n,) = _LEN.unpack_from(view)
            snap = msgpack.unpackb(view[_LEN.size : _LEN.size + n], raw=False, strict_map_key=False)
        except Exception as e:  # struct and msgpack raise several types for bad input
            raise ValueError(f"not a cruise snapshot: {e}") from None
        if not isinstance(snap, dict) or snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError("not a cruise snapshot of this version")
        if snap.get("applied") != index:
            raise ValueError(f"the snapshot holds index {snap.get('applied')}, not {index}")
        self.machine.restore(bytes(view[_LEN.size + n :]))
        self.sessions.restore(snap["sessions"])
        self.hidden = set(snap["hidden"])
        self.applied = index

    def forget_below(self, first: int) -> None:
        """Entries before ``first`` are compacted: nobody will ask how they are shown."""
        if self.hidden:
            self.hidden = {i for i in self.hidden if i >= first}

    def _apply(self, e: Entry) -> Any:
        """The machine's result for ``e``. A machine that raises is a bug in it; since apply is
        deterministic it raises on every member alike, so every member answers the same error
        result rather than the whole cluster stopping on one record."""
        try:
            return self.machine.apply(e.value, e.index)
        except Exception as exc:
            return {"error": f"apply failed: {type(exc).__name__}: {exc}"}

    def shown(self, e: Entry) -> Applied:
        """How a committed entry is shown to readers (``entries`` requests)."""
        if e.index in self.hidden:
            return Applied(e.index, e.term, NOOP, None)
        return Applied(e.index, e.term, e.kind, e.value)
