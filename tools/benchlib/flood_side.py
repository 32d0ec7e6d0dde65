"""The ``flood`` workload: what a polite client gets while another client floods the cluster.

Each run of one system has two phases, one right after the other, in the same round:

1. **alone**: the polite client by itself, one record at a time, for the warm-up and the window;
2. **under flood**: the flooder and the polite client together, from the same ``start_at``, so
   the flood has built up by the time the window opens.

The two clients, per system:

* **cruise**. The flooder (:func:`cruise_flooder`) is one DEALER to the leader's client address
  that sends record requests as fast as the connection takes them and never waits for an
  answer: ``[request id (8 bytes), b"", body]`` with ``body`` exactly what
  :meth:`cruise.Client.record` sends, ``{"op": "record", "value": V, "client": C, "seq": S}``
  (:class:`benchlib.cruise_side.RecordBodies`; ``--no-client-seq`` leaves ``client``/``seq``
  out). Unlike ``cruise.Client`` it does not keep its seqs within the session window of
  1024 (:data:`cruise.client_sansio.SESSION_WINDOW`): it is a client that ignores the rules.
  Its send queue is bounded (:data:`SNDHWM`): when it is full the flooder reads the answers
  that came and sends again at once. The member answers at most
  ``cruise.endpoints.CLIENT_IN_FLIGHT`` (1024) requests in flight per connection and refuses
  the rest at once (``unavailable``), so the flooder counts the requests it **sent**, those
  **acknowledged** (committed), those **refused** (any error answer, by code) and those
  **unanswered** (no answer within :data:`DRAIN_MAX` s after the window, or
  ``REQUEST_TIMEOUT`` s of silence). The polite client (:func:`cruise_polite`) is a
  :class:`cruise.Client` with the leader's address, its defaults (5 s per call, retries with
  the same seq), calling ``record`` in a loop.
* **etcd** (``--against etcd``). The flooder (:func:`etcd_flooder`) is one gRPC channel to the
  leader with ``--flood-inflight`` (default 2000) ``Put`` calls always outstanding
  (``grpc.aio``, one coroutine per call slot: a new call the moment one ends). etcd has no cap
  per connection; past about 5000 committed but unapplied entries it refuses with ``too many
  requests`` (``RESOURCE_EXHAUSTED``). Refused = an error status other than
  ``DEADLINE_EXCEEDED``; unanswered = ``DEADLINE_EXCEEDED`` (5 s per call). The polite client
  is :func:`benchlib.etcd_side.single_writer`: one blocking ``Put`` at a time.

Both flooders are single Python processes; a flooder busy with one core is part of the
picture on a 2-core machine (``flood_client_cpu_cores``).

After the window the flooder stops sending and waits for the answers still due (so no backlog
spills into the next measurement); the polite client finishes the record it is waiting for.

Figures of one run (:func:`combine`; the report's figure is the median of the runs):

* ``records_per_s``, ``p50_ms``, ``p99_ms``, ``errors``: the polite client **under flood**;
* ``alone_records_per_s``, ``alone_p50_ms``, ``alone_p99_ms``, ``alone_errors``: the polite
  client alone, in the same round;
* ``flood_sent_per_s``, ``flood_acked_per_s``, ``flood_refused_per_s``: the flooder's requests
  sent / acknowledged / refused inside the window, per second; ``flood_p50_ms``,
  ``flood_p99_ms``: the latency of its acknowledged requests in the window;
* ``flood_sent``, ``flood_acked``, ``flood_refused``, ``flood_unanswered``: the flooder's totals
  over the whole run (warm-up, window and the wait after it), ``flood_refused_kinds`` by code
  (summed over the runs in the reported figure), ``flood_max_outstanding`` (most requests sent
  and not yet answered, queues included), ``flood_client_cpu_cores`` (the flooder's CPU /
  its sending time);
* ``cpu_us_per_rec``: the members' CPU in the flood window per record acknowledged in it,
  the polite client's and the flooder's together.

``flood_ratios`` in the JSON line (:func:`benchlib.report.flood_ratios`) is each system's
polite figure under flood / alone, on the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import zmq

from .cruise_side import REQUEST_TIMEOUT, RecordBodies, _reply_kind
from .etcd_side import Calls
from .procs import CpuWindow
from .stats import Window, sleep_until, summarize

SNDHWM = 10_000  # the cruise flooder's send queue (messages); full: it reads answers and sends again
BURST = 512  # requests sent between two reads of the answers
DRAIN_MAX = 20.0  # seconds after the window the flooder waits for the answers still due
DEFAULT_INFLIGHT = 2000  # etcd flooder's Put calls outstanding (--flood-inflight)
JOB = "benchlib.flood_side:run_role"
# An etcd call that reached its own deadline got no answer: unanswered, not refused.
LOST = "StatusCode.DEADLINE_EXCEEDED"


class Tally(Window):
    """A :class:`~benchlib.stats.Window` that also counts every request of the run by outcome
    (the window's counts say what happened inside it; these, what became of every request),
    and the requests outstanding (a :class:`benchlib.etcd_side.CallCounter`)."""

    __slots__ = ("acked_all", "refused_all", "kinds_all", "calls", "sent_in_window", "unanswered")

    def __init__(self, start: float, end: float) -> None:
        super().__init__(start, end)
        self.acked_all = 0
        self.refused_all = 0
        self.kinds_all: dict[str, int] = {}
        self.calls = Calls()  # sent in the whole run, outstanding, most outstanding
        self.sent_in_window = 0
        self.unanswered = 0

    def started(self, t: float) -> None:
        self.calls.started(t)
        if self.start <= t < self.end:
            self.sent_in_window += 1

    def ended(self) -> None:
        self.calls.ended()

    def success(self, t: float, latency: float) -> None:
        self.acked_all += 1
        super().success(t, latency)

    def failure(self, t: float, kind: str) -> None:
        if kind == LOST:
            self.lost(t)
            return
        self.refused_all += 1
        self.kinds_all[kind] = self.kinds_all.get(kind, 0) + 1
        super().failure(t, kind)

    def lost(self, t: float) -> None:
        """A request that got no answer in time (counted apart from the refused ones)."""
        self.completed += 1
        self.unanswered += 1

    def flood_result(self, **extra: Any) -> dict[str, Any]:
        return self.result(
            sent=self.calls.sent,
            sent_in_window=self.sent_in_window,
            acked_all=self.acked_all,
            refused_all=self.refused_all,
            kinds_all=dict(self.kinds_all),
            unanswered=self.unanswered,
            completed=self.completed,
            **extra,
        )


# -- load processes: the flooders and the polite clients -----------------------------------------


def run_role(role: str, system: str, **kw: Any) -> dict[str, Any]:
    """One load process's part of a run (the pool runs one job name for every process)."""
    if system == "cruise":
        return cruise_flooder(**kw) if role == "flooder" else cruise_polite(**kw)
    if role == "flooder":
        return asyncio.run(etcd_flooder(**kw))
    from .etcd_side import single_writer

    return single_writer(**kw)


def cruise_flooder(
    addr: str, value_bytes: int, start_at: float, warmup: float, seconds: float, client_seq: bool = True
) -> dict[str, Any]:
    """Send record requests on one DEALER as fast as it takes them, never waiting for answers."""
    from brokerless.sockets import recv_frames

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, SNDHWM)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(addr)
    body = RecordBodies(value_bytes, client_seq).next
    start = start_at + warmup
    end = start + seconds
    tally = Tally(start, end)
    pending: dict[bytes, float] = {}
    clock = time.monotonic
    send = sock.send
    more, nowait_more = zmq.SNDMORE, zmq.NOBLOCK | zmq.SNDMORE
    next_id = 0

    def read_answers() -> int:
        got = 0
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return got
            t0 = pending.pop(frames[0], None)
            if t0 is None:
                continue
            tally.ended()
            got += 1
            now = clock()
            kind = _reply_kind(frames[-1])
            if kind is None:
                tally.success(now, now - t0)
            else:
                tally.failure(now, kind)

    sleep_until(start_at)
    cpu0 = time.process_time()
    t_begin = clock()
    try:
        while True:
            now = clock()
            if now >= end:
                break
            full = False
            for _ in range(BURST):
                rid = (next_id + 1).to_bytes(8, "big")
                try:
                    send(rid, nowait_more)
                except zmq.Again:
                    full = True
                    break
                next_id += 1
                send(b"", more)
                send(body())  # the next seq only once the request is on its way
                t = clock()
                pending[rid] = t
                tally.started(t)
            if not read_answers() and full:
                sock.poll(5, zmq.POLLIN | zmq.POLLOUT)  # the queue is full and nothing came back
        cpu_sending = time.process_time() - cpu0
        sending = clock() - t_begin
        # The answers still due, so the backlog ends here and not in the next measurement.
        last = clock()
        deadline = end + DRAIN_MAX
        while pending and clock() < deadline:
            if sock.poll(100) and read_answers():
                last = clock()
            elif clock() - last > REQUEST_TIMEOUT:
                break
        tally.unanswered = len(pending)
        return tally.flood_result(
            max_outstanding=tally.calls.most,
            cpu_s=time.process_time() - cpu0,
            flood_cpu_cores=cpu_sending / sending if sending > 0 else None,
        )
    finally:
        sock.close(linger=0)
        ctx.term()


