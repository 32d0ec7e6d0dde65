"""State machine classes the loader tests and the kv cluster tests load by reference
(``tests.machines.sample:Tally``); importable wherever the repository root is on PYTHONPATH."""

from __future__ import annotations

from typing import Any

import msgpack

from cruise import StateMachine
from cruise.fsm import BadQuery


class Tally(StateMachine):
    """Sums the numbers recorded; each record's result is ``{"count": n, "total": t}`` so far.

    Queries: ``"total"``, ``"count"``, ``"indexes"`` (the log indexes applied, in order).
    A record that is not a number counts as 0.
    """

    def __init__(self) -> None:
        self.total = 0
        self.indexes: list[int] = []

    def apply(self, value: Any, index: int) -> Any:
        if type(value) in (int, float):
            self.total += value
        self.indexes.append(index)
        return {"count": len(self.indexes), "total": self.total}

    def query(self, q: Any) -> Any:
        if q == "total":
            return self.total
        if q == "count":
            return len(self.indexes)
        if q == "indexes":
            return self.indexes
        raise BadQuery(f"Tally answers total, count or indexes, not {q!r}")

    def snapshot(self) -> bytes:
        return msgpack.packb([self.total, self.indexes])

    def restore(self, data: bytes) -> None:
        self.total, self.indexes = msgpack.unpackb(data)


class Outer:
    class Inner(Tally):
        """A nested class, named ``module:Outer.Inner``."""


class Duck:
    """Not a StateMachine subclass, but with its four methods."""

    def apply(self, value: Any, index: int) -> Any:
        return index

    def query(self, q: Any) -> Any:
        return None

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


class NoQuery:
    """Has apply, snapshot and restore but no query: not a state machine."""

    def apply(self, value: Any, index: int) -> Any:
        return None

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


class Exploding(StateMachine):
    def __init__(self) -> None:
        raise RuntimeError("no database at db.example")


class NeedsArgs(Tally):
    def __init__(self, path: str) -> None:
        super().__init__()


NOT_A_CLASS = Tally()
