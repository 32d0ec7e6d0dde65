"""The adapter's reply targets and fsync thread: where answers and syncs leave the member.

:class:`Waiter` answers a client over its ROUTER envelope, :class:`FutureWaiter` resolves
an embedded caller's Future, :class:`SyncWorker` runs background fdatasyncs and reports
each back to the member's loop. They satisfy ``cruise.member.ports``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

import brokerless
from brokerless.sockets import NOBLOCK as _NOBLOCK
from brokerless.sockets import NOBLOCK_MORE as _MORE
from brokerless.sockets import send_frames

from . import api
from .errors import BAD_REQUEST, UNAVAILABLE, CruiseError
from .wal import write_snapshot_file

if TYPE_CHECKING:
    from .member.ports import SyncJob

_packb = msgpack.packb


class Waiter:
    """Where the answer to one request goes: a client's ROUTER envelope (see FutureWaiter for Futures)."""

    __slots__ = ("deadline", "sock", "envelope")

    def __init__(self, deadline: float, sock: zmq.Socket, envelope: list[bytes]) -> None:
        self.deadline = deadline
        self.sock = sock
        self.envelope = envelope

    def ok(self, index: int, term: int, result: Any) -> None:
        """The record was applied at ``index`` (``term``) with ``result``."""
        # The hot path (one per record): reply() without its generic steps.
        try:
            body = _packb({"ok": True, "index": index, "term": term, "result": result})
        except TypeError:
            self.reply({"ok": True, "index": index, "term": term, "result": result})  # says why
            return
        send = self.sock.send
        try:
            for f in self.envelope:
                send(f, _MORE)
            send(body, _NOBLOCK)
        except zmq.Again:
            pass  # the client is gone or not reading; it will retry

    def reply(self, d: dict[str, Any]) -> None:
        try:
            body = api.encode(d)
        except TypeError as e:  # a result the state machine returned that msgpack cannot carry
            body = api.encode(api.error(BAD_REQUEST, f"result cannot be encoded: {e}"))
        try:
            send_frames(self.sock, [*self.envelope, body])
        except zmq.Again:
            pass  # the client is gone or not reading; it will retry


class CountedWaiter(Waiter):
    """A client's waiter that also counts its connection's requests in flight: a connection
    may hold at most so many, so a client that floods a member slows itself, not the others
    (``Endpoints.on_client``)."""

    __slots__ = ("counts",)

    def __init__(
        self, deadline: float, sock: zmq.Socket, envelope: list[bytes], counts: dict[bytes, int]
    ) -> None:
        super().__init__(deadline, sock, envelope)
        self.counts = counts
        conn = envelope[0]
        counts[conn] = counts.get(conn, 0) + 1

    def _done(self) -> None:
        conn = self.envelope[0]
        n = self.counts.get(conn, 0) - 1
        if n > 0:
            self.counts[conn] = n
        else:
            self.counts.pop(conn, None)

    def ok(self, index: int, term: int, result: Any) -> None:
        self._done()
        super().ok(index, term, result)

    def reply(self, d: dict[str, Any]) -> None:
        self._done()
        super().reply(d)


class FutureWaiter:
    """A waiter whose answer resolves a ``concurrent.futures.Future`` (the embedded API)."""

    __slots__ = ("deadline", "future")

    def __init__(self, deadline: float, future: Future) -> None:
        self.deadline = deadline
        self.future = future

    def ok(self, index: int, term: int, result: Any) -> None:
        if not self.future.done():
            self.future.set_result((index, term, result))

    def reply(self, d: dict[str, Any]) -> None:
        fut = self.future
        if fut.done():
            return
        if d.get("ok"):
            fut.set_result((d["index"], d["term"], d.get("result")))
        else:
            extra = {k: v for k, v in d.items() if k not in ("ok", "error", "message")}
            fut.set_exception(CruiseError(d.get("error", UNAVAILABLE), d.get("message", ""), **extra))


