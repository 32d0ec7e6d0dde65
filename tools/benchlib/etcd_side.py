"""etcd under the same load: a 3-member etcd cluster on loopback, driven over real gRPC.

The cluster: three ``etcd`` processes (whatever ``etcd`` is on PATH; Debian's etcd-server is
3.4) on free loopback ports, data dirs in the bench's temp dir, every other setting at its
default -- so its WAL is fsynced on every commit, as cruise's is with ``fsync: true``.
To get both sides on Debian/Ubuntu::

    apt-get update && apt-get install -y etcd-server   # /usr/bin/etcd (not started as a service here)
    pip install -e '.[bench]'                          # grpcio (and pysyncobj)

The members' CPU per record (``cpu_us_per_rec``) is the three etcd processes' alone; the
gRPC load processes (about 200 us of Python per put) are reported apart
(``client_cpu_us_per_record``).

The client: ``grpcio`` with no generated code. ``channel.unary_unary("/etcdserverpb.KV/Put")``
sends a hand-encoded protobuf ``PutRequest`` (field 1 ``key``, field 2 ``value``: tag byte,
varint length, bytes) and keeps the ``PutResponse`` as raw bytes (a Put is acknowledged
once committed). ``/etcdserverpb.Maintenance/Status`` (an empty request) answers each
member's id (``header.member_id``) and the leader's id (field 4), which is how the bench
finds the leader and health: puts go straight to the leader, as cruise's clients do (etcd
would forward from a follower too, at the cost of a hop).

Workloads (each function runs in one load process; gRPC is only ever imported there):

* :func:`closed_loop` -- *external*: one channel, K calls outstanding;
* :func:`open_loop` -- *halfload*: calls at a fixed rate, whatever the replies do;
* :func:`single_writer` -- *single*: one blocking call at a time;
* *embedded*: n/a (etcd is a server, not a library).

With ``tls`` (the *secure* workload's ``etcd_tls``, :mod:`benchlib.secure_side`) the members
listen on ``https://`` client and peer URLs and ask every client and peer for a certificate of
the bench's CA; the load then opens ``grpc.ssl_channel_credentials`` channels with the CA and
the load's client certificate instead of insecure ones.

The K outstanding calls are made with ``grpc.aio`` by default (K coroutines on one event
loop). ``--etcd-client future`` uses ``future()`` calls instead, K outstanding, completions
handed over from gRPC's callback thread: on a 2-core machine that client spends about twice
the CPU per put and caps etcd at roughly half the puts/s, i.e. it measures the Python client
rather than etcd, so it is not the default.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .procs import BenchError, Processes, free_ports, progress, rss_mb
from .secure_side import client_tls, key_of
from .stats import Window, sleep_until

PUT = "/etcdserverpb.KV/Put"
STATUS = "/etcdserverpb.Maintenance/Status"
REQUEST_TIMEOUT = 5.0
NAMES = ("e1", "e2", "e3")


def available() -> str | None:
    """None when an ``etcd`` binary is on PATH and grpcio imports, else why not."""
    if shutil.which("etcd") is None:
        return "no etcd on PATH; apt-get update && apt-get install -y etcd-server"
    try:
        import grpc  # noqa: F401
    except ImportError:
        return "grpcio is not installed; pip install -e '.[bench]'"
    return None


def version() -> str | None:
    try:
        out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.splitlines()[0] if out else ""
    return first.split(":", 1)[-1].strip() or None


# -- protobuf, by hand --------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def put_request(key: bytes, value: bytes) -> bytes:
    """A serialized ``PutRequest{key, value}``."""
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


def _fields(buf: bytes) -> dict[int, Any]:
    """The top-level fields of a protobuf message: varints as ints, length-delimited as bytes."""
    out: dict[int, Any] = {}
    i = 0
    n = len(buf)
    while i < n:
        key = 0
        shift = 0
        while True:
            b = buf[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        field, wire = key >> 3, key & 7
        if wire == 0:
            val = 0
            shift = 0
            while True:
                b = buf[i]
                i += 1
                val |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            out[field] = val
        elif wire == 2:
            length = 0
            shift = 0
            while True:
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            out[field] = buf[i : i + length]
            i += length
        elif wire == 1:
            out[field] = buf[i : i + 8]
            i += 8
        elif wire == 5:
            out[field] = buf[i : i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def parse_status(raw: bytes) -> dict[str, int]:
    """``StatusResponse`` -> ``{"member_id", "leader", "raft_index", "raft_applied_index",
    "db_size", "revision"}``. ``raft_index`` is the member's commit index; the applied index
    (field 7) is etcd 3.4's and later (0 before)."""
    f = _fields(raw)
    header = _fields(f.get(1, b""))
    return {
        "member_id": header.get(2, 0),
        "leader": f.get(4, 0),
        "raft_index": f.get(5, 0),
        "raft_applied_index": f.get(7, 0),
        "db_size": f.get(3, 0),
        "revision": header.get(3, 0),
    }


