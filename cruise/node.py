"""The member runtime: sockets, disk and the Ready loop around one core.

Theory of operation
-------------------
One thread runs a :class:`brokerless.Reactor`. Its readers drain every socket
that is ready (peer RPCs on the ``raft`` ROUTER, client requests on the
``client`` ROUTER, replies from leaders to requests this member forwarded),
feeding the core and collecting record proposals; a tick timer feeds
``RawNode.tick``. Whatever a turn fed, one ``_process_ready`` runs at the end of
the turn (``call_soon``), so a burst of requests becomes one batch:

1. propose the collected records as one batch (the leader), or forward them;
2. ``rd = raw.ready()``; send ``rd.eager_messages`` (appends of the leader: the
   followers write while we write, dissertation §10.2.1);
3. append ``rd.entries`` and the hard state to the WAL; fsync once if
   ``rd.must_sync`` (group commit);
4. send ``rd.messages`` (votes and acknowledgements: only after the fsync);
5. apply ``rd.committed``: the state machine, the PUB stream, waiting replies;
   serve confirmed read indexes; ``raw.advance(rd)``.

Clients talk REQ or DEALER to the ``client`` ROUTER (contract section 4). A
follower forwards ``record`` and ``transfer_leader`` to the leader over a DEALER
(one per peer, the ROUTER envelope plus the request id as routing frames) and
relays the answer. While no leader is known, requests wait; every waiting
request has a deadline (``request_timeout_ms``) after which it is answered
``unavailable``. Every queue is bounded; when one is full the request is
answered ``unavailable`` at once rather than held.

Threads: everything above runs on the member thread. ``record``, ``stop``,
``on_apply`` and the status properties may be called from any thread:
``record`` and ``stop`` hand work to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import zmq

import brokerless
from brokerless import split_envelope
from brokerless.sockets import NOBLOCK as _NOBLOCK
from brokerless.sockets import NOBLOCK_MORE as _MORE
from brokerless.sockets import drain, readable, send_frames

from . import api, wire
from .config import ClusterConfig, ConfigError, load_config
from .core import CoreConfig, NotLeader, ProposalDropped, RawNode, Ready, TransferInProgress
from .core.messages import AppendEntries, describe
from .errors import BAD_REQUEST, COMPACTED, UNAVAILABLE, CruiseError
from .fsm import Applied, Applier, QueryNotSupported, StateMachine, StreamMachine
from .logs import get_logger
from .wal import DiskStorage

TICK_MS = 10  # the core's unit of time; heartbeat and election timeouts are counted in it
MAX_DRAIN = 4096  # messages read from one socket per turn, so no socket starves the others
MAX_PENDING = 100_000  # requests waiting for a commit, a leader, a forward or a read
ENTRIES_REPLY_BYTES = 4 << 20  # bound on one `entries` reply
PEER_FRAME_BYTES = 64 << 20  # a peer frame larger than this is dropped
_packb = msgpack.packb


class Waiter:
    """Where the answer to one request goes: a client's ROUTER envelope (see FutureWaiter for Futures)."""

    __slots__ = ("deadline", "sock", "envelope")

    def __init__(
        self, deadline: float, sock: zmq.Socket | None = None, envelope: list[bytes] | None = None
    ) -> None:
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


class FutureWaiter(Waiter):
    """A waiter whose answer resolves a ``concurrent.futures.Future`` (the embedded API)."""

    __slots__ = ("future",)

    def __init__(self, deadline: float, future: Future) -> None:
        super().__init__(deadline)
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


class SyncWorker:
    """Runs fdatasyncs off the member thread, in order, and reports each back to the loop.

    While one sync runs, the loop keeps serving and writing; the next sync then
    covers everything written meanwhile (group commit across loop turns).
    """

    def __init__(
        self, reactor: brokerless.Reactor, done: Callable[[int, BaseException | None], None]
    ) -> None:
        self._reactor = reactor
        self._done = done
        self._jobs: deque[tuple[int, Callable[[], None]]] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cruise-fsync", daemon=True)
        self._thread.start()

    def submit(self, seq: int, fn: Any) -> None:
        """Queue a sync job (``run()``/``discard()``); ``done(seq, error)`` follows on the loop."""
        with self._cv:
            self._jobs.append((seq, fn))
            self._cv.notify()

    def stop(self) -> None:
        """Finish the syncs already submitted, then end the thread."""
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
            # The newest job's fdatasync covers every write the older ones stand for.
            for _, job in batch[:-1]:
                job.discard()
            err: BaseException | None = None
            try:
                batch[-1][1].run()
            except OSError as e:
                err = e
            try:
                self._reactor.call_soon_threadsafe(self._done, batch[-1][0], err)
            except RuntimeError:
                pass  # the loop is closed: the member is stopping


