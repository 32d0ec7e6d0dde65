"""Requests a member holds, as typed records: waiting for a commit, a leader or a forward.

Theory of operation
-------------------
A ``record`` request goes one of three ways:

- on the leader it is proposed, and waits in :class:`Proposals` under the index it
  was proposed at, until the entry at that index is applied;
- on a member that knows a leader it is forwarded, and waits as a
  :class:`Forwarded` until the leader's answer comes back (or the leader changes,
  and it is forwarded again);
- while no leader is known it is :class:`Parked` until one is.

An index can be proposed twice: a leader proposes A at 8, loses leadership, the new
leader's log replaces 8, and the member leads again and proposes B at 8. The entry
that is applied at 8 decides which of them it answers, so each :class:`Pending`
carries the term and origin it was proposed with; a proposal displaced by a newer one
at its index is answered at once (it is in no log any more, and its client retries).

Every request carries its deadline in its waiter; the sweep answers ``unavailable``
to what is still waiting past it. The sweep looks at every waiting request, not only
at the front of each collection: a request routed again (after a leader change, or a
forward that could not go) joins a collection behind younger ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import api
from .ports import ReplyTo

Origin = tuple[str, int]
# Sends a request on towards the leader (parked while none is known): the member's routing.
Route = Callable[[api.Request, ReplyTo, "bytes | None"], None]

# The answer to a proposal whose index another term's entry took.
LEADERSHIP_CHANGED = "leadership changed before the record committed; retry it"


@dataclass(slots=True)
class Pending:
    """A proposed record waiting for the entry at its index to apply."""

    term: int
    origin: Origin | None
    waiter: ReplyTo
    # Retries of the same (client, seq) that arrived while this one was pending.
    joined: list[ReplyTo] | None = None

    def waiters(self) -> list[ReplyTo]:
        return [self.waiter] if self.joined is None else [self.waiter, *self.joined]

    def answers(self, term: int, origin: Origin | None) -> bool:
        """Whether the entry (``term``, ``origin``) applied at this index is this proposal."""
        return term == self.term or (origin is not None and origin == self.origin)


@dataclass(slots=True)
class Parked:
    """A request waiting for a leader to be known, or for the link to it."""

    request: api.Request
    waiter: ReplyTo
    frame: bytes | None  # the request as the client encoded it, reused when forwarding


@dataclass(slots=True)
class Forwarded:
    """A request sent to ``leader``, waiting for its answer."""

    leader: str
    request: api.Request
    frame: bytes
    waiter: ReplyTo


@dataclass(slots=True)
class Proposals:
    """The leader's proposed records by index, and by origin for retries that join them.

    Invariant: ``by_origin[o] == i`` only if ``by_index[i].origin == o``.
    """

    by_index: dict[int, Pending] = field(default_factory=dict)
    by_origin: dict[Origin, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_index)

    def add(self, first: int, term: int, batch: list[tuple[api.Record, ReplyTo]]) -> list[Pending]:
        """Record a batch proposed from index ``first`` in ``term``; returns the proposals
        already at those indexes (from an older term), which are displaced."""
        displaced: list[Pending] = []
        by_index, by_origin = self.by_index, self.by_origin
        for i, (r, w) in enumerate(batch, first):
            old = by_index.get(i)
            if old is not None:
                self._forget_origin(i, old)
                displaced.append(old)
            origin = None if r.client is None or r.seq is None else (r.client, r.seq)
            by_index[i] = Pending(term, origin, w)
            if origin is not None:
                by_origin[origin] = i
        return displaced

    def add_one(self, index: int, term: int, waiter: ReplyTo) -> list[Pending]:
        """Record one proposal with no (client, seq) (a configuration change) at ``index``."""
        displaced = []
        old = self.by_index.get(index)
        if old is not None:
            self._forget_origin(index, old)
            displaced.append(old)
        self.by_index[index] = Pending(term, None, waiter)
        return displaced

    def join(self, origin: Origin, waiter: ReplyTo) -> bool:
        """Let a retry of a pending (client, seq) wait for the same entry."""
        i = self.by_origin.get(origin)
        p = None if i is None else self.by_index.get(i)
        if p is None or p.origin != origin:
            return False
        if p.joined is None:
            p.joined = [waiter]
        else:
            p.joined.append(waiter)
        return True

    def take(self, index: int) -> Pending | None:
        p = self.by_index.pop(index, None)
        if p is not None and p.origin is not None:
            self._forget_origin(index, p)
        return p

    def _forget_origin(self, index: int, p: Pending) -> None:
        if p.origin is not None and self.by_origin.get(p.origin) == index:
            del self.by_origin[p.origin]

    def expire(self, now: float) -> list[ReplyTo]:
        """Remove the proposals whose deadline passed; their waiters."""
        out: list[ReplyTo] = []
        for i, p in list(self.by_index.items()):
            if p.waiter.deadline <= now:
                self.take(i)
                out.extend(p.waiters())
            elif p.joined is not None and any(w.deadline <= now for w in p.joined):
                # A retry that joined may have come a long way (forwarded, re-routed) and
                # carry an earlier deadline than the copy it joined.
                out.extend(w for w in p.joined if w.deadline <= now)
                p.joined = [w for w in p.joined if w.deadline > now] or None
        return out

    def waiters(self) -> Iterator[ReplyTo]:
        for p in self.by_index.values():
            yield from p.waiters()


def expire(items: dict[Any, Any], now: float) -> list[ReplyTo]:
    """Pop the items of ``items`` whose waiter's deadline passed; their waiters."""
    late = [k for k, v in items.items() if v.waiter.deadline <= now]
    return [items.pop(k).waiter for k in late]