# -- the cluster (bench side) ---------------------------------------------------------------------


class EtcdCluster:
    """Three etcd members on loopback; status queries go through a load process (no gRPC here).
    ``extra_args`` go to every member (e.g. ``--snapshot-count``). With ``metrics`` each member
    also serves ``/metrics`` on a port of its own (``--listen-metrics-urls``, :attr:`metrics`),
    which answers from its start, while the client port waits until the member has published
    itself through raft. With ``tls`` (:func:`benchlib.secure_side.make_tls`'s files) client
    and peer URLs are ``https://`` and both sides must show a certificate of its CA."""

    def __init__(
        self,
        root: Path,
        procs: Processes,
        pool: Any,
        name: str = "etcd",
        extra_args: list[str] | None = None,
        metrics: bool = False,
        tls: dict[str, str] | None = None,
    ) -> None:
        self.dir = root / name
        self.tls = tls
        scheme = "https" if tls else "http"
        self.extra_args = list(extra_args or [])
        (self.dir / "logs").mkdir(parents=True)
        self.procs = procs
        self.pool = pool
        ports = free_ports(9 if metrics else 6)
        self.client = {n: f"127.0.0.1:{ports[2 * i]}" for i, n in enumerate(NAMES)}
        self.peer = {n: f"{scheme}://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(NAMES)}
        self.metrics = {n: f"http://127.0.0.1:{port}" for n, port in zip(NAMES, ports[6:], strict=False)}
        self.popen: dict[str, Any] = {}
        self.leader: str | None = None

    def start(self, timeout: float = 30.0) -> str:
        t0 = time.monotonic()
        progress("etcd: starting 3 members...")
        for n in NAMES:
            self.start_member(n)
        deadline = time.monotonic() + timeout
        while True:
            dead = [f"{n} exited with {p.poll()}" for n, p in self.popen.items() if p.poll() is not None]
            if dead:
                raise BenchError(f"etcd: {', '.join(dead)}; logs in {self.dir / 'logs'}")
            lead = self._agreed_leader()
            if lead is not None:
                self.leader = lead
                break
            if time.monotonic() > deadline:
                raise BenchError(f"etcd: no healthy leader within {timeout:g} s; logs in {self.dir / 'logs'}")
            time.sleep(0.2)
        progress(f"etcd: leader {self.leader} at {self.client[self.leader]} ({time.monotonic() - t0:.1f} s)")
        return self.leader

    def start_member(self, n: str) -> None:
        """Start member ``n`` (again, after :meth:`stop_member`: its data dir holds its state,
        so the ``--initial-cluster*`` flags are ignored then); its log goes on in the same file."""
        initial = ",".join(f"{m}={self.peer[m]}" for m in NAMES)
        url = f"{'https' if self.tls else 'http'}://{self.client[n]}"
        cmd = [
            "etcd",
            "--name",
            n,
            "--data-dir",
            str(self.dir / n),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            self.peer[n],
            "--initial-advertise-peer-urls",
            self.peer[n],
            "--initial-cluster",
            initial,
            "--initial-cluster-token",
            "cruise-bench",
            "--initial-cluster-state",
            "new",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        if n in self.metrics:
            cmd += ["--listen-metrics-urls", self.metrics[n]]
        if self.tls:
            # One certificate per member serves its client and its peer URLs (it is valid for
            # both server and client use, as a peer connection needs).
            cert, key, ca = self.tls[n], key_of(self.tls[n]), self.tls["ca"]
            cmd += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth"]
            cmd += ["--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca]
            cmd += ["--peer-client-cert-auth"]
        cmd += self.extra_args
        self.popen[n] = self.procs.spawn(f"etcd {n}", cmd, self.log_path(n))

    def stop_member(self, n: str) -> int | None:
        """Stop member ``n`` by its pid (SIGTERM, then SIGKILL); its exit code."""
        return self.procs.stop(self.popen.pop(n))

    def log_path(self, n: str) -> Path:
        return self.dir / "logs" / f"{n}.log"

    def _agreed_leader(self) -> str | None:
        running = [n for n in NAMES if n in self.popen]  # not a stopped member
        targets = [self.client[n] for n in running]
        job: dict[str, Any] = {"targets": targets, **self.tls_job}
        [sts] = self.pool.run("benchlib.etcd_side:statuses", [job], 30)
        if any(s is None for s in sts):
            return None
        by_id = {s["member_id"]: n for n, s in zip(running, sts, strict=True)}
        leaders = {s["leader"] for s in sts}
        if len(leaders) != 1:
            return None
        return by_id.get(leaders.pop())

    def check_leader(self) -> str:
        deadline = time.monotonic() + 20
        while (lead := self._agreed_leader()) is None:
            if time.monotonic() > deadline:
                raise BenchError("etcd: no agreed leader within 20 s")
            time.sleep(0.2)
        if lead != self.leader:
            progress(f"etcd: leader is now {lead} (was {self.leader})")
            self.leader = lead
        return lead

    @property
    def tls_job(self) -> dict[str, Any]:
        """What a load job needs to reach these members: ``{"tls": ...}`` with TLS, else nothing
        (so a plain cluster's jobs stay as they were)."""
        return {"tls": client_tls(self.tls)} if self.tls else {}

    @property
    def leader_target(self) -> str:
        return self.client[self.leader or NAMES[0]]

    def rss(self) -> dict[str, float | None]:
        return {n: rss_mb(p.pid) for n, p in self.popen.items()}

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.popen.items()}

    def stop(self) -> None:
        for p in self.popen.values():
            self.procs.stop(p)


# -- load generators (run in load processes) -----------------------------------------------------


def _credentials(tls: dict[str, str]) -> Any:
    """gRPC channel credentials from :func:`benchlib.secure_side.client_tls`'s files."""
    import grpc

    def read(key: str) -> bytes:
        return Path(tls[key]).read_bytes()

    return grpc.ssl_channel_credentials(read("ca"), read("key"), read("cert"))


def _sync_channel(target: str, tls: dict[str, str] | None) -> Any:
    import grpc

    return grpc.secure_channel(target, _credentials(tls)) if tls else grpc.insecure_channel(target)


def statuses(targets: list[str], tls: dict[str, str] | None = None) -> list[dict | None]:
    """``Maintenance/Status`` of each target (None where it does not answer within 1 s)."""
    import grpc

    out: list[dict | None] = []
    for t in targets:
        with _sync_channel(t, tls) as ch:
            call = ch.unary_unary(STATUS)
            try:
                out.append(parse_status(call(b"", timeout=1.0)))
            except grpc.RpcError:
                out.append(None)
    return out


def _key(worker: int, i: int) -> bytes:
    return b"bench/%d/%06d" % (worker, i % 100_000)


def closed_loop(
    target: str,
    worker: int,
    inflight: int,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    client: str = "aio",
    tls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Keep ``inflight`` Put calls outstanding on one channel; the window's completions."""
    cpu0 = time.process_time()
    args = (target, worker, inflight, value_bytes, start_at, warmup, seconds, tls)
    if client == "aio":
        win, sent = asyncio.run(_aio_closed(*args))
    else:
        win, sent = _future_closed(*args)
    return win.result(sent=sent, cpu_s=time.process_time() - cpu0, completed=win.completed)


def open_loop(
    target: str,
    worker: int,
    rate: float,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    client: str = "aio",
    tls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Put calls at ``rate`` per second on a fixed schedule, whatever the replies do."""
    cpu0 = time.process_time()
    args = (target, worker, rate, value_bytes, start_at, warmup, seconds, tls)
    if client == "aio":
        win, sent = asyncio.run(_aio_open(*args))
    else:
        win, sent = _future_open(*args)
    return win.result(sent=sent, cpu_s=time.process_time() - cpu0, completed=win.completed)


def single_writer(
    target: str,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    tls: dict[str, str] | None = None,
) -> dict:
    """One blocking Put at a time (grpc's synchronous call: the lowest-latency way to wait)."""
    import grpc

    ch = _sync_channel(target, tls)
    grpc.channel_ready_future(ch).result(timeout=10)
    put = ch.unary_unary(PUT)
    value = b"v" * value_bytes
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    clock = time.monotonic
    n = 0
    try:
        sleep_until(start_at)
        cpu0 = time.process_time()
        while clock() < end:
            n += 1
            t0 = clock()
            try:
                put(put_request(_key(0, n), value), timeout=REQUEST_TIMEOUT)
            except grpc.RpcError as e:
                win.failure(clock(), str(e.code()))
                continue
            now = clock()
            win.success(now, now - t0)
        return win.result(cpu_s=time.process_time() - cpu0, completed=win.completed)
    finally:
        ch.close()


# grpc.aio: one event loop, no thread hand-off per call. About twice the puts/s of the
# future() API from the same client CPU on this kind of machine, so the etcd figures are
# etcd's, not the Python client's.


async def _aio_channel(target: str, tls: dict[str, str] | None = None) -> tuple[Any, Any]:
    import grpc

    ch = grpc.aio.secure_channel(target, _credentials(tls)) if tls else grpc.aio.insecure_channel(target)
    await asyncio.wait_for(ch.channel_ready(), 10)
    return ch, ch.unary_unary(PUT)


class CallCounter(Protocol):
    def started(self, t: float) -> None: ...

    def ended(self) -> None: ...


class Calls:
    """The calls a closed loop started, and the most outstanding at once."""

    __slots__ = ("sent", "outstanding", "most")

    def __init__(self) -> None:
        self.sent = self.outstanding = self.most = 0

    def started(self, t: float) -> None:
        self.sent += 1
        self.outstanding += 1
        if self.outstanding > self.most:
            self.most = self.outstanding

    def ended(self) -> None:
        self.outstanding -= 1


async def put_slot(
    put: Any, key: Callable[[int], bytes], value: bytes, end: float, win: Window, calls: CallCounter
) -> None:
    """One call slot of a closed loop: a Put (of ``key(i)`` for the i-th), the next one the
    moment it ends, until ``end``; each answer goes to ``win``, each call to ``calls``."""
    import grpc

    clock = time.monotonic
    i = 0
    while True:
        t0 = clock()
        if t0 >= end:
            return
        i += 1
        calls.started(t0)
        try:
            await put(put_request(key(i), value), timeout=REQUEST_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            win.failure(clock(), str(e.code()))
            continue
        finally:
            calls.ended()
        now = clock()
        win.success(now, now - t0)


async def _aio_closed(
    target: str,
    worker: int,
    inflight: int,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    tls: dict[str, str] | None = None,
) -> tuple[Window, int]:
    ch, put = await _aio_channel(target, tls)
    value = b"v" * value_bytes
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    calls = Calls()
    try:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        await asyncio.gather(
            *(
                put_slot(put, lambda i, w=w: _key(worker * 1000 + w, i), value, end, win, calls)
                for w in range(inflight)
            )
        )
    finally:
        await ch.close()
    return win, calls.sent


async def _aio_open(
    target: str,
    worker: int,
    rate: float,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    tls: dict[str, str] | None = None,
) -> tuple[Window, int]:
    import grpc

    ch, put = await _aio_channel(target, tls)
    value = b"v" * value_bytes
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    clock = time.monotonic
    interval = 1.0 / rate
    tasks: set[asyncio.Task] = set()

    async def one(i: int) -> None:
        t0 = clock()
        try:
            await put(put_request(_key(worker, i), value), timeout=REQUEST_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            win.failure(clock(), str(e.code()))
            return
        now = clock()
        win.success(now, now - t0)

    n = 0
    try:
        await asyncio.sleep(max(0.0, start_at - clock()))
        due = clock()
        while due < end:
            now = clock()
            while due <= now and due < end:
                n += 1
                t = asyncio.create_task(one(n))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                due += interval
            await asyncio.sleep(max(0.0, due - clock()))
        if tasks:
            await asyncio.wait(set(tasks), timeout=REQUEST_TIMEOUT + 5)
        for t in list(tasks):
            t.cancel()
            win.failure(clock(), "lost")
    finally:
        await ch.close()
    return win, n


# The future() API (``--etcd-client future``): K futures outstanding, completions handed to
# the load loop through a queue from gRPC's callback thread.


def _future_channel(target: str, tls: dict[str, str] | None = None) -> tuple[Any, Any]:
    import grpc

    ch = _sync_channel(target, tls)
    grpc.channel_ready_future(ch).result(timeout=10)
    return ch, ch.unary_unary(PUT)


def _future_closed(
    target: str,
    worker: int,
    inflight: int,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    tls: dict[str, str] | None = None,
) -> tuple[Window, int]:
    ch, put = _future_channel(target, tls)
    value = b"v" * value_bytes
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    done: queue.SimpleQueue = queue.SimpleQueue()
    clock = time.monotonic
    n = 0
    outstanding = 0

    def submit() -> None:
        nonlocal n, outstanding
        n += 1
        outstanding += 1
        t0 = clock()
        fut = put.future(put_request(_key(worker, n), value), timeout=REQUEST_TIMEOUT)
        fut.add_done_callback(lambda f: done.put((t0, clock(), f)))

    try:
        sleep_until(start_at)
        for _ in range(inflight):
            submit()
        while outstanding:
            try:
                t0, t1, f = done.get(timeout=REQUEST_TIMEOUT + 5)
            except queue.Empty:
                win.failure(clock(), "lost")
                break
            outstanding -= 1
            if f.exception() is None:
                win.success(t1, t1 - t0)
            else:
                win.failure(t1, str(f.code()))
            if t1 < end:
                submit()
        return win, n
    finally:
        ch.close()


def _future_open(
    target: str,
    worker: int,
    rate: float,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    tls: dict[str, str] | None = None,
) -> tuple[Window, int]:
    ch, put = _future_channel(target, tls)
    value = b"v" * value_bytes
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    done: queue.SimpleQueue = queue.SimpleQueue()
    clock = time.monotonic
    interval = 1.0 / rate
    n = 0
    outstanding = 0
    try:
        sleep_until(start_at)
        due = clock()
        while True:
            now = clock()
            while due <= now and due < end:
                n += 1
                outstanding += 1
                t0 = clock()
                fut = put.future(put_request(_key(worker, n), value), timeout=REQUEST_TIMEOUT)
                fut.add_done_callback(lambda f, t0=t0: done.put((t0, clock(), f)))
                due += interval
            if due >= end and not outstanding:
                break
            wait = max(0.0, due - clock()) if due < end else REQUEST_TIMEOUT + 5
            try:
                t0, t1, f = done.get(timeout=wait) if wait > 0 else done.get_nowait()
            except queue.Empty:
                if due >= end:
                    win.failure(clock(), "lost")
                    break
                continue
            outstanding -= 1
            if f.exception() is None:
                win.success(t1, t1 - t0)
            else:
                win.failure(t1, str(f.code()))
        return win, n
    finally:
        ch.close()
