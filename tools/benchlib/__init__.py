"""The benchmark behind ``tools/bench`` (issue 5).

What is measured: records acknowledged per second and the latency of each acknowledged
record (p50, p99), for

* (a) ``external``: N client processes, K records in flight each, over the client protocol
  (ZeroMQ DEALER for cruise, gRPC for etcd);
* (b) ``embedded``: the member's own API in the member's process (``Node.record`` for cruise,
  a ``@replicated`` method for PySyncObj), many records in flight;
* (c) ``single``: one writer, one record at a time;
* ``halfload``: paced at half of (a)'s maximum, to see latency at a sustainable load;
* ``memory``: 1M records through (a), then each member's resident memory.

How: every figure is the median of ``--runs`` runs; each run counts the completions inside
a window of ``--seconds`` after a warm-up (:mod:`benchlib.stats`). Rounds interleave the
systems so drift on a shared machine hits all alike (:mod:`benchlib.main`).

Modules: ``main`` (options, orchestration), ``cruise_side`` / ``pysyncobj_side`` /
``etcd_side`` (each system's cluster and load generators), ``pool`` (load processes),
``procs`` (starting and always stopping processes), ``stats``, ``report``.
"""
