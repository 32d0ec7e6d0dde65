"""The probes of ``tools/bench_snapshot``; each runs in one load process (:mod:`benchlib.pool`).

* :func:`writer` -- one writer, one kv put at a time, to the leader: cruise over one REQ
  (``{"put": KEY, "value": V}`` with ``client``/``seq``, as ``cruise.Client.record`` sends it,
  :class:`benchlib.kv_cruise.PutBodies`), etcd with one blocking gRPC ``Put``. It overwrites
  keys of the loaded key space, so the state keeps its size.
* :func:`pinger` -- cruise only: ``{"op": "status"}`` to one member every ``interval`` seconds,
  one at a time. A member answers it on its loop, with no consensus and no disk, so its
  latency is how long the loop left it waiting: the longest one in a window bounds the
  longest loop pause there (to within ``interval``).
* :func:`watch` -- polls the leader and a restarted follower until the follower's applied
  index reaches the leader's commit index (the leader read first, both in one poll), and
  notes when the follower first answers on its client port.

Every probe stops when the file ``stop_file`` exists (or after ``max_seconds``) and returns a
trace: for each reply the wall-clock time it came (``time.time()``, comparable with the
members' log timestamps), its latency, and failures with their time and kind.
:func:`phase` turns a trace into the figures of one stretch of time (bench side).
"""

from __future__ import annotations

import os
import time
import urllib.request
from array import array
from typing import Any

import msgpack
import zmq

from .cruise_side import _reply_kind
from .kv_cruise import PUT_OK, PutBodies
from .kv_keys import key
from .stats import percentile

REQUEST_TIMEOUT = 5.0  # seconds before a reply counts as lost
STOP_CHECK = 0.02  # seconds between looks for the stop file
_STATUS = msgpack.packb({"op": "status"})


class Trace:
    """Replies (arrival wall-clock time, latency in seconds) and failures (time, kind)."""

    def __init__(self) -> None:
        self.t = array("d")
        self.lat = array("d")
        self.failures: list[tuple[float, str]] = []

    def result(self, **extra: Any) -> dict[str, Any]:
        return {"t": self.t.tobytes(), "lat": self.lat.tobytes(), "failures": self.failures, **extra}


class _Stop:
    """``stop()`` is true once ``stop_file`` exists or ``max_seconds`` passed (looked up at most
    every :data:`STOP_CHECK` seconds)."""

    def __init__(self, stop_file: str, max_seconds: float) -> None:
        self.file = stop_file
        self.end = time.monotonic() + max_seconds
        self.next = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + STOP_CHECK
        return now >= self.end or os.path.exists(self.file)


def _req(ctx: zmq.Context, addr: str) -> zmq.Socket:
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(addr)
    return s


def writer(system: str, where: str, nkeys: int, value_bytes: int, stop_file: str, max_seconds: float) -> dict:
    """One put at a time to ``where`` (cruise: the leader's client address; etcd: its gRPC
    target) until stopped."""
    if system == "cruise":
        return _cruise_writer(where, nkeys, value_bytes, _Stop(stop_file, max_seconds))
    return _etcd_writer(where, nkeys, value_bytes, _Stop(stop_file, max_seconds))


def _cruise_writer(addr: str, nkeys: int, value_bytes: int, stop: _Stop) -> dict:
    ctx = zmq.Context()
    body = PutBodies(value_bytes, nkeys=nkeys).next
    tr = Trace()
    sock = _req(ctx, addr)
    try:
        while not stop():
            msg = body()
            t0 = time.perf_counter()
            sock.send(msg)
            if not sock.poll(int(REQUEST_TIMEOUT * 1000)):
                tr.failures.append((time.time(), "timeout"))
                sock.close(linger=0)
                sock = _req(ctx, addr)
                continue
            frame = sock.recv()
            lat = time.perf_counter() - t0
            kind = _reply_kind(frame)
            if kind is None and PUT_OK not in frame:
                kind = "wrong_result"
            if kind is None:
                tr.t.append(time.time())
                tr.lat.append(lat)
            else:
                tr.failures.append((time.time(), kind))
        return tr.result()
    finally:
        sock.close(linger=0)
        ctx.term()


def _etcd_writer(target: str, nkeys: int, value_bytes: int, stop: _Stop) -> dict:
    import grpc

    from .etcd_side import PUT, put_request

    ch = grpc.insecure_channel(target)
    grpc.channel_ready_future(ch).result(timeout=10)
    put = ch.unary_unary(PUT)
    value = b"v" * value_bytes
    tr = Trace()
    n = 0
    try:
        while not stop():
            req = put_request(key(n % nkeys).encode(), value)
            n += 1
            t0 = time.perf_counter()
            try:
                put(req, timeout=REQUEST_TIMEOUT)
            except grpc.RpcError as e:
                tr.failures.append((time.time(), str(e.code())))
                continue
            tr.lat.append(time.perf_counter() - t0)
            tr.t.append(time.time())
        return tr.result()
    finally:
        ch.close()


def pinger(addr: str, interval: float, stop_file: str, max_seconds: float) -> dict:
    """``{"op": "status"}`` to the cruise member at ``addr``, one at a time, one every
    ``interval`` seconds (or right after the last reply when that came later)."""
    ctx = zmq.Context()
    tr = Trace()
    stop = _Stop(stop_file, max_seconds)
    sock = _req(ctx, addr)
    due = time.perf_counter()
    try:
        while not stop():
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            t0 = time.perf_counter()
            due = t0 + interval
            sock.send(_STATUS)
            if not sock.poll(int(REQUEST_TIMEOUT * 1000)):
                tr.failures.append((time.time(), "timeout"))
                sock.close(linger=0)
                sock = _req(ctx, addr)
                continue
            frame = sock.recv()
            lat = time.perf_counter() - t0
            if _reply_kind(frame) is None:
                tr.t.append(time.time())
                tr.lat.append(lat)
            else:
                tr.failures.append((time.time(), _reply_kind(frame) or "?"))
        return tr.result()
    finally:
        sock.close(linger=0)
        ctx.term()


