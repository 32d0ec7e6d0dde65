"""cruise under load: a 3-member cluster on loopback, and the load generators that drive it.

The cluster
-----------
:class:`CruiseCluster` writes a config (3 members on free loopback ports, ``heartbeat_ms: 50``,
default election timeouts, ``fsync`` as chosen, data dirs in the bench's temp dir) and starts
each member as ``python -m cruise run CFG --id nX --log-format json --log-level warning``, its
output in ``logs/``. With ``embedded=True`` member n1 is not a process but a :class:`cruise.Node`
inside the bench process (the embedded API), and the bench makes it the leader
(``transfer_leader`` when another member won the election). With ``curve=True`` (the *secure*
workload) the config also has ``security``, ``clients.authorized_keys`` and every member's
``public_key`` (:class:`benchlib.secure_side.CurveKeys`), and every socket the bench or a load
process opens to it is a CURVE client with the bench's key.

The workloads (each function below runs in one load process, see :mod:`benchlib.pool`)
----------------------------------------------------------------------------------------
* :func:`closed_loop` -- workload (a), *external*: one DEALER socket to the leader's client
  address keeping K records in flight. Each request is ``[id (8 bytes), b"", body]`` with
  ``body`` = ``msgpack({"op": "record", "value": <value-bytes bytes>, "client": C, "seq": S})``,
  byte for byte what :meth:`cruise.Client.record` sends (:class:`RecordBodies`): ``C`` a
  random hex id per load process and connection, ``S`` = 1, 2, 3, ... So the members do
  what a retrying client costs them (the at-most-once session lookup and update per
  record); ``--no-client-seq`` leaves both fields out. The reply comes back as
  ``[id, b"", reply]`` once the record is committed and applied. Latency = reply time -
  send time. :func:`run_closed` is the same loop for any request body (the kv workloads',
  :mod:`benchlib.kv_cruise`).
* :func:`open_loop` -- *halfload*: the same requests sent on a schedule (a fixed rate, not
  waiting for replies), so the latency measured is that of a cluster at a given load.
* :func:`single_writer` -- (c), *single*: one REQ socket, one record at a time (also the
  client of the *floor* chain, :mod:`benchlib.floor_side`).
* :func:`run_embedded` -- (b), *embedded*: runs in the bench process itself, keeping
  ``--embedded-inflight`` ``node.record(v)`` futures in flight; each future's done-callback
  (on the member thread) records the latency and submits the next record. ``Node.record``
  takes no ``client``/``seq``: a local call is never retried, so none is sent.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import yaml
import zmq

from brokerless.sockets import recv_frames

from .procs import BenchError, Processes, child_env, free_ports, progress, rss_mb, wait_for
from .secure_side import CurveKeys, client_socket_options
from .stats import Window, sleep_until

IDS = ("n1", "n2", "n3")
REQUEST_TIMEOUT = 5.0  # seconds a load process waits for any one reply before calling it lost
_NOBLOCK = zmq.NOBLOCK


class RecordBodies:
    """The msgpack bodies of one client's record requests, as :class:`cruise.Client` builds them.

    ``{"op": "record", "value": V, "client": C, "seq": S}`` with ``C`` this client's id (a
    random uuid4 hex, as ``Client`` draws it) and ``S`` = 1, 2, 3, ... one per record. The
    map's bytes up to the seq are built once; each body is that prefix + the packed seq,
    which is exactly ``msgpack.packb`` of the map (``cruise.api.encode_request``). With
    ``client_seq=False`` every body is ``{"op": "record", "value": V}``.
    """

    def __init__(self, value_bytes: int, client_seq: bool = True, client_id: str | None = None) -> None:
        value = b"v" * value_bytes
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self.seq = 0
        if client_seq:
            self.client: str | None = client_id or uuid.uuid4().hex
            keys = ("op", "record", "value", value, "client", self.client, "seq")
            self._prefix = b"\x84" + b"".join(self._pack(k) for k in keys)  # a 4-entry fixmap
            self._fixed: bytes | None = None
        else:
            self.client = None
            self._fixed = msgpack.packb({"op": "record", "value": value}, use_bin_type=True)

    def next(self) -> bytes:
        """The body of the next record (the next seq)."""
        if self._fixed is not None:
            return self._fixed
        self.seq += 1
        return self._prefix + self._pack(self.seq)


def request(
    ctx: zmq.Context, addr: str, msg: dict, timeout: float = 1.0, options: dict[int, Any] | None = None
) -> dict | None:
    """One REQ round trip; None when nothing answers within ``timeout`` seconds. ``options``
    are set before the connect (a secured cluster's CURVE client options)."""
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    for opt, val in (options or {}).items():
        s.setsockopt(opt, val)
    s.connect(addr)
    try:
        s.send(msgpack.packb(msg, use_bin_type=True))
        if not s.poll(int(timeout * 1000)):
            return None
        reply = msgpack.unpackb(s.recv(), raw=False)
        return reply if isinstance(reply, dict) else None
    finally:
        s.close()


class CruiseCluster:
    """Three cruise members; n1 embedded in this process when ``embedded``; the ``stream``
    state machine unless ``state_machine`` names another (``kv`` for the kv workloads).
    ``settings`` adds config keys (``snapshot_every``, ...); ``log_level`` is the members'
    (``info`` logs their snapshot events). With ``curve`` every socket is a CURVE socket and
    only the bench's client key may connect as a client (:class:`benchlib.secure_side.CurveKeys`)."""

    def __init__(
        self,
        root: Path,
        name: str,
        procs: Processes,
        repo: Path,
        fsync: bool,
        embedded: bool = False,
        state_machine: str | None = None,
        settings: dict[str, Any] | None = None,
        log_level: str = "warning",
        curve: bool = False,
    ) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        (self.dir / "logs").mkdir()
        self.procs = procs
        self.repo = repo
        self.embedded = embedded
        ports = free_ports(9)
        self.members = [
            {
                "id": mid,
                "raft": f"tcp://127.0.0.1:{ports[3 * i]}",
                "client": f"tcp://127.0.0.1:{ports[3 * i + 1]}",
                "publish": f"tcp://127.0.0.1:{ports[3 * i + 2]}",
            }
            for i, mid in enumerate(IDS)
        ]
        cfg = {
            "members": self.members,
            "data_dir": str(self.dir / "data" / "{id}"),
            "heartbeat_ms": 50,
            "fsync": fsync,
        }
        if state_machine is not None:
            cfg["state_machine"] = state_machine  # else the default, stream
        self.curve: CurveKeys | None = None
        if curve:
            self.curve = CurveKeys.generate(self.dir, IDS)
            for m in self.members:
                m["public_key"] = self.curve.members[m["id"]].decode()
            cfg.update(self.curve.config())
        cfg.update(settings or {})
        self.log_level = log_level
        self.config_path = self.dir / "cluster.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.popen: dict[str, Any] = {}
        self.node: Any = None  # the embedded cruise.Node
        self.ctx = zmq.Context()
        self.leader: str | None = None
        self.rss_after_start: dict[str, float | None] = {}

    def client_addr(self, mid: str) -> str:
        return next(m["client"] for m in self.members if m["id"] == mid)

    def curve_job(self, mid: str) -> tuple[bytes, bytes, bytes] | None:
        """The ``curve`` argument of a load job aimed at member ``mid`` (None: plain)."""
        return None if self.curve is None else self.curve.job(mid)

    def start(self, timeout: float = 30.0) -> str:
        """Start the members and wait for an agreed leader; its id."""
        env = child_env(str(self.repo))
        t0 = time.monotonic()
        subprocess_ids = [m for m in IDS if not (self.embedded and m == "n1")]
        how = "n1 embedded in this process, n2 n3 as processes" if self.embedded else "3 processes"
        progress(f"cruise[{self.name}]: starting 3 members ({how})...")
        for mid in subprocess_ids:
            self.start_member(mid, env)
        if self.embedded:
            self._start_embedded()
        try:
            self.leader, _ = wait_for(f"cruise[{self.name}]: a leader", self._agreed_leader, timeout)
        except BenchError as e:
            raise BenchError(f"{e}{self._exited()}; logs in {self.dir / 'logs'}") from None
        if self.embedded and self.leader != "n1":
            progress(f"cruise[{self.name}]: {self.leader} leads; asking it to transfer to n1")
            self._make_n1_leader(timeout)
        progress(f"cruise[{self.name}]: leader {self.leader} ({time.monotonic() - t0:.1f} s)")
        self.rss_after_start = self.rss()
        return self.leader

    def start_member(self, mid: str, env: dict[str, str] | None = None) -> None:
        """Start member ``mid`` as a process (again, after :meth:`stop_member`: same config and
        data dir; its log goes on in the same file)."""
        cmd = [sys.executable, "-m", "cruise", "run", str(self.config_path), "--id", mid]
        cmd += ["--log-format", "json", "--log-level", self.log_level]
        self.popen[mid] = self.procs.spawn(
            f"cruise {mid}", cmd, self.log_path(mid), env=env or child_env(str(self.repo)), cwd=str(self.dir)
        )

    def stop_member(self, mid: str) -> int | None:
        """Stop member process ``mid`` by its pid (SIGTERM, then SIGKILL); its exit code."""
        p = self.popen.pop(mid)
        return self.procs.stop(p)

    def log_path(self, mid: str) -> Path:
        return self.dir / "logs" / f"{mid}.log"

    def data_dir(self, mid: str) -> Path:
        return self.dir / "data" / mid

    def _start_embedded(self) -> None:
        from cruise import Node
        from cruise import logs as cruise_logs

        # The embedded member logs to a file like the others, never to the bench's stdout/stderr.
        self._log_file = open(self.dir / "logs" / "n1.log", "a")
        cruise_logs.configure(fmt="json", level="warning", stream=self._log_file)
        self.node = Node.from_config(self.config_path, id="n1")
        self.node.start()

    def _exited(self) -> str:
        dead = [f"{mid} exited with {p.poll()}" for mid, p in self.popen.items() if p.poll() is not None]
        return f" ({', '.join(dead)})" if dead else ""

    def statuses(self, timeout: float = 0.5) -> dict[str, dict | None]:
        return {
            mid: request(
                self.ctx,
                self.client_addr(mid),
                {"op": "status"},
                timeout,
                client_socket_options(self.curve_job(mid)),
            )
            for mid in IDS
        }

    def _agreed_leader(self) -> str | None:
        if any(p.poll() is not None for p in self.popen.values()):
            raise BenchError(f"cruise[{self.name}]: a member exited{self._exited()}")
        running = set(self.popen) | ({"n1"} if self.embedded else set())  # not a stopped member
        sts = {mid: s for mid, s in self.statuses().items() if mid in running}
        if not all(s and s.get("ok") for s in sts.values()):
            return None
        leaders = {s["leader"] for s in sts.values()}
        if len(leaders) != 1:
            return None
        lead = leaders.pop()
        if lead in sts and sts[lead]["role"] == "leader":
            return lead
        return None

    def _make_n1_leader(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.node.role != "leader":
            if time.monotonic() > deadline:
                raise BenchError(f"cruise[{self.name}]: n1 did not become leader within {timeout:g} s")
            leader = self._agreed_leader()
            if leader and leader != "n1":
                opts = client_socket_options(self.curve_job(leader))
                request(self.ctx, self.client_addr(leader), {"op": "transfer_leader", "to": "n1"}, 3.0, opts)
            time.sleep(0.1)
        self.leader, _ = wait_for(
            f"cruise[{self.name}]: members agreeing n1 leads",
            lambda: "n1" if self._agreed_leader() == "n1" else None,
            timeout,
        )

    def check_leader(self) -> str:
        """The current leader (waiting a while for one); notes a change of leader on stderr."""
        lead, _ = wait_for(f"cruise[{self.name}]: a leader", self._agreed_leader, 20.0)
        if lead != self.leader:
            progress(f"cruise[{self.name}]: leader is now {lead} (was {self.leader})")
            self.leader = lead
        return lead

    def pids(self) -> dict[str, int]:
        out = {mid: p.pid for mid, p in self.popen.items()}
        if self.node is not None:
            out["n1"] = os.getpid()
        return out

    def rss(self) -> dict[str, float | None]:
        """Resident MB per member (n1 embedded: the bench process's own, load generator included)."""
        return {mid: rss_mb(pid) for mid, pid in sorted(self.pids().items())}

    def stop(self) -> None:
        if self.node is not None:
            try:
                self.node.stop(timeout=10)
            except Exception as e:  # stopping must not hide the results
                progress(f"cruise[{self.name}]: embedded n1 did not stop cleanly: {e}")
            self.node = None
        for p in self.popen.values():
            self.procs.stop(p)
        self.ctx.destroy(linger=0)


# -- load generators (run in load processes) ------------------------------------------------------


def _dealer(ctx: zmq.Context, addr: str, curve: tuple[bytes, bytes, bytes] | None = None) -> zmq.Socket:
    """A load DEALER to ``addr``; with ``curve`` (:meth:`CruiseCluster.curve_job`) a CURVE
    client, its keys set before the connect as ZeroMQ requires."""
    s = ctx.socket(zmq.DEALER)
    for opt, val in (client_socket_options(curve) or {}).items():
        s.setsockopt(opt, val)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    s.connect(addr)
    return s


def _send_record(send: Any, pending: dict[bytes, float], n: int, body: bytes, clock: Any) -> None:
    """Send record request ``n`` as ``[request id, "", body]`` and note when it left."""
    rid = n.to_bytes(8, "big")
    pending[rid] = clock()
    send(rid, zmq.SNDMORE)
    send(b"", zmq.SNDMORE)
    send(body)


def _drain_replies(
    sock: zmq.Socket, pending: dict[bytes, float], win: Any, clock: Any, expect: bytes | None = None
) -> int:
    """Read every waiting reply into ``win``; returns how many matched a pending request.

    With ``expect``, a success reply counts only when its bytes contain ``expect`` (a kv
    get's packed value, a kv put's nil result); else it is a ``wrong_result`` failure.
    """
    got = 0
    while True:
        try:
            frames = recv_frames(sock)  # 2.6 us for 3 frames where recv_multipart takes 4
        except zmq.Again:
            return got
        now = clock()
        t0 = pending.pop(frames[0], None)
        if t0 is None:
            continue
        got += 1
        kind = _reply_kind(frames[-1])
        if kind is None and expect is not None and expect not in frames[-1]:
            kind = "wrong_result"
        if kind is None:
            win.success(now, now - t0)
        else:
            win.failure(now, kind)


# How every success reply begins: a msgpack fixmap whose first entry is "ok": true (contract
# section 4; a record's reply has 4 entries, a query's 3).
_OK_KEY = msgpack.packb("ok") + msgpack.packb(True)


def _reply_kind(frame: bytes) -> str | None:
    """None for ``{"ok": true, ...}``, else the error code (or ``bad_reply``)."""
    if frame[1:5] == _OK_KEY and 0x80 <= frame[0] <= 0x8F:
        return None  # a load process checks every reply; the common one without unpacking it
    try:
        reply = msgpack.unpackb(frame, raw=False)
    except (ValueError, msgpack.ExtraData):
        return "bad_reply"
    if isinstance(reply, dict) and reply.get("ok") is True:
        return None
    return str(reply.get("error", "bad_reply")) if isinstance(reply, dict) else "bad_reply"


def closed_loop(
    addr: str,
    inflight: int,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    max_records: int = 0,
    client_seq: bool = True,
    curve: tuple[bytes, bytes, bytes] | None = None,
) -> dict[str, Any]:
    """Keep ``inflight`` records outstanding on one DEALER; the window's completions.

    With ``max_records`` the process sends exactly that many records and every completion
    counts (the window is the whole run): the *memory* workload. With ``curve`` the DEALER
    is a CURVE client (the *secure* workload's secured cluster).
    """
    body = RecordBodies(value_bytes, client_seq).next
    return run_closed(addr, inflight, body, start_at, warmup, seconds, max_records, curve=curve)


def run_closed(
    addr: str,
    inflight: int,
    body: Any,
    start_at: float,
    warmup: float,
    seconds: float,
    max_records: int = 0,
    expect: bytes | None = None,
    curve: tuple[bytes, bytes, bytes] | None = None,
) -> dict[str, Any]:
    """:func:`closed_loop` for any request: ``body()`` makes the next request's body, and
    ``expect`` (see :func:`_drain_replies`) checks each success reply."""
    ctx = zmq.Context()
    sock = _dealer(ctx, addr, curve)
    if max_records:
        start, end = 0.0, float("inf")
    else:
        start = start_at + warmup
        end = start + seconds
    win = Window(start, end)
    pending: dict[bytes, float] = {}
    next_id = 0
    sent = 0
    clock = time.monotonic
    send = sock.send
    sleep_until(start_at)
    t_begin = clock()
    cpu0 = time.process_time()

    def can_send(now: float) -> bool:
        return (sent < max_records) if max_records else (now < end)

    try:
        now = clock()
        while len(pending) < inflight and can_send(now):
            next_id += 1
            _send_record(send, pending, next_id, body(), clock)
            sent += 1
        last_reply = clock()
        while pending:
            if not sock.poll(100):
                now = clock()
                if now - last_reply > REQUEST_TIMEOUT:
                    for _ in range(len(pending)):
                        win.failure(now, "timeout")
                    pending.clear()
                    break
                continue
            got = _drain_replies(sock, pending, win, clock, expect)
            now = clock()
            if got:
                last_reply = now
            # Closed loop: each answer is replaced by a new request while the run lasts.
            for _ in range(got):
                if not can_send(now):
                    break
                next_id += 1
                _send_record(send, pending, next_id, body(), clock)
                sent += 1
        return win.result(
            sent=sent,
            elapsed=clock() - t_begin,
            cpu_s=time.process_time() - cpu0,
            completed=win.completed,
        )
    finally:
        sock.close(linger=0)
        ctx.term()


def open_loop(
    addr: str,
    rate: float,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    client_seq: bool = True,
) -> dict[str, Any]:
    """Send records at ``rate`` per second on a fixed schedule, whatever the replies do.

    The schedule is kept with millisecond sleeps (sends due in the same millisecond go out
    together); latency is measured from each request's actual send. The result carries the
    rate achieved (completions in the window / window).
    """
    ctx = zmq.Context()
    sock = _dealer(ctx, addr)
    body = RecordBodies(value_bytes, client_seq).next
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    pending: dict[bytes, float] = {}
    interval = 1.0 / rate
    next_id = 0
    clock = time.monotonic
    send = sock.send
    sleep_until(start_at)
    cpu0 = time.process_time()
    due = clock()
    last_reply = due
    try:
        while True:
            now = clock()
            while due <= now and due < end:
                next_id += 1
                _send_record(send, pending, next_id, body(), clock)
                due += interval
            if due >= end and not pending:
                break
            if due >= end and now - last_reply > REQUEST_TIMEOUT:
                for _ in range(len(pending)):
                    win.failure(now, "timeout")
                break
            wait_ms = max(1, int((due - now) * 1000)) if due < end else 100
            if sock.poll(wait_ms) and _drain_replies(sock, pending, win, clock):
                last_reply = clock()
        return win.result(sent=next_id, cpu_s=time.process_time() - cpu0, completed=win.completed)
    finally:
        sock.close(linger=0)
        ctx.term()


def single_writer(
    addr: str, value_bytes: int, start_at: float, warmup: float, seconds: float, client_seq: bool = True
) -> dict[str, Any]:
    """One REQ socket, one record at a time (a new socket after a lost reply, Lazy Pirate).

    A lost reply counts as a failure and the next record (the next seq) follows; the real
    client would resend the same seq instead, which no run without errors can tell apart.
    """
    ctx = zmq.Context()
    body = RecordBodies(value_bytes, client_seq).next
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    clock = time.monotonic

    def req() -> zmq.Socket:
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(addr)
        return s

    sock = req()
    sleep_until(start_at)
    cpu0 = time.process_time()
    try:
        while clock() < end:
            request_body = body()
            t0 = clock()
            sock.send(request_body)
            if not sock.poll(int(REQUEST_TIMEOUT * 1000)):
                win.failure(clock(), "timeout")
                sock.close(linger=0)
                sock = req()
                continue
            frame = sock.recv()
            now = clock()
            kind = _reply_kind(frame)
            if kind is None:
                win.success(now, now - t0)
            else:
                win.failure(now, kind)
        return win.result(cpu_s=time.process_time() - cpu0, completed=win.completed)
    finally:
        sock.close(linger=0)
        ctx.term()


# -- embedded (in the bench process) ----------------------------------------------------------


def run_embedded(
    node: Any, inflight: int, value_bytes: int, start_at: float, warmup: float, seconds: float
) -> dict:
    """Keep ``inflight`` ``node.record`` futures outstanding; the window's completions.

    Load starts at ``start_at`` (monotonic); the window opens ``warmup`` seconds later.
    Each future's done-callback runs on the member thread (or inline, if the future was done
    before the callback was added): it records the completion and submits the next record
    until the window closes. The calling thread only waits.
    """
    value = b"v" * value_bytes
    sleep_until(start_at)
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    lock = threading.Lock()
    outstanding = [inflight]
    drained = threading.Event()
    clock = time.monotonic
    record = node.record

    def submit() -> None:
        t0 = clock()
        record(value).add_done_callback(lambda f: done(f, t0))

    def done(fut: Any, t0: float) -> None:
        now = clock()
        exc = fut.exception()
        with lock:
            if exc is None:
                win.success(now, now - t0)
            else:
                win.failure(now, getattr(exc, "code", type(exc).__name__))
            again = now < end  # one record replaces another: outstanding unchanged
            if not again:
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    drained.set()
        if again:
            submit()

    for _ in range(inflight):
        submit()
    sleep_until(end)
    if not drained.wait(REQUEST_TIMEOUT + 5.0):
        with lock:
            lost = outstanding[0]
        raise BenchError(
            f"embedded: {lost} records still unanswered {REQUEST_TIMEOUT + 5:g} s after the window"
        )
    return win.result()
