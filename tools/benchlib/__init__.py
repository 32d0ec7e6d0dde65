"""The benchmark behind ``tools/bench`` (issue 5).

What is measured: records acknowledged per second, the latency of each acknowledged record
(p50, p99), and the CPU the member (server) processes spend per record (``cpu_us_per_rec``),
for

* (a) ``external``: N client processes, K records in flight each, over the client protocol
  (ZeroMQ DEALER for cruise, each record with ``client``/``seq`` as ``cruise.Client`` sends
  it; gRPC for etcd);
* (b) ``embedded``: the member's own API in the member's process (``Node.record`` for cruise,
  a ``@replicated`` method for PySyncObj), many records in flight;
* ``floor``: what this machine allows one writer: 4 ZeroMQ hops between sleeping Python
  processes + 1 fdatasync, one request at a time (:mod:`benchlib.floor_side`);
* (c) ``single``: one writer, one record at a time (also as a multiple of the floor);
* ``halfload``: paced at half of (a)'s maximum, to see latency at a sustainable load;
* ``kv-put`` / ``kv-get``: (a)'s shape on a cluster running ``state_machine: kv``: puts to the
  leader, and linearizable gets spread over every member, beside etcd's Puts and Ranges
  (:mod:`benchlib.kv_plan`; not in the default list);
* ``secure``: (a)'s load in the same rounds on cruise plain and on cruise with CURVE on every
  socket and clients admitted by key, and (with ``--against etcd``) on etcd plain and on etcd
  with TLS on client and peer URLs and certificates required of both
  (:mod:`benchlib.secure_side`; not in the default list);
* ``flood``: one client's sequential records (``cruise.Client``; etcd's blocking Put) alone, then
  while another client floods the same leader without waiting for answers (a DEALER pipelining
  records; etcd: thousands of async Puts in flight): both clients' rates and latencies, and
  the polite client's under flood / alone (:mod:`benchlib.flood_side`; not in the default list);
* ``memory``: 1M records through (a), then each member's resident memory.

The peers: ``apt-get update && apt-get install -y etcd-server`` (etcd on PATH) and
``pip install -e '.[bench]'`` (pysyncobj, grpcio).

How: every figure is the median of ``--runs`` runs; each run counts the completions inside
a window of ``--seconds`` after a warm-up (:mod:`benchlib.stats`). Rounds interleave the
systems so drift on a shared machine hits all alike (:mod:`benchlib.main`).

Modules: ``main`` (options, orchestration), ``cruise_side`` / ``pysyncobj_side`` /
``etcd_side`` (each system's cluster and load generators), ``floor_side`` (the floor's
chain), ``kv_plan`` / ``kv_cruise`` / ``kv_etcd`` / ``kv_keys`` (the kv workloads: bench side,
each system's load, the shared keys), ``secure_side`` (the secure workload's CURVE keys and
TLS certificates), ``flood_side`` (the flood workload's flooders, polite clients and
figures), ``pool`` (load processes), ``procs`` (starting and always stopping processes, the
members' CPU over a window), ``stats``, ``report``.

``tools/bench_snapshot`` (snapshots at scale, beside etcd) shares the clusters, the pool and the
kv load, and adds ``snap_main`` (options, the order of runs), ``snap_plan`` (the *catchup* and
*memory* scenarios), ``snap_cruise`` / ``snap_etcd`` (each system's snapshot settings, status
and log events), ``snap_probe`` (the writer, the status pinger, the catch-up watcher) and
``snap_report``.
"""