def watch(
    system: str,
    leader: str,
    follower: str,
    timeout: float,
    follower_metrics: str = "",
    interval: float = 0.05,
) -> dict[str, Any]:
    """Poll until the follower's applied index reaches the leader's commit index, and until it
    answers clients.

    cruise: both from ``status`` (``commit_index``, ``applied_index``). etcd: the leader's commit
    index from ``Maintenance/Status`` (``raftIndex``), the follower's applied index from its
    ``/metrics`` (``etcd_server_proposals_applied_total``) at ``follower_metrics``, since its
    client port answers only once it has published itself through raft, which may come seconds
    after it caught up.

    Returns ``caught_up`` (wall-clock time; None when not within ``timeout``), ``first_answer``
    (the follower's first sign of life: cruise a status, etcd its metrics), ``serves_clients``
    (the follower's first answer on its client port) and the last ``leader_commit`` and
    ``follower_applied`` read."""
    if system == "cruise":
        reader: Any = _CruiseIndexes(leader, follower)
    else:
        reader = _EtcdIndexes(leader, follower, follower_metrics)
    out: dict[str, Any] = {"caught_up": None, "first_answer": None, "serves_clients": None}
    out.update(leader_commit=None, follower_applied=None)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end and (out["caught_up"] is None or out["serves_clients"] is None):
            commit = reader.leader_commit() if out["caught_up"] is None else None
            applied, serves = reader.follower()
            now = time.time()
            if applied is not None and out["first_answer"] is None:
                out["first_answer"] = now
            if serves and out["serves_clients"] is None:
                out["serves_clients"] = now
            if commit is not None and applied is not None:
                out["leader_commit"], out["follower_applied"] = commit, applied
                if applied >= commit:
                    out["caught_up"] = now
            time.sleep(interval)
        return out
    finally:
        reader.close()


class _CruiseIndexes:
    def __init__(self, leader: str, follower: str) -> None:
        self.ctx = zmq.Context()
        self.addrs = (leader, follower)

    def _status(self, addr: str) -> dict | None:
        s = _req(self.ctx, addr)
        try:
            s.send(_STATUS)
            if not s.poll(500):
                return None
            reply = msgpack.unpackb(s.recv(), raw=False)
            return reply if isinstance(reply, dict) and reply.get("ok") else None
        finally:
            s.close(linger=0)

    def leader_commit(self) -> int | None:
        st = self._status(self.addrs[0])
        return None if st is None else st["commit_index"]

    def follower(self) -> tuple[int | None, bool]:
        st = self._status(self.addrs[1])
        return (None, False) if st is None else (st["applied_index"], True)

    def close(self) -> None:
        self.ctx.term()


class _EtcdIndexes:
    # Reconnect quickly: the follower's client port opens late, and gRPC's default backoff
    # (1 s, growing) would make its first answer look seconds later than it was.
    _FAST = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 100)]

    def __init__(self, leader: str, follower: str, follower_metrics: str) -> None:
        import grpc

        from .etcd_side import STATUS

        self.grpc = grpc
        self.chans = [grpc.insecure_channel(t, options=self._FAST) for t in (leader, follower)]
        self.calls = [ch.unary_unary(STATUS) for ch in self.chans]
        self.metrics = follower_metrics + "/metrics"

    def _status(self, i: int) -> dict | None:
        from .etcd_side import parse_status

        try:
            return parse_status(self.calls[i](b"", timeout=0.5))
        except self.grpc.RpcError:
            return None

    def leader_commit(self) -> int | None:
        st = self._status(0)
        return None if st is None else st["raft_index"]

    def follower(self) -> tuple[int | None, bool]:
        serves = self._status(1) is not None
        return _metric(self.metrics, "etcd_server_proposals_applied_total"), serves

    def close(self) -> None:
        for ch in self.chans:
            ch.close()


def _metric(url: str, name: str) -> int | None:
    """One gauge of a Prometheus text page at ``url``; None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def probe(kind: str, **kw: Any) -> dict:
    """One of the probes by name (so one :meth:`Pool.run` starts a writer and a pinger)."""
    return {"writer": writer, "pinger": pinger}[kind](**kw)


# -- bench side ----------------------------------------------------------------------------------


def phase(trace: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """The replies of ``trace`` whose request was in flight at some moment of ``[t0, t1]``
    (wall clock): how many, p50, p99 and max latency (ms), when the slowest was sent (seconds
    after ``t0``), and the failures in it."""
    t, lat = array("d"), array("d")
    t.frombytes(trace["t"])
    lat.frombytes(trace["lat"])
    pairs = [(x, done) for x, done in zip(lat, t, strict=True) if done >= t0 and done - x <= t1]
    inside = sorted(x for x, _ in pairs)
    p50, p99 = percentile(inside, 50), percentile(inside, 99)
    worst = max(pairs, default=None)
    return {
        "seconds": round(t1 - t0, 3),
        "replies": len(inside),
        "p50_ms": None if p50 is None else p50 * 1e3,
        "p99_ms": None if p99 is None else p99 * 1e3,
        "max_ms": inside[-1] * 1e3 if inside else None,
        "max_sent_at_s": None if worst is None else round(worst[1] - worst[0] - t0, 3),  # from t0
        "failures": sum(1 for ft, _ in trace["failures"] if t0 <= ft <= t1),
    }