def cruise_polite(addr: str, value_bytes: int, start_at: float, warmup: float, seconds: float) -> dict:
    """:class:`cruise.Client` with its defaults, one ``record`` at a time."""
    from cruise import Client
    from cruise.errors import CruiseError

    value = b"v" * value_bytes
    start = start_at + warmup
    end = start + seconds
    win = Window(start, end)
    clock = time.monotonic
    with Client([addr]) as client:
        sleep_until(start_at)
        cpu0 = time.process_time()
        while clock() < end:
            t0 = clock()
            try:
                client.record(value)
            except CruiseError as e:
                win.failure(clock(), e.code)
                continue
            now = clock()
            win.success(now, now - t0)
        return win.result(cpu_s=time.process_time() - cpu0, completed=win.completed)


async def etcd_flooder(
    target: str,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    inflight: int,
    tls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Keep ``inflight`` Put calls outstanding on one gRPC channel (a new one as each ends)."""
    from .etcd_side import _aio_channel, put_slot

    cpu0 = time.process_time()
    ch, put = await _aio_channel(target, tls)
    value = b"v" * value_bytes
    start = start_at + warmup
    end = start + seconds
    tally = Tally(start, end)
    clock = time.monotonic
    try:
        await asyncio.sleep(max(0.0, start_at - clock()))
        cpu_begin, t_begin = time.process_time(), clock()
        tasks = [
            asyncio.ensure_future(
                put_slot(put, lambda i, w=w: b"flood/%d/%d" % (w, i % 16), value, end, tally, tally)
            )
            for w in range(inflight)
        ]
        await asyncio.sleep(max(0.0, end - clock()))
        cpu_sending, sending = time.process_time() - cpu_begin, clock() - t_begin
        await asyncio.gather(*tasks)  # each ends after its last call (5 s at most)
    finally:
        await ch.close()
    return tally.flood_result(
        max_outstanding=tally.calls.most,
        cpu_s=time.process_time() - cpu0,
        flood_cpu_cores=cpu_sending / sending if sending > 0 else None,
    )


# -- bench side: one run of one system -------------------------------------------------------------


def member_cap() -> int:
    """Requests a cruise member lets one client connection have in flight (it refuses more)."""
    from cruise.endpoints import CLIENT_IN_FLIGHT

    return CLIENT_IN_FLIGHT


def how(system: str, o: argparse.Namespace) -> str:
    if system == "cruise":
        return f"1 DEALER flood{'' if o.client_seq else ' (no seq)'}, 1 Client"
    return f"{o.flood_inflight} aio Puts, 1 blocking Put"


def measure(pool: Any, system: str, cluster: Any, o: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """One run of ``system`` (``"cruise"`` or ``"etcd"``, ``cluster`` its cluster): the polite
    client alone, then with the flooder; :func:`combine`'s figures."""
    alone = _phase(pool, system, cluster, o, timeout, flood=False)
    under = _phase(pool, system, cluster, o, timeout, flood=True)
    return combine(alone, under, o.seconds)


def _phase(
    pool: Any, system: str, cluster: Any, o: argparse.Namespace, timeout: float, flood: bool
) -> dict[str, Any]:
    leader = cluster.check_leader()
    start_at = time.monotonic() + 0.2
    common: dict[str, Any] = {
        "system": system,
        "value_bytes": o.value_bytes,
        "start_at": start_at,
        "warmup": o.warmup,
        "seconds": o.seconds,
    }
    if system == "cruise":
        common["addr"] = cluster.client_addr(leader)
        flooder = {**common, "role": "flooder", "client_seq": o.client_seq}
    else:
        common.update(target=cluster.leader_target, **cluster.tls_job)
        flooder = {**common, "role": "flooder", "inflight": o.flood_inflight}
    polite = {**common, "role": "polite"}
    if not flood:
        [p] = pool.run(JOB, [polite], timeout)
        return {"polite": p}
    start = start_at + o.warmup
    cpu = CpuWindow(cluster.pids(), start, start + o.seconds)
    f, p = pool.run(JOB, [flooder, polite], timeout + DRAIN_MAX)
    return {"polite": p, "flooder": f, "cpu": cpu}


def combine(alone: dict[str, Any], under: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One run's figure from its two phases (see the module's docstring)."""
    fig = summarize([under["polite"]], seconds)
    a = summarize([alone["polite"]], seconds)
    fl = under["flooder"]
    f = summarize([fl], seconds)
    fig.update(under["cpu"].result(fig["acknowledged"] + f["acknowledged"]))
    fig.update(
        alone_records_per_s=a["records_per_s"],
        alone_p50_ms=a["p50_ms"],
        alone_p99_ms=a["p99_ms"],
        alone_errors=a["errors"],
        flood_sent_per_s=fl["sent_in_window"] / seconds,
        flood_acked_per_s=f["records_per_s"],
        flood_refused_per_s=f["errors"] / seconds,
        flood_p50_ms=f["p50_ms"],
        flood_p99_ms=f["p99_ms"],
        flood_sent=fl["sent"],
        flood_acked=fl["acked_all"],
        flood_refused=fl["refused_all"],
        flood_unanswered=fl["unanswered"],
        flood_refused_kinds=fl["kinds_all"],
        flood_max_outstanding=fl["max_outstanding"],
        flood_client_cpu_cores=fl["flood_cpu_cores"],
    )
    return fig


def sum_kinds(fig: dict[str, Any]) -> None:
    """The reported figure's ``flood_refused_kinds``: summed over its runs."""
    kinds: dict[str, int] = {}
    for r in fig.get("runs", []):
        for k, v in (r.get("flood_refused_kinds") or {}).items():
            kinds[k] = kinds.get(k, 0) + v
    fig["flood_refused_kinds"] = kinds
