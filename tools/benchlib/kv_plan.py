"""The ``kv-put`` and ``kv-get`` workloads, bench side: the cluster, the preload, the jobs.

* ``kv-put``: N load processes x K puts in flight. cruise: a record ``{"put": KEY, "value":
  V}`` with ``client``/``seq`` as ``cruise.Client`` sends it, to the leader of a 3-member
  cluster running ``state_machine: kv`` (:mod:`benchlib.kv_cruise`). etcd: ``Put`` to its
  leader over gRPC (:mod:`benchlib.kv_etcd`).
* ``kv-get``: N load processes x K linearizable gets in flight, the processes spread over the
  three members, leader first (with 4 processes: 2 on the leader, 1 on each follower), the same
  way on both systems. cruise: ``{"op": "query", "query": {"get": KEY}}``; etcd: ``Range`` of
  one key, not ``serializable`` (its default).

Both systems hold the same ``--kv-keys`` keys (:mod:`benchlib.kv_keys`), written once by a
preload before the first kv workload's rounds; puts overwrite them, gets read them. The cruise
cluster of these workloads (``cruise-kv``) is its own, started right before the first kv
workload and stopped after the last, so the other workloads keep running the ``stream``
machine; etcd is the cluster the other workloads use. The report's ``kv_get_vs_put`` is each
system's get rate over its put rate (:func:`benchlib.report.kv_get_vs_put`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .cruise_side import IDS, CruiseCluster
from .etcd_side import NAMES, EtcdCluster
from .kv_keys import preload_share
from .pool import Pool
from .procs import BenchError, Processes, progress

WORKLOADS = ("kv-put", "kv-get")
SLACK = 40.0  # seconds added to the preload's deadline


def start_cluster(tmp: Path, procs: Processes, repo: Path, fsync: bool) -> CruiseCluster:
    c = CruiseCluster(tmp, "cruise-kv", procs, repo, fsync, state_machine="kv")
    c.start()
    return c


def _spread(members: list[str], leader: str, n: int) -> list[str]:
    """Load process i's member: leader first, then the followers in order, round and round."""
    order = [leader] + [m for m in members if m != leader]
    return [order[i % len(order)] for i in range(n)]


def _common(o: argparse.Namespace, worker: int, start_at: float) -> dict[str, Any]:
    return {
        "worker": worker,
        "workers": o.clients,
        "nkeys": o.kv_keys,
        "inflight": o.inflight,
        "value_bytes": o.value_bytes,
        "start_at": start_at,
        "warmup": o.warmup,
        "seconds": o.seconds,
    }


def jobs(
    workload: str, system: str, o: argparse.Namespace, cluster: CruiseCluster | EtcdCluster
) -> tuple[str, list[dict[str, Any]], dict[str, int], float]:
    """One run of ``workload`` on ``system``: the job name, its jobs, the members' pids (for
    their CPU) and the load's ``start_at``."""
    n = o.clients
    leader = cluster.check_leader()
    start_at = time.monotonic() + 0.2
    if system == "cruise":
        assert isinstance(cluster, CruiseCluster)
        if workload == "kv-put":
            addrs = [cluster.client_addr(leader)] * n
        else:
            addrs = [cluster.client_addr(m) for m in _spread(list(IDS), leader, n)]
        extra = {"client_seq": o.client_seq} if workload == "kv-put" else {}
        kw = [{**_common(o, i, start_at), "addr": a, **extra} for i, a in enumerate(addrs)]
        module = "benchlib.kv_cruise"
    else:
        assert isinstance(cluster, EtcdCluster)
        if workload == "kv-put":
            targets = [cluster.client[leader]] * n
        else:
            targets = [cluster.client[m] for m in _spread(list(NAMES), leader, n)]
        kw = [{**_common(o, i, start_at), "target": t} for i, t in enumerate(targets)]
        module = "benchlib.kv_etcd"
    func = "put_loop" if workload == "kv-put" else "get_loop"
    return f"{module}:{func}", kw, cluster.pids(), start_at


def preload(pool: Pool, system: str, cluster: CruiseCluster | EtcdCluster, o: argparse.Namespace) -> None:
    """Put every key of the key space once (the load processes share them out), at the leader.

    Raises:
        BenchError: a put failed or went unanswered.
    """
    t0 = time.monotonic()
    leader = cluster.check_leader()
    if system == "cruise":
        assert isinstance(cluster, CruiseCluster)
        name = "benchlib.kv_cruise:put_loop"
        where: dict[str, Any] = {"addr": cluster.client_addr(leader), "client_seq": o.client_seq}
    else:
        assert isinstance(cluster, EtcdCluster)
        name, where = "benchlib.kv_etcd:put_loop", {"target": cluster.client[leader]}
    kw = []
    for i in range(o.clients):
        share = preload_share(i, o.clients, o.kv_keys)
        if share:
            job = {**_common(o, i, time.monotonic()), **where, "warmup": 0.0, "seconds": 0.0}
            kw.append({**job, "max_records": share})
    parts = pool.run(name, kw, o.kv_keys / 100 + SLACK)
    ok = sum(p["ok"] for p in parts)
    errors = {k: v for p in parts for k, v in p["error_kinds"].items()}
    if ok != o.kv_keys or errors:
        raise BenchError(f"{system}: kv preload: {ok} of {o.kv_keys} puts acknowledged, errors {errors}")
    progress(f"{system}: preloaded {o.kv_keys:,} keys of {o.value_bytes} B ({time.monotonic() - t0:.1f} s)")


def how(workload: str, system: str, o: argparse.Namespace) -> str:
    n, k = o.clients, o.inflight
    if workload == "kv-put":
        seq = "client+seq" if o.client_seq else "no client/seq"
        return f"{n} procs x {k} put, {seq}" if system == "cruise" else f"{n} procs x {k} Put, gRPC aio"
    split = "/".join(str(sum(1 for i in range(n) if i % 3 == j)) for j in range(3))
    return f"{n} procs x {k} {'get' if system == 'cruise' else 'Range'}, L/F/F {split}"
