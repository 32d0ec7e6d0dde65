"""The chaos harness behind ``tools/chaos``: its history format and its judges.

The judges, which read a finished run:

* :mod:`chaoslib.history`: the history format (JSON lines of invoke/completion events, as in
  Jepsen), its typed records, and pairing invokes with completions into operations;
* :mod:`chaoslib.linearizability`: is the kv workload's history linearizable, per key
  (a register per key: put/get/cas), with a small explanation when it is not;
* :mod:`chaoslib.logcheck`: the log workload's checks over the members' committed logs and the
  clients' acknowledged records.

The harness that produces the runs (``harness``, ``workload``, ``faults``, ``net``,
``report``) is described in those modules.

``tools/`` is not a package on ``sys.path``: put the repo's ``tools`` directory on it first
(as ``tools/bench`` does) and ``import chaoslib``.
"""
