"""Python client of a cruise cluster: requests (contract section 4) and the entry stream (section 5).

Theory of operation
-------------------
:class:`Client` follows the ZeroMQ guide's *Lazy Pirate* pattern (zguide ``lpclient.py``): it holds
one REQ socket connected to one member's ``client`` address, sends a request and polls for the
reply with a timeout. A REQ socket that timed out is stuck in the "expecting a reply" state, so on a
timeout the client sets ``LINGER=0``, closes it, opens a fresh one to the *next* address and sends
the same request again, until the call's deadline. Any member accepts any request (a follower
forwards to the leader), so the next address is as good as the first.

A retried ``record`` must be applied at most once. Each :class:`Client` therefore carries a random
``client`` id and numbers its records with ``seq``; every attempt of one :meth:`Client.record` call
sends the *same* ``(client, seq)``, and a member that already applied it answers with the first
attempt's index instead of applying it again.

:class:`Subscriber` follows the guide's *clone* pattern (``clonecli3.py``): it connects a SUB socket
to every member's ``publish`` address *first*, then catches up with ``entries`` requests, then reads
live entries. It keeps the index of the last entry it delivered; anything at or below it is a
duplicate (several members publish the same entries, and catch-up overlaps the live stream) and is
dropped; anything beyond the next index is a gap, filled with an ``entries`` request. When the stream
is quiet it asks ``entries`` again now and then, so an entry published before the SUB connection was
up is not left waiting for the next one to reveal the gap.

The decisions (which member next, how long each attempt waits, the seq numbering, what the clone
pattern delivers) live in :mod:`cruise.client_sansio`, shared with the asyncio client
(:mod:`cruise.aio`); this module does the blocking I/O around them.

Neither class is thread-safe: ZeroMQ sockets belong to one thread. Use one :class:`Client` or
:class:`Subscriber` per thread (:meth:`Subscriber.close` is the exception: it may be called from
another thread to end an iteration).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zmq

from brokerless import req as _req_socket
from brokerless import sub as _sub_socket
from cruise.api import encode_request
from cruise.client_sansio import (  # noqa: F401 (DEFAULT_RETRIES, RETRY_PAUSE: importable here, as before)
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    ENTRY_TOPIC,
    RETRY_PAUSE,
    Attempts,
    CloneState,
    Numbering,
    RecordResult,
    Rotation,
    as_list,
    check_address,
    compacted_snapshot,
    default_retries,
    record_result,
    warn_compacted,
)
from cruise.client_sansio import decode as _decode
from cruise.client_sansio import error_of as _error_of
from cruise.errors import UNAVAILABLE, CruiseError
from cruise.security import client_keys

__all__ = ["Client", "RecordResult", "Subscriber", "CruiseError", "status_all", "check_address"]


class Client:
    """Requests to a cruise cluster over REQ sockets, with Lazy Pirate failover.

    Args:
        addrs: one or more members' ``client`` addresses (``tcp://host:port``). Attempts go round them,
            starting with the first.
        timeout: seconds one call may take in all, attempts included. Each attempt gets an equal share
            of what is left (``remaining / attempts_left``).
        retries: how many attempts of one call may time out (at least 1) before it fails with
            ``unavailable``. Default: 3, or one per address when there are more addresses than that.
            ``unavailable`` *answers* are retried (on the next member) until the deadline.
        client_id: the id sent with records for at-most-once retries; default a random uuid4 hex.
        ctx: a ``zmq.Context``; default the process-wide instance.

    Raises:
        ValueError: an address ZeroMQ cannot connect to, or no address at all.

    A Client is for one thread. It is a context manager; :meth:`close` closes its socket (the
    context, when given, stays the caller's).
    """

    def __init__(
        self,
        addrs: Iterable[str] | str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | None = None,
        client_id: str | None = None,
        ctx: zmq.Context | None = None,
        key: str | os.PathLike[str] | None = None,
        server_key: Any = None,
    ) -> None:
        self.addrs = as_list(addrs)
        # CURVE: your .key_secret, and the members' public key(s) (cruise.security.ClientKeys).
        self.curve = client_keys(key, server_key)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        self.retries = default_retries(retries, len(self.addrs))
        # One seq per record() call, shared by its retries (one call at a time: always in the window).
        self._numbers = Numbering(client_id)
        self._ctx = ctx or zmq.Context.instance()
        for a in self.addrs:
            check_address(a)
        self._members = Rotation(self.addrs)  # the member to try next
        self._sock: zmq.Socket | None = None
        self._sock_addr: str | None = None

    @property
    def client_id(self) -> str:
        """The id sent with records for at-most-once retries."""
        return self._numbers.client_id

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket (LINGER=0: an unanswered request is dropped). Safe to call twice."""
        self._drop_socket()

    # -- the Lazy Pirate core --------------------------------------------------------------

    def _socket(self) -> tuple[zmq.Socket, str]:
        if self._sock is None:
            addr = self._members.current
            opts = None if self.curve is None else self.curve.options(addr)
            self._sock, self._sock_addr = _req_socket(self._ctx, addr, options=opts), addr  # LINGER=0
        assert self._sock_addr is not None
        return self._sock, self._sock_addr

    def _drop_socket(self) -> None:
        """Forget the current socket: after a timeout a REQ socket cannot send again."""
        if self._sock is not None:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.close()
            self._sock = self._sock_addr = None

    def _rotate(self, addr: str) -> None:
        self._drop_socket()
        self._members.failed(addr)

    def _call(self, frame: bytes) -> dict[str, Any]:
        """Send ``frame`` until a member answers or the deadline passes; return the raw reply map.

        At most ``retries`` attempts may time out; each gets an equal share of the time left. An
        ``unavailable`` answer is retried on the next member after a short pause (doubling up to
        half a second) for as long as the deadline allows.
        """
        attempts = Attempts(self.timeout, self.retries, time.monotonic())
        while (share := attempts.share(time.monotonic())) is not None:
            sock, addr = self._socket()
            attempts.sent(addr)
            try:
                sock.send(frame)
                answered = sock.poll(timeout=max(1, int(share * 1000)), flags=zmq.POLLIN)
                raw = sock.recv() if answered else None
            except BaseException:
                self._drop_socket()  # e.g. Ctrl-C mid-wait: this socket still expects a reply
                raise
            if raw is None:
                # No reply in time: this REQ socket is stuck waiting; close it, try the next
                # member with a fresh one (Lazy Pirate).
                attempts.timed_out()
                self._rotate(addr)
                continue
            reply = _decode(raw, addr)
            if reply.get("ok") is True:
                return reply
            pause = attempts.retry_after(reply, time.monotonic())  # raises a final failure
            self._rotate(addr)
            time.sleep(pause)
        raise attempts.failure(self.addrs)

    # -- requests ---------------------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send ``{"op": op, **fields}`` and return the success reply as it came.

        A trailing underscore is dropped from a field name, for Python keywords:
        ``request("entries", from_=1, limit=10)``. A raw ``record`` sent this way carries no
        ``client``/``seq`` unless given, so its retries are not deduplicated; prefer :meth:`record`.

        Raises:
            CruiseError: the cluster answered ``ok: false`` (its code), or nobody answered in time
                (``unavailable``).
        """
        return self._call(encode_request(op, **fields))

    def record(self, value: Any) -> RecordResult:
        """Append ``value`` to the log; return once it is committed and applied.

        Retries (timeouts, ``unavailable``) resend the same ``(client, seq)``, so the value is
        applied at most once even when an earlier attempt got through but its reply was lost.
        """
        seq = self._numbers.take()
        try:
            reply = self.request("record", value=value, client=self.client_id, seq=seq)
        finally:
            self._numbers.done(seq)
        return record_result(reply)

    def query(self, q: Any) -> Any:
        """The state machine's answer to ``q`` (linearizable: the member reads at a read index)."""
        return self.request("query", query=q).get("result")

    def status(self) -> dict[str, Any]:
        """The asked member's status: id, role, term, leader, commit/applied/last index, members."""
        reply = self.request("status")
        reply.pop("ok", None)
        return reply

    def entries(self, start: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Committed entries from index ``start`` on, at most ``limit``, in order.

        Raises:
            CruiseError: ``compacted`` (with ``extra["snapshot_index"]``) when ``start`` is older
                than what the member still holds.
        """
        return list(self.request("entries", from_=start, limit=limit)["entries"])

    def read_index(self) -> int:
        """An index up to which every entry is committed, confirmed by a quorum after the call."""
        return int(self.request("read_index")["index"])

    def add_member(self, id: str, raft: str, client: str, publish: str, *, learner: bool = False) -> int:
        """Add a member through the log; returns the configuration entry's index.

        It joins as a learner; unless ``learner``, the leader promotes it to voter once it
        has caught up, and this returns when that promotion is committed."""
        member = {"id": id, "raft": raft, "client": client, "publish": publish}
        return int(self.request("add_member", member=member, learner=learner)["index"])

    def promote_member(self, id: str) -> int:
        """Make a caught-up learner a voter; returns the configuration entry's index."""
        return int(self.request("promote_member", id=id)["index"])

    def remove_member(self, id: str) -> int:
        """Remove a member through the log; returns the configuration entry's index."""
        return int(self.request("remove_member", id=id)["index"])

    def transfer_leader(self, to: str) -> str:
        """Hand leadership to member ``to``; returns the new leader's id."""
        return str(self.request("transfer_leader", to=to)["leader"])


def status_all(
    addrs: Iterable[str],
    *,
    timeout: float = 1.0,
    ctx: zmq.Context | None = None,
    key: str | os.PathLike[str] | None = None,
    server_key: Any = None,
) -> list[dict[str, Any]]:
    """Ask every address for ``status`` at once; one result per address, in the given order.

    Each result is the status reply (without ``ok``) plus ``"address"``; a member that did not answer
    within ``timeout`` seconds is ``{"address": A, "error": "unreachable"}``, one that answered with an
    error is ``{"address": A, "error": CODE, "message": TEXT}``.
    """
    ctx = ctx or zmq.Context.instance()
    addrs = list(addrs)
    for a in addrs:
        check_address(a)
    curve = client_keys(key, server_key)
    frame = encode_request("status")
    socks: dict[zmq.Socket, int] = {}
    results: list[dict[str, Any]] = [{"address": a, "error": "unreachable"} for a in addrs]
    poller = zmq.Poller()
    try:
        for i, a in enumerate(addrs):
            s = _req_socket(ctx, a, options=None if curve is None else curve.options(a))
            s.send(frame)
            socks[s] = i
            poller.register(s, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        waiting = len(socks)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for s, _ in poller.poll(max(1, int(left * 1000))):
                i = socks[s]
                poller.unregister(s)
                waiting -= 1
                try:
                    reply = _decode(s.recv(), addrs[i])
                except CruiseError as e:
                    results[i] = {"address": addrs[i], "error": e.code, "message": e.message}
                    continue
                if reply.get("ok") is True:
                    reply.pop("ok")
                    results[i] = {"address": addrs[i], **reply}
                else:
                    err = _error_of(reply)
                    results[i] = {"address": addrs[i], "error": err.code, "message": err.message}
    finally:
        for s in socks:
            s.close(linger=0)
    return results


class Subscriber:
    """Committed entries in index order, with no gap and no duplicate (the clone pattern).

    Args:
        addrs: members' ``client`` addresses, used for ``status`` (to learn the ``publish``
            addresses) and ``entries`` (catch-up and gap filling).
        since: the first index to deliver (inclusive; 0 and 1 both mean "from the start"). ``None``
            means live from now: the first entry delivered is the one after the asked member's commit
            index at the time of construction.
        timeout: seconds each ``status``/``entries`` request may take (see :class:`Client`).
        ctx: a ``zmq.Context``; default the process-wide instance.
        publish: the ``publish`` addresses to subscribe to; default: every member's, from ``status``.
        batch: ``limit`` of each ``entries`` request.
        resync: seconds of silence after which the subscriber asks ``entries`` whether it missed
            anything (an entry published before its SUB connection was up).
        on_compacted: called as ``on_compacted(start, snapshot_index)`` when the entries from
            ``start`` are gone behind a snapshot: the subscriber goes on from
            ``snapshot_index + 1``. Without it, that is logged as a warning on the
            ``cruise.client`` logger. :attr:`skipped` lists every such jump.

    Each entry is a dict ``{"index", "term", "kind", "value"}``. Iterate it (``for e in sub``), or call
    :meth:`next` with a timeout. :meth:`close` ends an iteration, also from another thread.

    Raises (from the constructor, :meth:`next` and iteration):
        CruiseError: ``unavailable`` when no member answers ``status``/``entries``.
    """

    _SLICE = 0.2  # longest single poll, so close() from another thread is seen quickly
    _GAP_RETRY = 0.05  # pause before asking again for a gap the asked member cannot fill yet

    def __init__(
        self,
        addrs: Iterable[str] | str,
        *,
        since: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ctx: zmq.Context | None = None,
        publish: Iterable[str] | None = None,
        batch: int = 1000,
        resync: float = 1.0,
        on_compacted: Callable[[int, int], None] | None = None,
        key: str | os.PathLike[str] | None = None,
        server_key: Any = None,
    ) -> None:
        if since is not None and since < 0:
            raise ValueError(f"since must be 0 or more, got {since}")
        self._ctx = ctx or zmq.Context.instance()
        self._client = Client(addrs, timeout=timeout, ctx=self._ctx, key=key, server_key=server_key)
        self._batch = max(1, batch)
        self._resync = resync
        self._on_compacted = on_compacted or warn_compacted
        self._closing = threading.Event()
        self._lock = threading.Lock()  # held while a thread uses the sockets
        self._state = CloneState(catching_up=since is not None)
        self._last_activity = time.monotonic()
        self._publish: list[str] = []
        self._sub = _sub_socket(self._ctx, [], [ENTRY_TOPIC])  # LINGER=0; connected below
        try:
            status = self._client.status() if publish is None or since is None or key else {}
            if self._client.curve is not None:
                self._client.curve.learn(status.get("members", []))
            if publish is None:
                publish = [m["publish"] for m in status.get("members", []) if m.get("publish")]
            if since is None:
                since = int(status.get("commit_index", 0)) + 1
            for p in publish:
                self._connect(p)
        except BaseException:
            self._close_sockets()
            raise
        self._state.start_at(since)

    @property
    def last_index(self) -> int:
        """Index of the last entry delivered (``since - 1`` before the first)."""
        return self._state.last

    @property
    def skipped(self) -> list[tuple[int, int]]:
        """(first index wanted, snapshot index) of every jump over compacted history."""
        return self._state.skipped

    @property
    def publish_addresses(self) -> list[str]:
        return list(self._publish)

    def _connect(self, addr: str) -> None:
        if addr in self._publish:
            return
        check_address(addr)
        if self._client.curve is not None:  # the key of the member at this address, set before connect
            for opt, value in self._client.curve.options(addr).items():
                self._sub.setsockopt(opt, value)
        self._sub.connect(addr)
        self._publish.append(addr)

    # -- delivery ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            entry = self.next()
            if entry is None:
                return
            yield entry

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next entry, waiting at most ``timeout`` seconds (None: until one comes or close()).

        Returns None when the time is up or the subscriber is closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self._state
        with self._lock:
            while True:
                if self._closing.is_set():
                    self._close_sockets()
                    return None
                entry = state.take()
                if entry is not None:
                    if entry.get("kind") == "config":
                        self._refresh_publishers()
                    return entry
                if state.need_fetch:
                    if self._fetch():
                        continue
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return None
                wait = self._SLICE if deadline is None else min(self._SLICE, deadline - now)
                if state.gap_pending():  # a gap the asked member could not fill yet: ask again soon
                    wait = min(wait, self._GAP_RETRY)
                if self._sub.poll(timeout=max(1, int(wait * 1000)), flags=zmq.POLLIN):
                    self._drain_live()
                elif not state.ahead and now - self._last_activity >= self._resync:
                    # Quiet for a while: did we miss something? A best-effort check, so a member
                    # briefly unreachable here is not an error; the live stream goes on.
                    self._last_activity = now
                    try:
                        self._fetch()
                    except CruiseError as e:
                        if e.code != UNAVAILABLE:
                            raise

    def _fetch(self) -> bool:
        """Ask ``entries`` from last + 1; True if it brought anything deliverable."""
        self._last_activity = time.monotonic()
        start = self._state.begin_fetch()
        try:
            got = self._client.entries(start, self._batch)
        except CruiseError as e:
            snap = compacted_snapshot(e, start)
            if snap is None:
                raise
            # History up to the snapshot is gone: say so, and go on after it.
            self._state.skip_compacted(start, snap)
            self._on_compacted(start, snap)
            return True
        return self._state.fetched(start, got)

    def _drain_live(self) -> None:
        """Read every live message waiting; dedupe by index; note gaps."""
        self._last_activity = time.monotonic()
        while True:
            try:
                frames = self._sub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._state.live(frames)

    def _refresh_publishers(self) -> None:
        """After a configuration entry, connect to publishers of members that were added."""
        try:
            status = self._client.status()
        except CruiseError:
            return
        for m in status.get("members", []):
            if m.get("publish"):
                try:
                    self._connect(m["publish"])
                except ValueError:
                    pass

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop: closes the sockets now, or, while another thread is in :meth:`next`, makes that
        thread return None (and close them) within a fraction of a second."""
        self._closing.set()
        if self._lock.acquire(blocking=False):
            try:
                self._close_sockets()
            finally:
                self._lock.release()

    def _close_sockets(self) -> None:
        if not self._sub.closed:
            self._sub.close(linger=0)
        self._client.close()
