"""The client without I/O: what the blocking client (:mod:`cruise.client`) and the asyncio client
(:mod:`cruise.aio`) share.

Theory of operation
-------------------
Both clients make the same decisions and differ only in how they wait: one polls sockets and
sleeps, the other awaits. Every decision lives here, as plain objects that take "now" and what
arrived, and say what to do next; the clients hold the sockets and the clock.

* :class:`Attempts`: the retry policy of one call (the ZeroMQ guide's *Lazy Pirate*). At most
  ``retries`` attempts may time out, each waiting an equal share of the time left; an
  ``unavailable`` answer is retried on the next member after a pause that doubles up to half a
  second, for as long as the deadline allows; any other failure is final.
* :class:`Rotation`: which member to ask. Any member accepts any request, so a client stays on
  the member that answered and moves to the next address after a timeout or an ``unavailable``.
* :class:`Numbering`: a client's ``(client, seq)`` for at-most-once records. Every attempt of
  one record carries the same seq. A member's session remembers the last
  :data:`SESSION_WINDOW` seqs, so a client with several records in flight keeps their seqs
  within that window of the oldest unfinished one, or the oldest may be answered ``stale``.
* :class:`CloneState`: the Subscriber's clone pattern (zguide ``clonecli3.py``): entries from
  ``entries`` replies and from the live stream go in, deduplicated by index; what comes out is
  contiguous, in order, with no duplicate; a gap asks for an ``entries`` request.

Nothing here opens a socket, reads a clock or sleeps.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

from brokerless import FrameError, unpack
from cruise.addresses import check_address as _address_problem
from cruise.api import decode_reply, raise_for_reply
from cruise.errors import COMPACTED, UNAVAILABLE, CruiseError

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "ENTRY_TOPIC",
    "RETRYABLE",
    "RETRY_PAUSE",
    "SESSION_WINDOW",
    "Attempts",
    "CloneState",
    "Numbering",
    "RecordResult",
    "Rotation",
    "as_list",
    "check_address",
    "compacted_snapshot",
    "decode",
    "default_retries",
    "entry",
    "error_of",
    "record_result",
    "warn_compacted",
]

DEFAULT_TIMEOUT = 5.0  # seconds a call may take, all attempts included
DEFAULT_RETRIES = 3  # attempts per call (the first one included), as in the guide's lpclient
RETRY_PAUSE = 0.05  # first pause after an `unavailable` reply (doubling up to 0.5 s), not after a timeout
RETRY_PAUSE_MAX = 0.5
ENTRY_TOPIC = b"entry"  # first frame of every published entry (contract section 5)
SESSION_WINDOW = 1024  # seqs a member's session remembers per client (README: "up to 1024 in flight")

# Error replies worth asking another member about: no leader or no quorum yet. (`not_member` is
# not retried: it may be about the request's target, as for remove_member of an unknown id.
# `stale` is not retried either: the same seq would be answered the same way.)
RETRYABLE = frozenset({UNAVAILABLE})


class RecordResult(NamedTuple):
    """What a committed and applied record answered."""

    index: int  # type: ignore[assignment]  # shadows tuple.index: the protocol's name
    term: int  # the entry's term
    result: Any  # what the state machine's apply returned (None for ``stream``)


def record_result(reply: dict[str, Any]) -> RecordResult:
    return RecordResult(reply["index"], reply["term"], reply.get("result"))


# -- addresses and replies ---------------------------------------------------------------------


def as_list(addrs: Iterable[str] | str) -> list[str]:
    """The addresses as a non-empty list of strings (ValueError otherwise)."""
    out = [addrs] if isinstance(addrs, str) else list(addrs)
    if not out:
        raise ValueError("no address given")
    for a in out:
        if not isinstance(a, str):
            raise ValueError(f"bad address {a!r}: not a string")
    return out


def check_address(addr: str) -> None:
    """Raise ValueError if ``addr`` is not an address a client can connect to (a user mistake).

    The same rule as the configuration's (``tcp://host:port``, ``ipc://path``, ``inproc://name``).
    """
    problem = _address_problem(addr)
    if problem is not None:
        raise ValueError(f"bad address: {problem}")


def default_retries(retries: int | None, n_addrs: int) -> int:
    """Attempts of one call that may time out: as asked (at least 1), else 3 or one per address."""
    return max(1, retries if retries is not None else max(DEFAULT_RETRIES, n_addrs))


def decode(frame: bytes, addr: str) -> dict[str, Any]:
    """One reply frame as a map (``bad_request`` naming ``addr`` when it is malformed)."""
    try:
        return decode_reply(frame)
    except CruiseError as e:
        raise CruiseError(e.code, f"{e.message} (from {addr})", **e.extra) from None


def error_of(reply: dict[str, Any]) -> CruiseError:
    """The CruiseError a failure reply stands for."""
    try:
        raise_for_reply(reply)
    except CruiseError as e:
        return e
    raise AssertionError("not a failure reply")


# -- which member, how many times, how long ------------------------------------------------------


class Rotation:
    """The member to ask next. Shared by every call of one client, so the client stays on a
    member that answers.

    :meth:`failed` moves on only when the failed address is still the current one: when several
    calls in flight time out on the same member, the client moves one step, not one per call.
    """

    def __init__(self, addrs: list[str]) -> None:
        self.addrs = addrs
        self.index = 0

    @property
    def current(self) -> str:
        return self.addrs[self.index]

    def failed(self, addr: str) -> None:
        if self.addrs[self.index] == addr:
            self.index = (self.index + 1) % len(self.addrs)


class Attempts:
    """The retry policy of one call, from ``start`` (a monotonic time) to ``start + timeout``.

    The caller loops: ``share = attempts.share(now)``; None means give up and raise
    :meth:`failure`. Otherwise it sends to ``rotation.current`` (telling :meth:`sent`) and waits
    at most ``share`` seconds. No reply: :meth:`timed_out`, and the next member. A success
    reply is the call's result. A failure reply goes to :meth:`retry_after`, which raises a final
    failure or says how long to pause before asking the next member.
    """

    def __init__(self, timeout: float, retries: int, start: float) -> None:
        self.timeout = timeout
        self.retries = retries
        self.deadline = start + timeout
        self.timeouts = 0
        self.pause = RETRY_PAUSE
        self.last_error: CruiseError | None = None
        self.tried: list[str] = []

    def share(self, now: float) -> float | None:
        """Seconds the next attempt may wait for its reply; None when the call must give up."""
        if self.timeouts >= self.retries:
            return None
        remaining = self.deadline - now
        if remaining <= 0:
            return None
        return remaining / (self.retries - self.timeouts)

    def sent(self, addr: str) -> None:
        self.tried.append(addr)

    def timed_out(self) -> None:
        self.timeouts += 1

    def retry_after(self, reply: dict[str, Any], now: float) -> float:
        """For a failure reply: the pause before asking the next member.

        Another member may know a leader: it is asked after a pause, so an election in progress
        can finish. (Any member forwards to the leader, so ``leader`` in the answer is only a
        hint; the next address is as good.)

        Raises:
            CruiseError: the failure, when it is final (not ``unavailable``).
        """
        err = error_of(reply)
        if err.code not in RETRYABLE:
            raise err
        self.last_error = err
        wait = min(self.pause, max(0.0, self.deadline - now))
        self.pause = min(self.pause * 2, RETRY_PAUSE_MAX)
        return wait

    def failure(self, addrs: list[str]) -> CruiseError:
        """What a call that gave up raises: the last ``unavailable`` answer, else a timeout."""
        if self.last_error is not None:
            return self.last_error
        where = ", ".join(dict.fromkeys(self.tried)) or ", ".join(addrs)
        return CruiseError(UNAVAILABLE, f"no reply from {where} within {self.timeout:g}s")


class Numbering:
    """A client's id and the seqs of its records.

    ``take()`` gives each record the next seq (1, 2, 3, ...); every attempt of that record sends
    it. ``done(seq)`` when the record's call ends, however it ends. ``may_send(seq)`` is False
    while ``seq`` is :attr:`window` or more ahead of the oldest unfinished record: sending it
    could move the member's session so far that the oldest record's retry would be answered
    ``stale``. (A client with one record at a time is always within the window.)
    """

    def __init__(self, client_id: str | None = None, window: int = SESSION_WINDOW) -> None:
        if not 1 <= window <= SESSION_WINDOW:
            raise ValueError(f"the record window must be 1..{SESSION_WINDOW}, got {window}")
        self.client_id = client_id or uuid.uuid4().hex
        self.window = window
        self.last = 0  # the last seq taken
        self.oldest = 1  # the oldest seq not done (last + 1 when none is open)
        self._done_ahead: set[int] = set()  # seqs done above `oldest`

    def take(self) -> int:
        self.last += 1
        return self.last

    def may_send(self, seq: int) -> bool:
        return seq < self.oldest + self.window

    def done(self, seq: int) -> bool:
        """Mark ``seq``'s call as ended; True when that moved the window on."""
        if seq < self.oldest or seq > self.last:
            return False
        self._done_ahead.add(seq)
        moved = False
        while self.oldest in self._done_ahead:
            self._done_ahead.remove(self.oldest)
            self.oldest += 1
            moved = True
        return moved


