"""Client sessions: at-most-once application of records that carry ``(client, seq)``.

Theory of operation
-------------------
A client numbers its records 1, 2, 3, ... and sends every retry of one record with
the same ``(client, seq)``. Retries go through other members, wait in ZeroMQ pipes
that reconnect, and are forwarded again after a leader change, so a copy can reach
the log arbitrarily late, long after the client has moved on (dissertation §6.3).

The table is replicated: it is changed only by applying committed entries, in index
order, so every member holds the same table at the same applied index and reaches
the same verdict for the same entry. Per client it keeps

- ``highest``: the highest seq applied, and
- ``results``: the (index, term, result) of every applied seq within the last
  ``window`` seqs (``seq > highest - window``).

A copy of ``(client, seq)`` is then

- a *duplicate* when ``seq`` is in ``results``: it is not applied again and its
  retry is answered with the first attempt's index, term and result;
- *stale* when ``seq <= highest - window`` and not in ``results``: the table no
  longer knows whether it was applied, so it is not applied, and the request is
  answered ``stale``. That is safe: a seq this old was either applied already or
  is a copy the client gave up on long ago;
- *new* otherwise, and applied.

So a client may keep up to ``window`` records in flight: with more, its oldest may be
answered ``stale`` without being applied.

Expiry is a function of the log, not of any member's clock: the sessions are kept in
order of their last applied record, and while there are more than ``max_sessions`` of
them, or more than ``max_results`` results in all, the session idle longest (over the
log) is dropped. A copy that arrives after its client's session was dropped is taken as
new; that needs that many other clients to record in between, which the README
documents. The two bounds keep the table's memory bounded however clients behave.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

WINDOW = 1024  # seqs per client whose results are kept: how many records one client may have in flight
MAX_SESSIONS = 50_000  # sessions kept; the one idle longest (over the log) is dropped past this
MAX_RESULTS = 1_000_000  # results kept over all sessions, likewise

NEW = "new"
DUPLICATE = "duplicate"
STALE = "stale"


@dataclass(slots=True)
class Session:
    """One client's session. Invariant: every key of ``results`` is > ``highest - window``
    once pruned, and ``highest`` is the largest seq ever applied for this client."""

    highest: int = 0
    # seq -> (index, term, result) of its applied record, in the order applied.
    results: OrderedDict[int, tuple[int, int, Any]] = field(default_factory=OrderedDict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the table says of one ``(client, seq)``: ``kind`` is NEW, DUPLICATE or STALE;
    ``first`` the (index, term, result) of the applied copy for a DUPLICATE."""

    kind: str
    first: tuple[int, int, Any] | None = None
    highest: int = 0


_NEW = Verdict(NEW)


class Sessions:
    def __init__(
        self, window: int = WINDOW, max_sessions: int = MAX_SESSIONS, max_results: int = MAX_RESULTS
    ) -> None:
        self.window = window
        self.max_sessions = max_sessions
        self.max_results = max_results
        # client -> Session, least recently applied first.
        self._by_client: OrderedDict[str, Session] = OrderedDict()
        self._results = 0  # results kept over all sessions

    def __len__(self) -> int:
        return len(self._by_client)

    def check(self, client: str, seq: int) -> Verdict:
        """The verdict for ``(client, seq)`` against what has been applied so far."""
        s = self._by_client.get(client)
        if s is None:
            return _NEW
        first = s.results.get(seq)
        if first is not None:
            return Verdict(DUPLICATE, first, s.highest)
        if seq <= s.highest - self.window:
            return Verdict(STALE, None, s.highest)
        return _NEW

    def highest(self, client: str) -> int:
        """The highest seq applied for ``client`` (0: no session)."""
        s = self._by_client.get(client)
        return 0 if s is None else s.highest

    def applied(self, client: str, seq: int, index: int, term: int, result: Any) -> None:
        """Remember that ``(client, seq)`` was applied at ``index`` with ``result``."""
        sessions = self._by_client
        s = sessions.get(client)
        if s is None:
            s = sessions[client] = Session()
        else:
            sessions.move_to_end(client)
        results = s.results
        before = len(results)
        results[seq] = (index, term, result)
        if seq > s.highest:
            s.highest = seq
            floor = seq - self.window
            # Applied mostly in seq order, so the oldest are at the front.
            while next(iter(results)) <= floor:
                del results[next(iter(results))]
            if len(results) > self.window:
                # Reordered copies left old seqs behind a newer front: keep exactly the
                # window (at most ``window`` distinct seqs are above the floor).
                s.results = results = OrderedDict((k, v) for k, v in results.items() if k > floor)
        self._results += len(results) - before
        while len(sessions) > self.max_sessions or self._results > self.max_results:
            _, dropped = sessions.popitem(last=False)
            self._results -= len(dropped.results)

    def state(self) -> list[tuple[str, int, list[tuple[int, int, int, Any]]]]:
        """The table as plain data, least recently applied first (for snapshots and tests)."""
        return [
            (c, s.highest, [(seq, *r) for seq, r in s.results.items()]) for c, s in self._by_client.items()
        ]

    def restore(self, state: list) -> None:
        """Replace the table with one from :meth:`state` (a snapshot's), order included."""
        self._by_client = OrderedDict()
        self._results = 0
        for client, highest, rows in state:
            results: OrderedDict[int, tuple[int, int, Any]] = OrderedDict(
                (seq, (index, term, result)) for seq, index, term, result in rows
            )
            self._by_client[client] = Session(highest, results)
            self._results += len(results)