class _Worker:
    """One thread that takes queued jobs in order and reports each outcome back on the loop.
    ``stop()`` lets the jobs already queued finish, then ends the thread."""

    def __init__(self, reactor: brokerless.Reactor, name: str) -> None:
        self._reactor = reactor
        self._jobs: deque[Any] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, job: Any) -> None:
        with self._cv:
            self._jobs.append(job)
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stopping:
                    self._cv.wait()
                if not self._jobs:
                    return
                batch = list(self._jobs)
                self._jobs.clear()
            self._work(batch)

    def _work(self, batch: list[Any]) -> None:
        raise NotImplementedError

    def _report(self, done: Callable[..., None], *args: Any) -> None:
        try:
            self._reactor.call_soon_threadsafe(done, *args)
        except RuntimeError:
            pass  # the loop is closed: the member is stopping


class SyncWorker(_Worker):
    """Runs fdatasyncs off the member thread, in order, and reports each back to the loop.

    While one sync runs, the loop keeps serving and writing; the next sync then
    covers everything written meanwhile (group commit across loop turns).
    """

    def __init__(
        self, reactor: brokerless.Reactor, done: Callable[[int, BaseException | None], None]
    ) -> None:
        self._done = done
        # Called on this thread with each fdatasync's seconds (cruise.metrics); None: untimed.
        self.observe: Callable[[float], None] | None = None
        super().__init__(reactor, "cruise-fsync")

    def submit(self, seq: int, fn: SyncJob) -> None:
        """Queue a sync job (``run()``/``discard()``); ``done(seq, error)`` follows on the loop."""
        self._put((seq, fn))

    def _work(self, batch: list[tuple[int, SyncJob]]) -> None:
        # The newest job's fdatasync covers every write the older ones stand for.
        for _, job in batch[:-1]:
            job.discard()
        err: BaseException | None = None
        observe = self.observe
        start = time.perf_counter()
        try:
            batch[-1][1].run()
        except OSError as e:
            err = e
        if observe is not None and err is None:
            observe(time.perf_counter() - start)
        self._report(self._done, batch[-1][0], err)


class SnapshotWorker(_Worker):
    """Encodes and writes snapshots off the member thread and reports each back to the loop.

    ``pieces`` yields the snapshot from a frozen copy of the state, so the loop goes on
    applying while it is encoded, written and synced (``cruise.wal.write_snapshot_file``).
    ``done(index, path, error)`` runs on the loop; the member then adopts the file.
    """

    def __init__(
        self,
        reactor: brokerless.Reactor,
        directory: str,
        fsync: bool,
        done: Callable[[int, Any, BaseException | None], None],
    ) -> None:
        self._directory = directory
        self._fsync = fsync
        self._done = done
        # Called on this thread after each snapshot is written, with its size and how long the
        # encoding, writing and syncing lasted (for cruise.metrics); None when nobody measures.
        self.observe: Callable[[int, float], None] | None = None
        super().__init__(reactor, "cruise-snapshot")

    def write(self, index: int, term: int, pieces: Callable[[], Any], meta: dict | None = None) -> None:
        self._put((index, term, pieces, meta))

    def discard(self, path: str) -> None:
        """Delete a replaced snapshot file here, not on the loop (``DiskStorage.discard``)."""
        self._put(path)

    def _work(self, batch: list[Any]) -> None:
        for item in batch:
            if isinstance(item, str):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item)
                continue
            index, term, pieces, meta = item
            path: str | None = None
            err: BaseException | None = None
            observe = self.observe
            start = time.perf_counter()
            try:
                path = write_snapshot_file(self._directory, index, term, pieces(), meta, fsync=self._fsync)
            except Exception as e:  # a disk error, or a state machine's encoding that failed
                err = e
            if observe is not None and path is not None:
                with contextlib.suppress(OSError):  # a figure missed must not lose the snapshot
                    observe(os.path.getsize(path), time.perf_counter() - start)
            # The loop may be closed (the member stopping): the file is adopted on start.
            self._report(self._done, index, path, err)