class Node:
    """One cruise member. See the module docstring for how it works.

    Args:
        config: the loaded cluster configuration; ``config.id`` names this member.
        state_machine: what records apply to (default: the ``stream`` machine).
        logger: a structlog logger; one bound to the member id by default.
    """

    # Where fsync runs. Inline (the default) blocks the loop for the fsync, and the
    # requests that arrive meanwhile form the next batch: on a 2-core machine with
    # three members that measured faster (17k vs 14k records/s, single-writer p50 1.05
    # vs 1.3 ms) because every hand-off to another thread waits for a CPU and the GIL.
    # Background (CRUISE_BACKGROUND_FSYNC=1) keeps the loop serving while the disk
    # works: the better choice where an fsync takes milliseconds. Both are tested.
    background_fsync = os.environ.get("CRUISE_BACKGROUND_FSYNC", "0") == "1"

    def __init__(
        self, config: ClusterConfig, *, state_machine: StateMachine | None = None, logger: Any = None
    ) -> None:
        self.config = config
        self.me = config.me
        self.machine = state_machine or StreamMachine()
        self.log = logger or get_logger(node=self.me.id)
        self._on_apply: list[Callable[[Applied], None]] = []
        self._thread: threading.Thread | None = None
        self._opened = False
        self._started = False
        self._closed = False
        self._stop_requested = False
        self._lock = threading.Lock()
        # Status visible to other threads; replaced (never mutated) by the loop.
        self._role = "follower"
        self._leader: str | None = None
        self._term = 0
        self._embedded_client = f"node-{self.me.id}-{uuid.uuid4().hex[:12]}"
        self._embedded_seq = itertools.count(1)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        id: str | None = None,
        state_machine: StateMachine | str | None = "stream",
        **overrides: Any,
    ) -> Node:
        """Load ``path`` (contract section 3) and build the member ``id``.

        ``overrides`` replace config keys (e.g. ``fsync=False``, ``data_dir=...``).

        Raises:
            ConfigError: a bad config, an unknown override, or a state machine this version lacks.
        """
        cfg = load_config(path, id=id)
        if overrides:
            bad = [
                k
                for k in overrides
                if k not in ClusterConfig.__dataclass_fields__ or k in ("path", "members", "id")
            ]
            if bad:
                raise ConfigError(bad[0], "not a key that can be overridden", cfg.path)
            if "data_dir" in overrides:
                overrides["data_dir"] = Path(overrides["data_dir"])
            cfg = replace(cfg, **overrides)
        machine: StateMachine | None
        if state_machine is None or state_machine == "stream":
            name = cfg.state_machine
            if name != "stream":
                raise ConfigError(
                    "state_machine", f"{name!r} is not available in this version (only 'stream')", cfg.path
                )
            machine = StreamMachine()
        elif isinstance(state_machine, StateMachine):
            machine = state_machine
        else:
            raise ConfigError(
                "state_machine", f"{state_machine!r} is not available in this version", cfg.path
            )
        return cls(cfg, state_machine=machine)

    # -- public API (any thread) ------------------------------------------------------
    @property
    def role(self) -> str:
        """``follower``, ``candidate`` or ``leader``."""
        return self._role

    @property
    def leader(self) -> str | None:
        return self._leader

    @property
    def term(self) -> int:
        return self._term

    def on_apply(self, callback: Callable[[Applied], None]) -> None:
        """Call ``callback(entry)`` on the member thread for every applied entry, in index order."""
        self._on_apply.append(callback)

    def open(self) -> None:
        """Open storage and sockets (errors raise here) without running the loop yet.

        :meth:`start` and :meth:`run` open the node themselves; calling this first lets a
        program do its own setup between the two (``cruise run`` freezes the garbage
        collector's view of everything loaded at start-up here). Follow it with
        :meth:`start` or :meth:`run`: they release the files and sockets when the node
        stops, and return at once if :meth:`stop` came first.
        """
        if self._opened:
            raise RuntimeError("a Node can be opened once")
        self._open()

    def _begin(self) -> None:
        if self._started:
            raise RuntimeError("a Node can be started once")
        self._started = True
        if not self._opened:
            self._open()

    def start(self) -> None:
        """Open storage and sockets (errors raise here), then run the loop in a background thread."""
        self._begin()
        self._thread = threading.Thread(target=self._loop, name=f"cruise-{self.me.id}", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Open, then run the loop in this thread until :meth:`stop` (e.g. from a signal handler)."""
        self._begin()
        self._loop()

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the loop after its current turn (an fsync in flight completes), close everything.

        Safe from any thread and from a signal handler; idempotent.
        """
        with self._lock:
            self._stop_requested = True
            reactor = getattr(self, "_reactor", None)
        if reactor is not None and not reactor.closed:
            reactor.stop()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def record(self, value: Any) -> Future:
        """Record ``value``; the Future resolves to ``(index, term, result)`` once it is applied here.

        Fails with CruiseError (``unavailable``, ``too_large``) as the client protocol does.
        """
        fut: Future = Future()
        limit = self.config.max_value_bytes
        if type(value) in (str, bytes) and len(value) * 4 + 9 <= limit:
            pass  # certainly within the limit (UTF-8 is at most 4 bytes a character)
        else:
            try:
                size = len(msgpack.packb(value, use_bin_type=True))
            except (TypeError, ValueError) as e:
                fut.set_exception(CruiseError(BAD_REQUEST, f"value cannot be encoded: {e}"))
                return fut
            if size > limit:
                fut.set_exception(CruiseError("too_large", f"value of {size} bytes is over {limit}"))
                return fut
        reactor = getattr(self, "_reactor", None)
        if reactor is None or reactor.closed or self._stop_requested:
            fut.set_exception(CruiseError(UNAVAILABLE, "the member is not running"))
            return fut
        # No (client, seq): a local record is never retried; forwarding stamps one if needed.
        waiter = FutureWaiter(self._deadline(), fut)
        try:
            reactor.call_soon_threadsafe(self._submit_record, api.Record(value, None, None), waiter, None)
        except RuntimeError:
            fut.set_exception(CruiseError(UNAVAILABLE, "the member is not running"))
        return fut

    # -- opening ----------------------------------------------------------------------------
    def _open(self) -> None:
        self._opened = True
        cfg = self.config
        me = self.me
        if cfg.join:
            raise ConfigError(
                "join", "joining a running cluster needs membership changes, not in this version", cfg.path
            )
        self._peers_spec = {m.id: m for m in cfg.members if m.id != me.id}
        voters = tuple(m.id for m in cfg.members if m.voter)
        log = self.log
        if not cfg.fsync:
            log.warning(
                "fsync_disabled",
                message="fsync is OFF: acknowledged records can be lost on a crash; use this for benchmarks only",
            )
        data_dir = Path(cfg.data_dir)
        self.storage = DiskStorage.open(data_dir, fsync=cfg.fsync, logger=log, preallocate=True)
        rep = self.storage.recovery_report
        log.info(
            "storage_opened",
            data_dir=str(data_dir),
            first_index=self.storage.first_index(),
            last_index=self.storage.last_index(),
            term=self.storage.initial_state().term,
            bytes_cut=getattr(rep, "bytes_cut", 0),
        )
        tick_ms = min(TICK_MS, cfg.heartbeat_ms)
        lo, hi = cfg.election_timeout_ms
        core_cfg = CoreConfig(
            me.id,
            voters,
            election_ticks=(max(2, lo // tick_ms), max(2, hi // tick_ms)),
            heartbeat_ticks=max(1, cfg.heartbeat_ms // tick_ms),
        )
        self.raw = RawNode(core_cfg, self.storage, applied=0, logger=self._core_event)
        self.applier = Applier(self.machine)
        self._term = self.raw.term

        self.ctx = brokerless.context()  # its I/O thread yields to this loop (SCHED_BATCH)
        try:
            self._raft_sock = brokerless.router(self.ctx, me.raft, hwm=100_000)
            self._raft_sock.setsockopt(zmq.MAXMSGSIZE, PEER_FRAME_BYTES)
            self._client_sock = brokerless.router(self.ctx, me.client, hwm=100_000)
            self._client_sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_value_bytes + (64 << 10))
            self._pub = brokerless.xpub(self.ctx, me.publish)
        except Exception:
            self.ctx.destroy(linger=0)
            self.storage.close()
            raise
        self._peer_socks: dict[str, zmq.Socket] = {}
        for pid, spec in self._peers_spec.items():
            self._peer_socks[pid] = brokerless.dealer(
                self.ctx, spec.raft, identity=me.id.encode(), hwm=100_000
            )
        # DEALERs to each peer's client address, for forwarding; connected now so they are
        # ready by the time a request needs them.
        self._fwd_socks: dict[str, zmq.Socket] = {
            pid: brokerless.dealer(self.ctx, spec.client, hwm=100_000)
            for pid, spec in self._peers_spec.items()
        }

        with self._lock:
            self._reactor = brokerless.Reactor(ctx=self.ctx)
            stop_early = self._stop_requested
        r = self._reactor
        r.add_reader(self._raft_sock, self._on_peer)
        r.add_reader(self._client_sock, self._on_client)
        r.add_reader(self._pub, self._on_subscription)
        # Topics someone subscribes to: while there are none, applying publishes nothing.
        self._topics: set[bytes] = set()
        for sock in self._fwd_socks.values():
            r.add_reader(sock, self._on_forward_reply)
        r.call_every(tick_ms / 1000.0, self._on_tick)
        r.call_every(0.05, self._sweep)
        if stop_early:
            r.stop()

        # Loop state.
        self._sync_seq = 0
        self._deferred_sync = 0  # the held sync _process_ready runs before the turn ends
        self._syncs: deque[list] = deque()  # [seq, durable points, held messages], oldest first
        # The fsync thread exists only in background mode.
        self._sync_worker = SyncWorker(r, self._on_synced) if self.background_fsync else None
        self._blobs = wire.EntryBlobCache()
        self._proposals: list[tuple[api.Record, Waiter]] = []
        self._prop_items: list[tuple[Any, tuple[str, int] | None]] = []  # (value, origin) per proposal
        self._pending: dict[int, tuple[int, Waiter | list[Waiter]]] = {}  # index -> (term, waiter(s))
        self._pending_origin: dict[tuple[str, int], int] = {}  # (client, seq) -> index
        self._waiting_leader: deque[tuple[Any, Waiter, bytes | None]] = deque()
        self._forwarded: dict[int, Waiter] = {}
        self._reads: dict[int, tuple[Any, Waiter]] = {}  # ctx -> (request, waiter)
        self._reads_confirmed: list[tuple[int, Any, Waiter]] = []
        self._transfers: list[tuple[str, Waiter]] = []
        self._ids = itertools.count(1)
        self._kicked = False
        log.info(
            "member_started",
            id=me.id,
            raft=me.raft,
            client=me.client,
            publish=me.publish,
            members=[m.id for m in cfg.members],
            fsync=cfg.fsync,
            fsync_mode="background" if self.background_fsync else "inline",
        )

    def _loop(self) -> None:
        try:
            self._kick()
            self._reactor.run()
        finally:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        err = {"ok": False, "error": UNAVAILABLE, "message": "the member is stopping"}
        for w in self._all_waiters():
            try:
                w.reply(err)
            except zmq.ZMQError:
                pass
        if self._sync_worker is not None:
            self._sync_worker.stop()  # the fsync in flight completes before the files close
        self._reactor.close()
        self.ctx.destroy(linger=0)
        self.storage.close()
        self.log.info("member_stopped", term=self.raw.term, commit_index=self.raw.raft.log.committed)

    def _all_waiters(self) -> list[Waiter]:
        out = [w for _, w in self._proposals]
        for _, ws in self._pending.values():
            out.extend(ws if type(ws) is list else (ws,))
        out.extend(w for _, w, _ in self._waiting_leader)
        out.extend(f[3] for f in self._forwarded.values())
        out.extend(w for _, w in self._reads.values())
        out.extend(w for _, _, w in self._reads_confirmed)
        out.extend(w for _, w in self._transfers)
        return out

    # -- helpers -------------------------------------------------------------------------------
    def _deadline(self) -> float:
        return time.monotonic() + self.config.request_timeout_ms / 1000.0

    def _kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self._reactor.call_soon(self._process_ready)

    def _core_event(self, event: str, **kw: Any) -> None:
        self.log.info(event, commit_index=self.raw.raft.log.committed if hasattr(self, "raw") else None, **kw)

    def _busy(self) -> bool:
        return (
            len(self._pending) + len(self._waiting_leader) + len(self._forwarded) + len(self._reads)
            > MAX_PENDING
        )

    # -- inputs ---------------------------------------------------------------------------------
    def _on_tick(self) -> None:
        self.raw.tick()
        self._kick()

    def _on_peer(self, sock: zmq.Socket) -> None:
        step = self.raw.step
        for frames in drain(sock, MAX_DRAIN):
            if len(frames) != 2:
                self.log.warning("peer_frame_dropped", reason=f"{len(frames)} frames")
                continue
            ident, frame = frames
            try:
                msg = wire.decode(frame, blobs=self._blobs)
            except wire.WireError as e:
                self.log.warning("peer_frame_dropped", reason=str(e), peer=ident[:64])
                continue
            if msg.to != self.me.id or msg.frm not in self._peers_spec or ident != msg.frm.encode():
                self.log.warning("peer_frame_dropped", reason="wrong sender or recipient", msg=describe(msg))
                continue
            step(msg)
        self._kick()

    def _on_client(self, sock: zmq.Socket) -> None:
        max_value = self.config.max_value_bytes
        deadline = self._deadline()  # one clock read per drain: the requests arrived together
        decode, record, submit = api.decode_request, api.Record, self._submit_record
        for frames in drain(sock, MAX_DRAIN):
            try:
                envelope, body = split_envelope(frames)
            except brokerless.FrameError:
                continue
            waiter = Waiter(deadline, sock, envelope)
            try:
                req = decode(body, max_value)
            except CruiseError as e:
                waiter.reply(e.reply())
                continue
            if type(req) is record:  # the hot path, without the general dispatch
                submit(req, waiter, body[0])
            else:
                self._dispatch(req, waiter, body[0])
        self._kick()

    def _on_subscription(self, sock: zmq.Socket) -> None:
        for _ in range(MAX_DRAIN):
            try:
                msg = sock.recv(_NOBLOCK)
            except zmq.Again:
                break
            if msg[:1] == b"\x01":
                self._topics.add(msg[1:])
            elif msg[:1] == b"\x00":
                self._topics.discard(msg[1:])

    def _dispatch(self, req: Any, waiter: Waiter, frame: bytes | None) -> None:
        t = type(req)
        if t is api.Record:
            self._submit_record(req, waiter, frame)
        elif t is api.Status:
            waiter.reply(self._status())
        elif t is api.Entries:
            self._entries(req, waiter)
        elif t is api.ReadIndexReq or t is api.Query:
            self._read(req, waiter)
        elif t is api.TransferLeader:
            self._transfer(req, waiter, frame)
        else:
            op = "add_member" if t is api.AddMember else "remove_member"
            waiter.reply(
                api.error(
                    BAD_REQUEST,
                    f"{op}: membership changes are not supported by this version; members are fixed",
                )
            )

    # -- records ----------------------------------------------------------------------------------
    def _submit_record(self, req: api.Record, waiter: Waiter, frame: bytes | None) -> None:
        if req.client is not None:
            origin = (req.client, req.seq)
            done = self.applier.lookup(*origin)
            if done is not None:
                waiter.reply({"ok": True, "index": done[0], "term": done[1], "result": done[2]})
                return
            idx = self._pending_origin.get(origin)
            if idx is not None and idx in self._pending:
                term, ws = self._pending[idx]
                self._pending[idx] = (term, [*ws, waiter] if type(ws) is list else [ws, waiter])
                return
        if self._busy():
            waiter.reply(api.error(UNAVAILABLE, "too many requests in flight; retry later"))
            return
        if self.raw.raft.role == "leader":
            self._proposals.append((req, waiter))
            self._prop_items.append((req.value, None if req.client is None else (req.client, req.seq)))
            self._kick()
        else:
            self._forward_or_wait(req, waiter, frame)

    def _propose_batch(self) -> None:
        batch, self._proposals = self._proposals, []
        items, self._prop_items = self._prop_items, []
        try:
            first, term = self.raw.propose_batch(items)
        except (NotLeader, TransferInProgress):
            for r, w in batch:
                self._forward_or_wait(r, w, None)
            return
        except ProposalDropped as e:
            for _, w in batch:
                w.reply(api.error(UNAVAILABLE, str(e)))
            return
        # One waiter per index (a list only once a retry joins it).
        pending = self._pending
        for i, (r, w) in enumerate(batch, first):
            pending[i] = (term, w)
            if r.client is not None:
                self._pending_origin[(r.client, r.seq)] = i

    # -- forwarding --------------------------------------------------------------------------------
    def _forward_or_wait(self, req: Any, waiter: Waiter, frame: bytes | None) -> None:
        leader = self.raw.leader
        if leader is None or leader == self.me.id:
            if len(self._waiting_leader) >= MAX_PENDING:
                waiter.reply(api.error(UNAVAILABLE, "no leader, and too many requests waiting for one"))
                return
            self._waiting_leader.append((req, waiter, frame))
            return
        if leader not in self._peers_spec:
            waiter.reply(api.error(UNAVAILABLE, f"leader {leader} is not a known member", leader=leader))
            return
        if type(req) is api.Record and req.client is None:
            # Give it an identity so a re-forward after a leader change applies it at most once.
            req = api.Record(req.value, self._embedded_client, next(self._embedded_seq))
            frame = None
        if frame is None:
            frame = self._encode_request(req)
        sock = self._fwd_socks[leader]
        rid = next(self._ids)
        try:
            send_frames(sock, [rid.to_bytes(8, "big"), b"", frame])
        except zmq.Again:
            # Not connected to the leader yet (or its queue is full): park it; the sweep retries.
            self._waiting_leader.append((req, waiter, frame))
            return
        self._forwarded[rid] = (leader, req, frame, waiter)

    def _encode_request(self, req: Any) -> bytes:
        if type(req) is api.Record:
            fields: dict[str, Any] = {"value": req.value}
            if req.client is not None:
                fields.update(client=req.client, seq=req.seq)
            return api.encode_request("record", **fields)
        if type(req) is api.TransferLeader:
            return api.encode_request("transfer_leader", to=req.to)
        raise AssertionError(f"cannot forward {req!r}")

    def _on_forward_reply(self, sock: zmq.Socket) -> None:
        for frames in drain(sock, MAX_DRAIN):
            if len(frames) != 3 or len(frames[0]) != 8:
                continue
            fwd = self._forwarded.pop(int.from_bytes(frames[0], "big"), None)
            if fwd is None:
                continue  # answered already (timed out or re-forwarded)
            waiter = fwd[3]
            try:
                waiter.reply(api.decode_reply(frames[2]))
            except CruiseError as e:
                waiter.reply(e.reply())

    def _reforward(self, leader: str) -> None:
        """Send requests forwarded to a former leader to the new one (they carry a
        (client, seq), so a copy the old leader did commit is not applied twice)."""
        moved = [rid for rid, f in self._forwarded.items() if f[0] != leader]
        for rid in moved:
            _, req, frame, waiter = self._forwarded.pop(rid)
            if type(req) is api.Record:
                self._submit_record(req, waiter, frame)
            elif type(req) is api.TransferLeader:
                self._transfer(req, waiter, frame)

    def _release_waiting(self) -> None:
        if not self._waiting_leader or self.raw.leader is None:
            return
        waiting, self._waiting_leader = self._waiting_leader, deque()
        for req, w, frame in waiting:
            if type(req) is api.Record:
                self._submit_record(req, w, frame)
            elif type(req) is api.TransferLeader:
                self._transfer(req, w, frame)
            else:
                self._read(req, w)

    # -- reads --------------------------------------------------------------------------------------
    def _read(self, req: Any, waiter: Waiter) -> None:
        ctx = next(self._ids)
        if not self.raw.read_index(ctx):
            self._waiting_leader.append((req, waiter, None))
            return
        self._reads[ctx] = (req, waiter)

    def _serve_reads(self) -> None:
        if not self._reads_confirmed:
            return
        applied = self.raw.raft.log.applied
        keep = []
        for index, req, w in self._reads_confirmed:
            if index > applied:
                keep.append((index, req, w))
                continue
            if type(req) is api.Query:
                try:
                    w.reply({"ok": True, "result": self.machine.query(req.query), "index": index})
                except QueryNotSupported as e:
                    w.reply(api.error(BAD_REQUEST, str(e)))
                except Exception as e:  # a state machine's bug or a bad query: answer, keep serving
                    w.reply(api.error(BAD_REQUEST, f"query failed: {type(e).__name__}: {e}"))
            else:
                w.reply({"ok": True, "index": index})
        self._reads_confirmed = keep

    # -- status, entries, transfer -----------------------------------------------------------------
    def _status(self) -> dict[str, Any]:
        st = self.raw.status()
        return {
            "ok": True,
            "id": st["id"],
            "role": st["role"],
            "term": st["term"],
            "leader": st["leader"],
            "commit_index": st["commit_index"],
            "applied_index": st["applied_index"],
            "last_index": st["last_index"],
            "members": [m.to_dict() for m in self.config.members],
        }

    def _entries(self, req: api.Entries, waiter: Waiter) -> None:
        first = self.storage.first_index()
        start = max(req.start, 1)
        if start < first:
            waiter.reply(
                api.error(COMPACTED, f"entries before {first} are compacted", snapshot_index=first - 1)
            )
            return
        hi = min(self.raw.raft.log.applied, start + req.limit - 1)
        out = []
        if start <= hi:
            ents = self.raw.raft.log.slice(start, hi + 1, ENTRIES_REPLY_BYTES)
            shown = self.applier.shown
            out = [shown(e).to_wire() for e in ents]
        waiter.reply({"ok": True, "entries": out})

    def _transfer(self, req: api.TransferLeader, waiter: Waiter, frame: bytes | None) -> None:
        if req.to not in self._peers_spec and req.to != self.me.id:
            waiter.reply(api.error(BAD_REQUEST, f"{req.to!r} is not a member"))
            return
        if self.raw.leader == req.to:
            waiter.reply({"ok": True, "leader": req.to})
            return
        if self.raw.role != "leader":
            self._forward_or_wait(req, waiter, frame)
            return
        try:
            self.raw.transfer_leader(req.to)
        except (NotLeader, ValueError) as e:
            waiter.reply(api.error(UNAVAILABLE, str(e)))
            return
        self._transfers.append((req.to, waiter))

    # -- the Ready loop --------------------------------------------------------------------------------
    def _process_ready(self) -> None:
        self._kicked = False
        if self._proposals:
            self._propose_batch()
        raw = self.raw
        for _ in range(4):
            rd = raw.ready_if_any()
            if rd is None:
                break
            self._handle(rd)
        seq = self._deferred_sync
        if seq:
            # The leader's fsync for this turn, taken last: acknowledgements that came in
            # while the turn ran commit (with the leader's earlier, durable writes) and are
            # answered now, not one fsync later. Under full load about a third of the turns
            # find some, and 16% of the records are answered this way.
            sock = self._raft_sock
            if readable(sock):
                self._on_peer(sock)
                rd = raw.ready_if_any()
                if rd is not None:
                    self._handle(rd)  # whatever it writes joins this sync
            self._deferred_sync = 0
            self.storage.sync()
            self._on_synced(seq, None)

    def _handle(self, rd: Ready) -> None:
        raw, storage = self.raw, self.storage
        blobs = self._blobs
        committed = rd.committed
        notices = None
        if rd.eager_messages:
            if committed:
                # Appends carrying entries go first: replication is what the next replies
                # wait on. Commit notices to followers go after this turn's replies.
                appends, notices = [], []
                for m in rd.eager_messages:
                    (appends if type(m) is AppendEntries and m.entries else notices).append(m)
                if appends:
                    self._send(appends, blobs)
            else:
                self._send(rd.eager_messages, blobs)
        if rd.soft_state is not None:
            self._on_soft_state(rd)
        # Committed entries are durable on a quorum already, whatever this Ready writes.
        # A leader applies them and answers their clients now rather than after this
        # Ready's fsync (under load that fsync is for the next batch, and would delay every
        # reply by it). A follower answers nobody: its acknowledgement below is what the
        # leader waits on, so it applies after sending it.
        if committed and self._role == "leader":
            self._apply(committed)
            committed = None
        if notices:
            self._send(notices, blobs)
        if rd.entries:
            # Encoded once: the blob the leader just sent its followers, or the one a
            # follower received (cached by key), is also the WAL record's body. The hard
            # state (a new commit index, most turns) goes in the same write.
            storage.append(rd.entries, blobs.blob(rd.entries), rd.hard_state)
        elif rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        # With background fsync the sync runs on the sync thread; until it covers this
        # write, this Ready's messages (and every later Ready's) wait, and the leader
        # does not count itself. Inline, a follower syncs here and goes on; a leader syncs
        # at the end of the turn, holding the same way until then.
        if rd.must_sync:
            if self.background_fsync:
                fn = storage.begin_sync()
                if fn is not None:
                    self._sync_worker.submit(self._hold_for_sync(), fn)
            elif self._role == "leader":
                # Inline too, but at the end of the turn (see _process_ready); until then
                # this write is held like a background sync's, so the leader does not count
                # itself for it.
                if not self._deferred_sync:
                    self._deferred_sync = self._hold_for_sync()
            else:
                storage.sync()
        held = bool(self._syncs)
        if held:
            self._syncs[-1][1].append(raw.durable_point(rd))
            self._syncs[-1][2].extend(rd.messages)
        elif rd.messages:
            self._send(rd.messages, blobs)
        if committed:
            self._apply(committed)
        blobs.clear()
        for rs in rd.read_states:
            got = self._reads.pop(rs.ctx, None)
            if got is not None:
                self._reads_confirmed.append((rs.index, got[0], got[1]))
        raw.advance(rd, durable=not held)
        self._serve_reads()

    def _hold_for_sync(self) -> int:
        """Open a sync: from now until ``_on_synced`` gets its number, every Ready's
        messages and durable point wait for it."""
        self._sync_seq += 1
        self._syncs.append([self._sync_seq, [], []])
        return self._sync_seq

    def _on_synced(self, seq: int, err: BaseException | None) -> None:
        if err is not None:
            # The disk may have dropped our writes; nothing we promise can be trusted.
            self.storage.sync_failed(err)
            self.log.error("fsync_failed", error=str(err), action="stopping the member")
            self._reactor.stop()
            return
        syncs = self._syncs
        while syncs and syncs[0][0] <= seq:
            _, points, msgs = syncs.popleft()
            for p in points:
                self.raw.mark_durable(p)
            if msgs:
                self._send(msgs, self._blobs)
                self._blobs.clear()
        self._kick()

    def _send(self, msgs: list, blobs: wire.EntryBlobCache) -> None:
        socks = self._peer_socks
        encode = wire.encode
        for m in msgs:
            sock = socks.get(m.to)
            if sock is None:
                continue
            try:
                sock.send(encode(m, blobs), _NOBLOCK)
            except zmq.Again:
                pass  # peer unreachable or its queue is full: Raft retries on its own

    def _apply(self, committed: list) -> None:
        apply = self.applier.apply
        pub = self._pub
        packb = msgpack.packb
        pending = self._pending
        callbacks = self._on_apply
        publish = bool(self._topics)
        for e in committed:
            out = apply(e)
            if publish or callbacks:
                entry = out.entry
                if publish:
                    try:
                        pub.send(b"entry", _MORE)
                        pub.send(packb(entry.to_wire(), use_bin_type=True), _NOBLOCK)
                    except zmq.Again:
                        pass  # a slow subscriber never slows the cluster; it refills gaps with `entries`
                for cb in callbacks:
                    try:
                        cb(entry)
                    except Exception as exc:  # a user's callback must not stop the member
                        self.log.error("on_apply_callback_failed", index=e.index, error=repr(exc))
            got = pending.pop(e.index, None)
            if got is not None:
                term, ws = got
                if e.origin is not None:
                    self._pending_origin.pop(e.origin, None)
                for w in ws if type(ws) is list else (ws,):
                    if term == e.term:
                        w.ok(out.first_index, out.first_term, out.result)
                    else:
                        w.reply(
                            api.error(UNAVAILABLE, "leadership changed before the record committed; retry it")
                        )

    def _on_soft_state(self, rd: Ready) -> None:
        s = rd.soft_state
        role = "candidate" if s.role == "pre-candidate" else s.role
        if s.term != self._term or role != self._role or s.leader != self._leader:
            self.log.info(
                "role_changed",
                role=role,
                term=s.term,
                leader=s.leader,
                commit_index=self.raw.raft.log.committed,
                last_index=self.raw.raft.log.last_index(),
            )
        self._role, self._leader, self._term = role, s.leader, s.term
        if s.leader is not None and self._forwarded:
            self._reforward(s.leader)
        if s.leader is not None:
            if self._transfers:
                keep = []
                for to, w in self._transfers:
                    if to == s.leader:
                        w.reply({"ok": True, "leader": to})
                    else:
                        keep.append((to, w))
                self._transfers = keep
            self._reactor.call_soon(self._release_waiting)

    # -- deadlines ------------------------------------------------------------------------------------
    def _sweep(self) -> None:
        self._release_waiting()
        now = time.monotonic()
        err = api.error(UNAVAILABLE, "no leader or no quorum within the request timeout")
        if self.raw.leader is not None:
            err["leader"] = self.raw.leader
        # Every collection is in arrival order, so expired requests are at the front.
        pending = self._pending
        while pending:
            index = next(iter(pending))
            ws = pending[index][1]
            if (ws[0] if type(ws) is list else ws).deadline > now:
                break
            del pending[index]
            for w in ws if type(ws) is list else (ws,):
                w.reply(err)
        while self._waiting_leader and self._waiting_leader[0][1].deadline <= now:
            self._waiting_leader.popleft()[1].reply(err)
        for coll in (self._forwarded, self._reads):
            while coll:
                key = next(iter(coll))
                v = coll[key]
                w = v[-1]
                if w.deadline > now:
                    break
                del coll[key]
                w.reply(err)
        if self._reads_confirmed and self._reads_confirmed[0][2].deadline <= now:
            keep = []
            for item in self._reads_confirmed:
                if item[2].deadline <= now:
                    item[2].reply(err)
                else:
                    keep.append(item)
            self._reads_confirmed = keep
        if self._transfers:
            keep_t = []
            for to, w in self._transfers:
                if w.deadline <= now:
                    w.reply(
                        api.error(UNAVAILABLE, f"leadership did not move to {to} within the request timeout")
                    )
                else:
                    keep_t.append((to, w))
            self._transfers = keep_t
