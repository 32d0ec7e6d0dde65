"""State machines: what a member applies committed records to, and how applied entries look.

A :class:`StateMachine` must be deterministic: every member applies the same
values in the same order and must reach the same state. How entries reach it
(at most once per ``(client, seq)``) is ``cruise.member.applier``'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple


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
        """The whole state as bytes: what a member saves every ``snapshot_every`` entries
        and sends a follower too far behind. Called on the member's loop, which waits."""
        raise NotImplementedError

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's (``data`` may be any bytes-like object)."""
        raise NotImplementedError

    def snapshot_later(self) -> Callable[[], Iterable[bytes]] | None:
        """Optional, for large states: take a cheap frozen copy of the state now and return
        a function that yields the snapshot's bytes in pieces from that copy. The function
        runs on another thread while ``apply`` goes on, so it must not read the live state;
        the pieces joined must be what ``restore`` accepts. None (the default): the member
        calls :meth:`snapshot` on its loop instead."""
        return None


class QueryNotSupported(Exception):
    """The state machine answers no queries."""


class BadQuery(ValueError):
    """A query the state machine does not understand.

    Raised from :meth:`StateMachine.query`, it is answered ``bad_request`` with this
    exception's message (any other exception is answered ``bad_request`` too, as a failure).
    """


# How the stream machine's refusal of every query begins (the CLI's kv commands look for it).
STREAM_REFUSAL = "the stream state machine answers no queries"


class StreamMachine(StateMachine):
    """The ``stream`` state machine: the log is the state; records apply to nothing."""

    def apply(self, value: Any, index: int) -> Any:
        return None

    def query(self, q: Any) -> Any:
        raise QueryNotSupported(f"{STREAM_REFUSAL}; read the log with `entries`")

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


class Applied(NamedTuple):
    """An applied entry as users see it (``on_apply`` callbacks, the PUB stream, ``entries``)."""

    # The field shadows tuple.index on purpose: ``index`` is the public name (callbacks, the wire).
    index: int  # type: ignore[assignment]  # mypy rejects a NamedTuple field over a tuple method
    term: int
    kind: str
    value: Any

    def to_wire(self) -> dict[str, Any]:
        return {"index": self.index, "term": self.term, "kind": self.kind, "value": self.value}