# -- the committed stream (clone pattern) --------------------------------------------------------

_log = logging.getLogger("cruise.client")


def warn_compacted(start: int, snapshot_index: int) -> None:
    """The default ``on_compacted``: a warning on the ``cruise.client`` logger."""
    _log.warning(
        "entries %d..%d are compacted into a snapshot and gone; going on from %d",
        start,
        snapshot_index,
        snapshot_index + 1,
    )


def compacted_snapshot(err: CruiseError, start: int) -> int | None:
    """The snapshot index of a ``compacted`` answer to ``entries`` from ``start``, or None when
    ``err`` is anything else (to be raised)."""
    snap = err.extra.get("snapshot_index")
    if err.code != COMPACTED or type(snap) is not int or snap < start:
        return None
    return snap


def entry(raw: Any) -> dict[str, Any] | None:
    """An entry map as the contract shapes it, or None for anything malformed."""
    if not isinstance(raw, dict):
        return None
    index = raw.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 1:
        return None
    return {
        "index": index,
        "term": raw.get("term"),
        "kind": raw.get("kind"),
        "value": raw.get("value"),
    }


class CloneState:
    """What a Subscriber has delivered, holds and lacks; fed by its driver, which does the I/O.

    Invariant: every entry delivered so far had index <= :attr:`last`, in order, with no gap.

    The driver loop: deliver :meth:`take` while it gives entries (after a ``config`` entry,
    connect to any new publisher); when :attr:`need_fetch`, ask ``entries`` from
    :meth:`begin_fetch` and hand the answer to :meth:`fetched` (or a ``compacted`` failure to
    :meth:`skip_compacted`); otherwise wait for live messages and hand each to :meth:`live`.
    While :attr:`ahead` holds entries past a gap the asked member could not fill yet, ask again
    soon (:meth:`gap_pending`).
    """

    AHEAD_MAX = 10_000  # live entries kept beyond a gap; more are dropped and fetched later

    def __init__(self, *, catching_up: bool) -> None:
        self.last = 0  # set by start_at
        self.ready: deque[dict[str, Any]] = deque()  # contiguous from last + 1, to deliver next
        self.ahead: dict[int, dict[str, Any]] = {}  # live entries past a gap, by index
        self.catching_up = catching_up  # fetch with `entries` until one comes back empty
        self.need_fetch = catching_up
        # (first index wanted, snapshot index) of every jump over compacted history.
        self.skipped: list[tuple[int, int]] = []

    def start_at(self, since: int) -> None:
        """The first index to deliver (0 and 1 both mean the first entry)."""
        self.last = max(since, 1) - 1

    def take(self) -> dict[str, Any] | None:
        """The next deliverable entry, or None; moves live entries from ``ahead`` when they fit."""
        while not self.ready and (self.last + 1) in self.ahead:
            self.ready.append(self.ahead.pop(self.last + 1))
        while self.ready:
            e = self.ready.popleft()
            if e["index"] != self.last + 1:  # a duplicate the queue picked up; never a gap
                continue
            self.last = e["index"]
            self._forget_through(self.last)
            return e
        return None

    def gap_pending(self) -> bool:
        """Live entries wait past a gap: ask ``entries`` again soon (the driver also waits less)."""
        if self.ahead:
            self.need_fetch = True
            return True
        return False

    def begin_fetch(self) -> int:
        """The ``from`` of the next ``entries`` request."""
        self.need_fetch = False
        return self.last + 1

    def fetched(self, start: int, got: list[Any]) -> bool:
        """An ``entries`` answer from ``start``; True if it brought anything deliverable."""
        expect = start
        for raw in got:
            e = entry(raw)
            if e is None or e["index"] != expect:
                break  # entries are contiguous by contract; stop at anything else
            self.ready.append(e)
            expect += 1
        if expect == start:
            self.catching_up = False  # caught up: live from here on
            return False
        self.need_fetch = True  # more may follow (a full or capped batch): ask until one is empty
        return True

    def skip_compacted(self, start: int, snapshot_index: int) -> None:
        """History from ``start`` to ``snapshot_index`` is gone: go on after it."""
        self.skipped.append((start, snapshot_index))
        self.last = snapshot_index
        self._forget_through(snapshot_index)
        self.need_fetch = True

    def live(self, frames: list[bytes]) -> None:
        """One message from the SUB socket; dedupe by index; note a gap."""
        if len(frames) != 2 or frames[0] != ENTRY_TOPIC:
            return
        try:
            e = entry(unpack(frames[1]))
        except FrameError:
            return
        if e is None:
            return
        index = e["index"]
        if index <= self.last or index in self.ahead:
            return  # duplicate: already delivered, or another member published it too
        if len(self.ahead) >= self.AHEAD_MAX and index > max(self.ahead):
            return  # bounded memory: `entries` will bring it later
        self.ahead[index] = e
        if index > self.last + 1 and not self.catching_up:
            self.need_fetch = True  # a gap: fetch the missing range

    def _forget_through(self, index: int) -> None:
        for i in [i for i in self.ahead if i <= index]:
            del self.ahead[i]
