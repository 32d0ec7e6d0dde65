"""Load-generator processes: a fixed pool of ``multiprocessing`` workers (spawn start method).

The bench starts the pool once, before any cluster, and hands each worker a job by name
(``"benchlib.cruise_side:closed_loop"`` and keyword arguments) over a pipe; the worker runs it
and sends the result back. Every job of one run is given the same ``start_at`` (monotonic
time, which is one clock for every process on Linux), so the N workers load the system
together and measure the same window.

Spawn rather than fork: the workers then share nothing with the bench (no ZeroMQ context,
no gRPC threads, no embedded member), and gRPC is never imported by the bench process itself.
Workers ignore SIGINT; the bench ends them by PID (:class:`benchlib.procs.Processes`).
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import time
import traceback
from typing import Any

from .procs import BenchError, Processes


def _worker(conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        name, kwargs = job
        try:
            module, func = name.split(":")
            result = getattr(importlib.import_module(module), func)(**kwargs)
            conn.send(("ok", result))
        except BaseException as e:  # report anything; the bench decides
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


class Pool:
    """``size`` worker processes; :meth:`run` gives jobs to some of them and collects results."""

    def __init__(self, size: int, procs: Processes) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns = []
        self._procs = []
        self._broken: str | None = None
        for i in range(size):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child,), name=f"bench-load-{i}", daemon=True)
            p.start()
            child.close()
            procs.adopt(p.name, p)
            self._conns.append(parent)
            self._procs.append(p)

    @property
    def size(self) -> int:
        return len(self._conns)

    def run(self, name: str, kwargs_list: list[dict[str, Any]], timeout: float) -> list[Any]:
        """Run job ``name`` on workers 0..len(kwargs_list)-1; their results in order.

        Raises:
            BenchError: a worker failed, died, or did not answer within ``timeout`` seconds.
        """
        if len(kwargs_list) > len(self._conns):
            raise BenchError(f"{len(kwargs_list)} jobs for {len(self._conns)} load processes")
        if self._broken:
            raise BenchError(f"the load processes are unusable after an earlier failure ({self._broken})")
        conns = self._conns[: len(kwargs_list)]
        for conn, kw in zip(conns, kwargs_list, strict=True):
            conn.send((name, kw))
        deadline = time.monotonic() + timeout
        results: list[Any] = []
        failures: list[str] = []
        for i, conn in enumerate(conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                # Its late result would be read as the next job's: this pool is done.
                self._broken = f"load process {i}: no result from {name} within {timeout:g} s"
                failures.append(self._broken)
                continue
            try:
                status, value = conn.recv()
            except (EOFError, OSError):
                self._broken = f"load process {i} died during {name}"
                failures.append(self._broken)
                continue
            if status != "ok":
                failures.append(f"load process {i}: {name} failed: {value}")
            results.append(value)
        if failures:
            raise BenchError(failures[0])
        return results

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for p in self._procs:
            p.join(2)
