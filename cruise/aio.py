"""asyncio client of a cruise cluster, on ``zmq.asyncio``: :class:`Client` and :class:`Subscriber`.

The same semantics as the blocking :mod:`cruise.client`, awaited instead of blocking: failover
across members until a deadline, at-most-once records by ``(client, seq)``, and the clone-pattern
subscriber with no gap and no duplicate. Every decision (which member next, how long an attempt
waits, when to pause, how records are numbered, what the subscriber delivers) comes from
:mod:`cruise.client_sansio`, shared with the blocking client; this module only does the waiting.

Theory of operation
-------------------
*One DEALER socket per member, replies matched by request id.* Several coroutines may use one
:class:`Client` at once. Each attempt of a call sends ``[request id, "", request]`` on the DEALER
connected to the member it asks (the protocol's "several requests in flight" form) and waits, up to
its share of the call's deadline, for the reply that carries the same id; one reader task per socket
hands each reply to the attempt waiting for its id. A lock around a REQ socket (the blocking
client's design) would be simpler, but would make N concurrent calls take N round trips one after
another, and one call waiting on a member that does not answer would hold up all the others. A
DEALER also stays usable after a timeout (a REQ socket would be stuck expecting its reply), so a
timed-out attempt just forgets its id: a late reply to it is dropped, and the next attempt goes to
the next member with a new id. A retried ``record`` resends the same ``(client, seq)``, so it is
applied at most once whichever copy reaches the log, and the retry gets the first copy's answer.

*The record window.* A member's session remembers the last 1024 seqs of a client, so records in
flight must stay within 1024 seqs of the oldest unfinished one, or that one's retry could be
answered ``stale``. A ``record`` whose seq is beyond the window waits (within its timeout) until
older records finish; nothing is sent until then.

*Subscriber.* The same clone pattern as the blocking :class:`cruise.client.Subscriber`: SUB to
every member's ``publish`` address first, catch up with ``entries``, deliver live entries, fill
gaps with ``entries``, drop duplicates by index, and ask ``entries`` after a quiet spell.

Everything belongs to the event loop that first uses it; call :meth:`Client.close` and
:meth:`Subscriber.close` from that loop's thread (from another thread, through
``loop.call_soon_threadsafe``). A Client used again under a new event loop (a second
``asyncio.run``) closes its old sockets and opens new ones.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import zmq
import zmq.asyncio

from brokerless import dealer as _dealer_socket
from brokerless import sub as _sub_socket
from cruise.api import encode_request
from cruise.client_sansio import (
    DEFAULT_TIMEOUT,
    ENTRY_TOPIC,
    SESSION_WINDOW,
    Attempts,
    CloneState,
    Numbering,
    RecordResult,
    Rotation,
    as_list,
    check_address,
    compacted_snapshot,
    decode,
    default_retries,
    record_result,
    warn_compacted,
)
from cruise.errors import UNAVAILABLE, CruiseError
from cruise.security import client_keys

__all__ = ["Client", "CruiseError", "RecordResult", "Subscriber"]

_CLOSED = object()  # what close() hands to an attempt still waiting for its reply
_DRAIN_MAX = 1000  # live messages read in one go before the loop gets a turn


def _async_context(ctx: zmq.Context | None) -> zmq.asyncio.Context:
    """An asyncio context: the one given, or a shadow of the given (default: process-wide) one.

    A shadow shares the context's I/O thread and owns nothing: dropping it terminates nothing.
    """
    if isinstance(ctx, zmq.asyncio.Context):
        return ctx
    return zmq.asyncio.Context(ctx if ctx is not None else zmq.Context.instance())


def _closed_error() -> CruiseError:
    return CruiseError(UNAVAILABLE, "the client was closed while the request waited for a reply")


class Client:
    """Requests to a cruise cluster from coroutines, with failover (one DEALER per member).

    Args:
        addrs: one or more members' ``client`` addresses (``tcp://host:port``). Attempts go round
            them, starting with the first; the client stays on a member that answers.
        timeout: seconds one call may take in all, attempts included (and, for a record, any wait
            for the record window). Each attempt gets an equal share of what is left.
        retries: how many attempts of one call may time out (at least 1) before it fails with
            ``unavailable``. Default: 3, or one per address when there are more addresses than that.
            ``unavailable`` *answers* are retried (on the next member) until the deadline.
        client_id: the id sent with records for at-most-once retries; default a random uuid4 hex.
        ctx: a ``zmq.Context`` or ``zmq.asyncio.Context``; default the process-wide instance (a
            plain context is shadowed, never terminated).
        max_in_flight: the record window, 1..1024: a record whose seq is this far or further
            ahead of the oldest unfinished record waits before it is sent (see the module's
            docstring). 1024 is the member's session window.

    Raises:
        ValueError: an address ZeroMQ cannot connect to, or no address at all.

    Concurrency: any number of coroutines of one event loop may await calls on one Client at
    once. Each call has its own deadline and its own request ids; a reply is matched to the
    attempt that asked for it, so calls never see each other's replies. (See the module's
    docstring for why a DEALER rather than a lock.)

    ``async with Client(...) as c:`` closes it at the end; :meth:`close` closes its sockets (a
    call still waiting for a reply then raises ``unavailable``), and a later call opens new ones.
    """

    def __init__(
        self,
        addrs: Iterable[str] | str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | None = None,
        client_id: str | None = None,
        ctx: zmq.Context | None = None,
        max_in_flight: int = SESSION_WINDOW,
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
        self._numbers = Numbering(client_id, max_in_flight)
        self._ctx = _async_context(ctx)
        for a in self.addrs:
            check_address(a)
        self._members = Rotation(self.addrs)  # the member to ask next, shared by every call
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the sockets belong to
        self._socks: dict[str, zmq.asyncio.Socket] = {}  # one DEALER per member, made on first use
        self._readers: dict[str, asyncio.Task[None]] = {}  # one reply reader per socket
        self._pending: dict[bytes, asyncio.Future[Any]] = {}  # request id -> its attempt's reply
        self._ids = itertools.count(1)
        self._window_moved: asyncio.Event | None = None  # set when the oldest open record ends

    @property
    def client_id(self) -> str:
        """The id sent with records for at-most-once retries."""
        return self._numbers.client_id

    # -- context manager -------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sockets (LINGER=0). Calls waiting for a reply raise ``unavailable`` (like a
        timeout, a record may or may not have been applied). Safe to call twice."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result(_CLOSED)
        self._pending.clear()
        for task in self._readers.values():
            try:
                task.cancel()
            except RuntimeError:  # its event loop is closed: the task is gone with it
                pass
        for sock in self._socks.values():
            sock.close(linger=0)
        self._readers.clear()
        self._socks.clear()

    # -- sockets and replies ---------------------------------------------------------------

    def _socket(self, addr: str) -> zmq.asyncio.Socket:
        """The DEALER to ``addr``, with its reader task; made on first use in this event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self.close()  # sockets and tasks of an earlier event loop
                self._window_moved = None
            self._loop = loop
        sock = self._socks.get(addr)
        reader = self._readers.get(addr)
        if sock is None or reader is None or reader.done():
            if sock is not None:
                sock.close(linger=0)
            # LINGER=0; IMMEDIATE: a request waits to be sent until the member is connected,
            # instead of queueing for a member that is not there.
            # The context is a zmq.asyncio one, so its sockets are asyncio sockets.
            opts = None if self.curve is None else self.curve.options(addr)
            sock = self._socks[addr] = cast(zmq.asyncio.Socket, _dealer_socket(self._ctx, addr, options=opts))
            self._readers[addr] = loop.create_task(self._read(sock), name=f"cruise.aio replies {addr}")
        return sock

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        """Hand every reply to the attempt waiting for its request id; drop the others."""
        pending = self._pending
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError:
                return  # the socket was closed
            if len(frames) == 3 and not frames[1]:
                fut = pending.get(frames[0])
                if fut is not None and not fut.done():
                    fut.set_result(frames[2])
            # Anything else is a reply to an attempt that gave up, or not a reply: dropped.

    async def _attempt(self, frame: bytes, addr: str, share: float) -> bytes | None:
        """Send ``frame`` to ``addr``; its reply, or None when none came within ``share`` seconds."""
        sock = self._socket(addr)
        rid = next(self._ids).to_bytes(8, "big")
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            try:
                async with asyncio.timeout(share):
                    await sock.send_multipart([rid, b"", frame])
                    raw = await fut
            except TimeoutError:
                return None
            except asyncio.CancelledError:
                # close() cancels a send still waiting for the member to be connected; that is
                # not this task being cancelled.
                task = asyncio.current_task()
                if fut.done() and not fut.cancelled() and fut.result() is _CLOSED:
                    if task is None or not task.cancelling():
                        raise _closed_error() from None
                raise
        finally:
            self._pending.pop(rid, None)
        if raw is _CLOSED:
            raise _closed_error()
        return raw

    async def _call(self, frame: bytes, start: float | None = None) -> dict[str, Any]:
        """Send ``frame`` until a member answers or the deadline passes; return the raw reply map.

        The policy of :class:`cruise.client_sansio.Attempts`, as the blocking client's.
        """
        attempts = Attempts(self.timeout, self.retries, time.monotonic() if start is None else start)
        while (share := attempts.share(time.monotonic())) is not None:
            addr = self._members.current
            attempts.sent(addr)
            raw = await self._attempt(frame, addr, share)
            if raw is None:  # no reply in time: the next member
                attempts.timed_out()
                self._members.failed(addr)
                continue
            reply = decode(raw, addr)
            if reply.get("ok") is True:
                return reply
            pause = attempts.retry_after(reply, time.monotonic())  # raises a final failure
            self._members.failed(addr)
            await asyncio.sleep(pause)
        raise attempts.failure(self.addrs)

    # -- requests ---------------------------------------------------------------------------

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send ``{"op": op, **fields}`` and return the success reply as it came.

        A trailing underscore is dropped from a field name, for Python keywords:
        ``request("entries", from_=1, limit=10)``. A raw ``record`` sent this way carries no
        ``client``/``seq`` unless given, so its retries are not deduplicated; prefer :meth:`record`.

        Raises:
            CruiseError: the cluster answered ``ok: false`` (its code), or nobody answered in time
                (``unavailable``).
        """
        return await self._call(encode_request(op, **fields))

    async def record(self, value: Any) -> RecordResult:
        """Append ``value`` to the log; return once it is committed and applied.

        Retries (timeouts, ``unavailable``) resend the same ``(client, seq)``, so the value is
        applied at most once even when an earlier attempt got through but its reply was lost.
        """
        start = time.monotonic()
        numbers = self._numbers
        seq = numbers.take()
        try:
            frame = encode_request("record", value=value, client=numbers.client_id, seq=seq)
            if not numbers.may_send(seq):
                await self._wait_for_window(seq, start + self.timeout)
            reply = await self._call(frame, start)
        finally:
            if numbers.done(seq) and self._window_moved is not None:
                self._window_moved.set()
                self._window_moved = None
        return record_result(reply)

    async def _wait_for_window(self, seq: int, deadline: float) -> None:
        while not self._numbers.may_send(seq):
            left = deadline - time.monotonic()
            if left <= 0:
                raise CruiseError(
                    UNAVAILABLE,
                    f"record not sent: {self._numbers.window} records before it were still in flight "
                    f"after {self.timeout:g}s",
                )
            if self._window_moved is None:
                self._window_moved = asyncio.Event()
            moved = self._window_moved
            try:
                async with asyncio.timeout(left):
                    await moved.wait()
            except TimeoutError:
                pass

    async def query(self, q: Any) -> Any:
        """The state machine's answer to ``q`` (linearizable: the member reads at a read index)."""
        return (await self.request("query", query=q)).get("result")

    async def status(self) -> dict[str, Any]:
        """The asked member's status: id, role, term, leader, commit/applied/last index, members."""
        reply = await self.request("status")
        reply.pop("ok", None)
        return reply

    async def entries(self, start: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Committed entries from index ``start`` on, at most ``limit``, in order.

        Raises:
            CruiseError: ``compacted`` (with ``extra["snapshot_index"]``) when ``start`` is older
                than what the member still holds.
        """
        return list((await self.request("entries", from_=start, limit=limit))["entries"])

    async def read_index(self) -> int:
        """An index up to which every entry is committed, confirmed by a quorum after the call."""
        return int((await self.request("read_index"))["index"])

    async def add_member(
        self, id: str, raft: str, client: str, publish: str, *, learner: bool = False
    ) -> int:
        """Add a member through the log (a learner first, promoted once caught up unless
        ``learner``); returns the configuration entry's index."""
        member = {"id": id, "raft": raft, "client": client, "publish": publish}
        return int((await self.request("add_member", member=member, learner=learner))["index"])

    async def promote_member(self, id: str) -> int:
        """Make a caught-up learner a voter; returns the configuration entry's index."""
        return int((await self.request("promote_member", id=id))["index"])

    async def remove_member(self, id: str) -> int:
        """Remove a member through the log; returns the configuration entry's index."""
        return int((await self.request("remove_member", id=id))["index"])

    async def transfer_leader(self, to: str) -> str:
        """Hand leadership to member ``to``; returns the new leader's id."""
        return str((await self.request("transfer_leader", to=to))["leader"])


class Subscriber:
    """Committed entries in index order, with no gap and no duplicate (the clone pattern).

    Args:
        addrs: members' ``client`` addresses, used for ``status`` (to learn the ``publish``
            addresses) and ``entries`` (catch-up and gap filling).
        since: the first index to deliver (inclusive; 0 and 1 both mean "from the start"). ``None``
            means live from when it starts: the first entry delivered is the one after the asked
            member's commit index at :meth:`start`.
        timeout: seconds each ``status``/``entries`` request may take (see :class:`Client`).
        ctx: a ``zmq.Context`` or ``zmq.asyncio.Context``; default the process-wide instance.
        publish: the ``publish`` addresses to subscribe to; default: every member's, from ``status``.
        batch: ``limit`` of each ``entries`` request.
        resync: seconds of silence after which the subscriber asks ``entries`` whether it missed
            anything (an entry published before its SUB connection was up).
        on_compacted: called as ``on_compacted(start, snapshot_index)`` (a function or a coroutine
            function) when the entries from ``start`` are gone behind a snapshot: the subscriber
            goes on from ``snapshot_index + 1``. Without it, that is logged as a warning on the
            ``cruise.client`` logger. :attr:`skipped` lists every such jump.

    It starts (asks ``status``, connects the SUB socket) in ``async with``, in :meth:`start`, or
    else at the first :meth:`next`. Each entry is a dict ``{"index", "term", "kind", "value"}``.
    Iterate it (``async for e in sub``), or ``await sub.next(timeout)``. Coroutines that call
    :meth:`next` at once take turns, each entry going to one of them. :meth:`close` ends an
    iteration, also one waiting in another coroutine.

    Raises (from :meth:`start`, :meth:`next` and iteration):
        CruiseError: ``unavailable`` when no member answers ``status``/``entries``.
    """

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
        on_compacted: Callable[[int, int], Awaitable[None] | None] | None = None,
        key: str | os.PathLike[str] | None = None,
        server_key: Any = None,
    ) -> None:
        if since is not None and since < 0:
            raise ValueError(f"since must be 0 or more, got {since}")
        self._ctx = _async_context(ctx)
        self._client = Client(addrs, timeout=timeout, ctx=self._ctx, key=key, server_key=server_key)
        self._since = since
        self._publish_given = None if publish is None else list(publish)
        for p in self._publish_given or ():
            check_address(p)
        self._batch = max(1, batch)
        self._resync = resync
        self._on_compacted = on_compacted or warn_compacted
        self._state = CloneState(catching_up=since is not None)
        if since is not None:
            self._state.start_at(since)
        self._started = False
        self._closing = False
        self._lock = asyncio.Lock()  # held by the coroutine in next(), which uses the sockets
        self._sub: zmq.asyncio.Socket | None = None
        self._publish: list[str] = []
        self._wake: asyncio.Future[None] | None = None  # what next() awaits while it waits
        self._last_activity = time.monotonic()

    @property
    def last_index(self) -> int:
        """Index of the last entry delivered (``since - 1`` before the first; for ``since=None``,
        the commit index seen at :meth:`start`)."""
        return self._state.last

    @property
    def skipped(self) -> list[tuple[int, int]]:
        """(first index wanted, snapshot index) of every jump over compacted history."""
        return self._state.skipped

    @property
    def publish_addresses(self) -> list[str]:
        return list(self._publish)

    # -- starting ----------------------------------------------------------------------------

    async def start(self) -> Subscriber:
        """Subscribe, then learn where to start; at most once (later calls return at once)."""
        async with self._lock:
            await self._start()
        return self

    async def _start(self) -> None:
        if self._started or self._closing:
            return
        # Clone pattern: the SUB socket exists and is subscribed before anything is asked.
        # LINGER=0; connected below. An asyncio context's sockets are asyncio sockets.
        self._sub = cast(zmq.asyncio.Socket, _sub_socket(self._ctx, [], [ENTRY_TOPIC]))
        try:
            curve = self._client.curve
            need_status = self._publish_given is None or self._since is None or curve is not None
            status = await self._client.status() if need_status else {}
            if curve is not None:
                curve.learn(status.get("members", []))
            publish = self._publish_given
            if publish is None:
                publish = [m["publish"] for m in status.get("members", []) if m.get("publish")]
            if self._since is None:
                self._state.start_at(int(status.get("commit_index", 0)) + 1)
            for p in publish:
                self._connect(p)
        except BaseException:
            self._close_sockets()
            self._sub = None
            self._publish = []
            raise
        self._started = True
        self._last_activity = time.monotonic()

    def _connect(self, addr: str) -> None:
        if addr in self._publish:
            return
        check_address(addr)
        assert self._sub is not None
        if self._client.curve is not None:  # the key of the member at this address, set before connect
            for opt, value in self._client.curve.options(addr).items():
                self._sub.setsockopt(opt, value)
        self._sub.connect(addr)
        self._publish.append(addr)

    # -- delivery ----------------------------------------------------------------------------

    async def __aenter__(self) -> Subscriber:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> dict[str, Any]:
        entry = await self.next()
        if entry is None:
            raise StopAsyncIteration
        return entry

    async def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next entry, waiting at most ``timeout`` seconds (None: until one comes or close()).

        Returns None when the time is up or the subscriber is closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self._state
        async with self._lock:
            await self._start()
            while True:
                if self._closing:
                    self._close_sockets()
                    return None
                entry = state.take()
                if entry is not None:
                    if entry.get("kind") == "config":
                        await self._refresh_publishers()
                    return entry
                if state.need_fetch and await self._fetch():
                    continue
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return None
                wait = self._last_activity + self._resync - now  # until the quiet-time resync
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if state.gap_pending():  # a gap the asked member could not fill yet: ask again soon
                    wait = min(wait, self._GAP_RETRY)
                if await self._readable(wait):
                    await self._drain_live()
                elif not state.ahead and time.monotonic() - self._last_activity >= self._resync:
                    # Quiet for a while: did we miss something? A best-effort check, so a member
                    # briefly unreachable here is not an error; the live stream goes on.
                    self._last_activity = time.monotonic()
                    try:
                        await self._fetch()
                    except CruiseError as e:
                        if e.code != UNAVAILABLE:
                            raise

    async def _readable(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for a live message; False at the end of the time or on close()."""
        assert self._sub is not None
        # An asyncio socket's poll (POLLIN by default) returns a Future.
        poll = cast(
            "asyncio.Future[list[tuple[Any, int]]]", self._sub.poll(timeout=max(0, math.ceil(wait * 1000)))
        )
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = wake

        def polled(_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        poll.add_done_callback(polled)
        try:
            await wake
        finally:
            self._wake = None
            if not poll.done():
                poll.cancel()
        if self._closing or poll.cancelled() or poll.exception() is not None:
            return False
        return bool(poll.result())

    async def _drain_live(self) -> None:
        """Read the live messages waiting; dedupe by index; note gaps."""
        assert self._sub is not None
        self._last_activity = time.monotonic()
        for _ in range(_DRAIN_MAX):
            try:
                frames = await self._sub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._state.live(frames)

    async def _fetch(self) -> bool:
        """Ask ``entries`` from last + 1; True if it brought anything deliverable."""
        self._last_activity = time.monotonic()
        start = self._state.begin_fetch()
        try:
            got = await self._client.entries(start, self._batch)
        except CruiseError as e:
            snap = compacted_snapshot(e, start)
            if snap is None:
                raise
            # History up to the snapshot is gone: say so, and go on after it.
            self._state.skip_compacted(start, snap)
            told = self._on_compacted(start, snap)
            if inspect.isawaitable(told):
                await told
            return True
        return self._state.fetched(start, got)

    async def _refresh_publishers(self) -> None:
        """After a configuration entry, connect to publishers of members that were added."""
        try:
            status = await self._client.status()
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
        """Stop: closes the sockets now, or, while a coroutine waits in :meth:`next`, makes it
        return None (and close them) at once, or as soon as a request it is making ends."""
        self._closing = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if not self._lock.locked():
            self._close_sockets()

    def _close_sockets(self) -> None:
        if self._sub is not None and not self._sub.closed:
            self._sub.close(linger=0)
        self._client.close()
