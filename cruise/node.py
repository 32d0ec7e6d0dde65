"""The member process's adapter: ZeroMQ sockets, the WAL and threads around a :class:`Member`.

Theory of operation
-------------------
Every decision (what to persist, send, apply and answer, and in which order) is
``cruise.member``'s, which the simulator drives too. This module only moves bytes:

- one thread runs a :class:`brokerless.Reactor`; the member's sockets
  (:class:`~cruise.endpoints.Endpoints`, also its ``Transport``) are read on it and
  feed ``Member.on_peer``, ``Member.submit`` and ``Member.on_forward_reply``;
- timers feed ``Member.tick`` and ``Member.sweep``; the member asks for
  ``Member.process`` at the end of a turn through ``call_soon``, so a burst of
  requests becomes one batch;
- ``DiskStorage`` is the member's ``Disk``, :class:`~cruise.outlets.SyncWorker` its
  ``Syncer`` in background-fsync mode, :class:`~cruise.outlets.FutureWaiter` the
  answer slot of an embedded ``record``.

Threads: ``record``, ``stop``, ``on_apply`` and the status properties may be called
from any thread: ``record`` and ``stop`` hand work to the loop with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

import brokerless

from . import api
from .config import ClusterConfig, ConfigError, load_config
from .core import CoreConfig
from .endpoints import Endpoints
from .errors import BAD_REQUEST, UNAVAILABLE, CruiseError
from .fsm import Applied, StateMachine
from .identity import IdentityFile
from .logs import get_logger
from .machines import MachineError, check_machine, load_machine
from .member import Member, MemberConfig
from .outlets import FutureWaiter, SnapshotWorker, SyncWorker
from .timing import core_timing
from .wal import DiskStorage

if TYPE_CHECKING:
    from .metrics import MemberMetrics

SWEEP_S = 0.05  # how often waiting requests are checked against their deadline


def machine_for(config: ClusterConfig, machine: Any = None) -> StateMachine:
    """``machine`` checked to be a state machine, or (None) a new one for ``config.state_machine``.

    Raises:
        ConfigError: naming ``state_machine`` and the config file, with one line saying why.
    """
    try:
        if machine is None:
            return load_machine(config.state_machine)
        return check_machine(machine)
    except MachineError as e:
        raise ConfigError("state_machine", str(e), config.path) from None


# Member events worth more than info: something the operator or the embedding program must see.
_EVENT_LEVELS = {
    "on_apply_callback_failed": "error",
    "fsync_failed": "error",
    "snapshot_failed": "error",
    "disk_full": "error",
    "compaction_deferred": "warning",
    "cluster_id_unsaved": "warning",
}


class Node:
    """One cruise member. See the module docstring for how it works.

    Args:
        config: the loaded cluster configuration; ``config.id`` names this member.
        state_machine: what records apply to (default: a new one for ``config.state_machine``).
        logger: a structlog logger; one bound to the member id by default.
    """

    # Where fsync runs. Inline (the default) blocks the loop for the fsync, and the
    # requests that arrive meanwhile form the next batch: on a machine with few cores and
    # three members that is faster, because every hand-off to another thread waits for a
    # CPU and the GIL. Background (CRUISE_BACKGROUND_FSYNC=1) keeps the loop serving while
    # the disk works: the better choice where an fsync takes milliseconds. Both are tested.
    background_fsync = os.environ.get("CRUISE_BACKGROUND_FSYNC", "0") == "1"

    def __init__(
        self, config: ClusterConfig, *, state_machine: StateMachine | None = None, logger: Any = None
    ) -> None:
        self.config = config
        self.me = config.me
        self.machine = machine_for(config, state_machine)
        self.log = logger or get_logger(node=self.me.id)
        self._on_apply: list[Callable[[Applied], None]] = []
        self._thread: threading.Thread | None = None
        self._opened = self._started = self._closed = self._stop_requested = False
        self._lock = threading.Lock()
        self._reactor: brokerless.Reactor | None = None
        self.member: Member | None = None
        self._metrics: MemberMetrics | None = None  # the /metrics endpoint, when `metrics` is set

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        id: str | None = None,
        state_machine: StateMachine | str | None = None,
        *,
        logger: Any = None,
        **overrides: Any,
    ) -> Node:
        """Load ``path`` and build the member ``id``.

        ``state_machine``: None for the config's ``state_machine``; a name (``"stream"``,
        ``"kv"``, ``"package.module:Class"``) that wins over it; or a StateMachine instance.
        ``logger``: a structlog-style logger for this member (default: structlog's, bound to
        the member id, configured however the host program configured structlog).
        ``overrides`` replace config keys (e.g. ``fsync=False``, ``data_dir=...``).

        Raises:
            ConfigError: a bad config, an unknown override, or a state machine that cannot be
                made (naming ``state_machine`` and the file). Nothing is opened or bound yet.
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
        if isinstance(state_machine, str):
            cfg = replace(cfg, state_machine=state_machine)
            state_machine = None
        return cls(cfg, state_machine=machine_for(cfg, state_machine), logger=logger)

    # -- public API (any thread) ---------------------------------------------------------------
    @property
    def id(self) -> str:
        """This member's id."""
        return self.me.id

    @property
    def role(self) -> str:
        """``follower``, ``candidate`` or ``leader``."""
        return self.member.raw.role if self.member is not None else "follower"

    @property
    def leader(self) -> str | None:
        return self.member.raw.leader if self.member is not None else None

    @property
    def term(self) -> int:
        return self.member.raw.term if self.member is not None else 0

    def on_apply(self, callback: Callable[[Applied], None]) -> None:
        """Call ``callback(entry)`` on the member thread for every applied entry, in index order."""
        self._on_apply.append(callback)

    def open(self) -> None:
        """Open storage and sockets (errors raise here) without running the loop yet.

        :meth:`start` and :meth:`run` open the node themselves; calling this first lets a
        program do its own setup between the two (``cruise run`` freezes the garbage
        collector's view of everything loaded at start-up here).
        """
        if self._opened:
            raise RuntimeError("a Node can be opened once")
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
            reactor = self._reactor
        if reactor is not None and not reactor.closed:
            reactor.stop()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def wait_for_leader(self, timeout: float = 10.0) -> str:
        """Block until this member knows a leader; return its id.

        Raises:
            CruiseError: ``unavailable`` when none is known within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while (leader := self.leader) is None:
            if time.monotonic() >= deadline:
                raise CruiseError(UNAVAILABLE, f"no leader known within {timeout} s")
            time.sleep(0.01)
        return leader

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, value: Any) -> Future:
        """Record ``value``; the Future resolves to ``(index, term, result)`` once it is applied here.

        Fails with CruiseError (``unavailable``, ``too_large``) as the client protocol does.
        """
        fut: Future = Future()
        limit = self.config.max_value_bytes
        if not (type(value) in (str, bytes) and len(value) * 4 + 9 <= limit):
            try:
                size = len(msgpack.packb(value, use_bin_type=True))
            except (TypeError, ValueError) as e:
                fut.set_exception(CruiseError(BAD_REQUEST, f"value cannot be encoded: {e}"))
                return fut
            if size > limit:
                fut.set_exception(CruiseError("too_large", f"value of {size} bytes is over {limit}"))
                return fut
        reactor, member = self._reactor, self.member
        if reactor is None or member is None or reactor.closed or self._stop_requested:
            fut.set_exception(CruiseError(UNAVAILABLE, "the member is not running"))
            return fut
        # No (client, seq): a local record is never retried; forwarding stamps one if needed.
        waiter = FutureWaiter(member.deadline(), fut)
        try:
            reactor.call_soon_threadsafe(member.submit, api.Record(value, None, None), waiter, None)
        except RuntimeError:
            fut.set_exception(CruiseError(UNAVAILABLE, "the member is not running"))
        return fut

    # -- opening and closing -------------------------------------------------------------------
    def _begin(self) -> None:
        if self._started:
            raise RuntimeError("a Node can be started once")
        self._started = True
        if not self._opened:
            self._open()

    def _open(self) -> None:
        self._opened = True
        cfg, me, log = self.config, self.me, self.log
        timing = core_timing(cfg.heartbeat_ms, cfg.election_timeout_ms)
        # The YAML's members are the configuration of a new cluster; a log that states one
        # wins over them. A joining member starts in none: it never campaigns, and learns the
        # configuration from the leader once `add_member` has named it.
        core = CoreConfig(
            me.id,
            () if cfg.join else tuple(m.id for m in cfg.members if m.voter),
            learners=() if cfg.join else tuple(m.id for m in cfg.members if not m.voter),
            election_ticks=timing.election_ticks,
            heartbeat_ticks=timing.heartbeat_ticks,
        )
        if not cfg.fsync:
            log.warning(
                "fsync_disabled",
                message="fsync is OFF: acknowledged records can be lost on a crash; use this for benchmarks only",
            )
        # Bind before touching the disk, so a member that cannot bind (an address in use)
        # leaves no data directory behind. Requests that arrive during recovery wait in the
        # sockets' queues.
        self.endpoints = Endpoints(cfg, log)
        data_dir = Path(cfg.data_dir)
        try:
            self.storage = DiskStorage.open(
                data_dir, fsync=cfg.fsync, logger=log, preallocate=True, segment_bytes=cfg.wal_segment_bytes
            )
        except BaseException:
            self.endpoints.close()
            raise
        try:
            hs = self.storage.initial_state()
            holds_state = hs.term > 0 or self.storage.last_index() > 0 or self.storage.snapshot().index > 0
            self.identity = IdentityFile.open(data_dir, holds_state=holds_state, fsync=cfg.fsync)
        except BaseException:
            self.storage.close()
            self.endpoints.close()
            raise
        log.info(
            "storage_opened",
            data_dir=str(data_dir),
            first_index=self.storage.first_index(),
            last_index=self.storage.last_index(),
            term=self.storage.initial_state().term,
            bytes_cut=getattr(self.storage.recovery_report, "bytes_cut", 0),
            incarnation=f"{self.identity.incarnation:x}",
            cluster=f"{self.identity.cluster:x}" if self.identity.cluster else None,
        )
        with self._lock:
            r = self._reactor = brokerless.Reactor(ctx=self.endpoints.ctx)
            stop_early = self._stop_requested
        self._sync_worker = SyncWorker(r, self._on_synced) if self.background_fsync else None
        self._snapshot_worker = SnapshotWorker(r, str(data_dir), cfg.fsync, self._on_snapshot_written)
        self.storage.discard = self._snapshot_worker.discard
        try:
            member = self.member = Member(
                MemberConfig(
                    core,
                    tuple(m.id for m in cfg.members if m.id != me.id),
                    tuple(m.to_dict() for m in cfg.members),
                    request_timeout=cfg.request_timeout_ms / 1000.0,
                    snapshot_every=cfg.snapshot_every,
                    retain_entries=cfg.retain_entries,
                ),
                self.storage,
                self.machine,
                self.endpoints,
                brokerless.MonotonicClock(),
                schedule=self._schedule,
                drain_peers=self.endpoints.drain_peers,
                syncer=self._sync_worker,
                snapshot_writer=self._snapshot_worker,
                identity=self.identity,
                rng=random.Random(int.from_bytes(os.urandom(16), "big")),
                log=self._member_event,
            )
        except BaseException:  # a damaged snapshot, or a state machine that cannot restore it
            self._snapshot_worker.stop()
            if self._sync_worker is not None:
                self._sync_worker.stop()
            r.close()
            self.endpoints.close()
            self.storage.close()
            raise
        member.driver.callbacks.extend(self._on_apply)
        self._on_apply = member.driver.callbacks  # later on_apply() calls land there too
        self.endpoints.attach(member, r)
        r.call_every(timing.tick_ms / 1000.0, member.tick)
        r.call_every(SWEEP_S, member.sweep)
        if stop_early:
            r.stop()
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
        if me.metrics is not None:
            # Imported here: prometheus_client is loaded only by members that serve metrics.
            from .metrics import serve_metrics

            try:
                self._metrics = serve_metrics(
                    cfg, member, sync_worker=self._sync_worker, snapshot_worker=self._snapshot_worker
                )
            except ConfigError:
                self._close()  # a member that cannot start leaves nothing bound or open
                raise
            log.info("metrics_serving", address=me.metrics)

    def _loop(self) -> None:
        assert self._reactor is not None
        try:
            self._schedule()
            self._reactor.run()
        finally:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._metrics is not None:
            self._metrics.stop()  # first: no scrape reads a member being taken apart
        err = {"ok": False, "error": UNAVAILABLE, "message": "the member is stopping"}
        member = self.member
        assert member is not None and self._reactor is not None
        for w in member.waiters():
            try:
                w.reply(err)
            except zmq.ZMQError:
                pass
        if self._sync_worker is not None:
            self._sync_worker.stop()  # the fsync in flight completes before the files close
        self._snapshot_worker.stop()
        self._reactor.close()
        self.endpoints.close()
        self.storage.close()
        self.log.info("member_stopped", term=member.raw.term, commit_index=member.raw.raft.log.committed)

    # -- the loop's callbacks -------------------------------------------------------------------
    # The loop's callbacks run only after _open() set the member and the reactor.
    def _schedule(self) -> None:
        assert self._reactor is not None
        self._reactor.call_soon(self._process)

    def _process(self) -> None:
        assert self.member is not None and self._reactor is not None
        self.member.process()
        if self.member.failed is not None:
            self._reactor.stop()

    def _on_synced(self, seq: int, err: BaseException | None) -> None:
        assert self.member is not None and self._reactor is not None
        if err is not None:
            self.storage.sync_failed(err)
        self.member.on_synced(seq, err)
        if err is not None:
            self._reactor.stop()

    def _on_snapshot_written(self, index: int, path: Any, err: BaseException | None) -> None:
        assert self.member is not None
        self.member.on_snapshot_written(index, path, err)

    def _member_event(self, event: str, **kw: Any) -> None:
        level = _EVENT_LEVELS.get(event, "info")
        getattr(self.log, level)(event, **kw)
