"""Counting completions and latencies inside a measurement window, and medians of runs.

One *run* of a workload on one system is: load starts, a warm-up passes, then for
``seconds`` seconds (the window) every completion is counted and its latency kept. A
request counts when its reply arrives inside the window, whenever it was sent; only
successful replies count as records (errors are counted apart, by kind). So

* records/s = successful completions in the window / window length;
* p50 / p99 = percentiles (linear interpolation) of the latencies of those completions,
  pooled over every load process of the run.

A figure in the report is the median over runs of that run's figure (the median of the
p99s, not the p99 of everything), so one slow moment on a shared machine moves it less.
"""

from __future__ import annotations

import statistics
import time
from array import array
from collections.abc import Iterable
from typing import Any


class Window:
    """Collects one load process's completions for a window ``[start, end)`` (monotonic seconds).

    ``latency`` values are in seconds; ``done(t, latency)`` with ``t`` the completion time.
    """

    __slots__ = ("start", "end", "ok", "errors", "error_kinds", "lat", "completed")

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end
        self.ok = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.lat = array("d")
        self.completed = 0  # every completion, in the window or not (progress, drain)

    def success(self, t: float, latency: float) -> None:
        self.completed += 1
        if self.start <= t < self.end:
            self.ok += 1
            self.lat.append(latency)

    def failure(self, t: float, kind: str) -> None:
        self.completed += 1
        if self.start <= t < self.end:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def result(self, **extra: Any) -> dict[str, Any]:
        """A picklable summary: counts and the raw latencies (as bytes, cheap to send)."""
        return {
            "ok": self.ok,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "lat": self.lat.tobytes(),
            **extra,
        }


def sleep_until(t: float) -> None:
    """Sleep until monotonic time ``t`` (no-op if it has passed)."""
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))


def percentile(sorted_values: Any, q: float) -> float | None:
    """The ``q``-th percentile (0..100) of an ascending sequence, linear interpolation; None if empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo]) * (1 - frac) + float(sorted_values[hi]) * frac


def summarize(parts: Iterable[dict[str, Any]], seconds: float, **extra: Any) -> dict[str, Any]:
    """One run's figures from the results of its load processes (:meth:`Window.result`)."""
    lat = array("d")
    ok = errors = 0
    cpu = 0.0
    completed = 0
    kinds: dict[str, int] = {}
    for p in parts:
        cpu += p.get("cpu_s", 0.0)
        completed += p.get("completed", 0)
        ok += p["ok"]
        errors += p["errors"]
        for k, v in p.get("error_kinds", {}).items():
            kinds[k] = kinds.get(k, 0) + v
        if p.get("lat"):
            lat.frombytes(p["lat"])
    ordered = sorted(lat)
    p50 = percentile(ordered, 50)
    p99 = percentile(ordered, 99)
    if completed:
        # CPU the load processes spent per completed request (warm-up included): tells a
        # client-bound figure from a server-bound one.
        extra.setdefault("client_cpu_us_per_record", cpu / completed * 1e6)
    return {
        "records_per_s": ok / seconds if seconds > 0 else 0.0,
        "p50_ms": None if p50 is None else p50 * 1e3,
        "p99_ms": None if p99 is None else p99 * 1e3,
        "acknowledged": ok,
        "errors": errors,
        "error_kinds": kinds,
        **extra,
    }


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def median_of_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The reported figure: medians of each run's records/s, p50 and p99; sums of counts."""
    kinds: dict[str, int] = {}
    for r in runs:
        for k, v in r.get("error_kinds", {}).items():
            kinds[k] = kinds.get(k, 0) + v
    out: dict[str, Any] = {
        "records_per_s": _median([r["records_per_s"] for r in runs]),
        "p50_ms": _median([r["p50_ms"] for r in runs]),
        "p99_ms": _median([r["p99_ms"] for r in runs]),
        "acknowledged": sum(r["acknowledged"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "error_kinds": kinds,
    }
    # Any other numeric per-run figure (e.g. the target rate of a paced run): its median too.
    extra_keys = {k for r in runs for k, v in r.items() if isinstance(v, int | float)} - set(out)
    for k in sorted(extra_keys):
        out[k] = _median([r.get(k) for r in runs])
    out["runs"] = [{k: v for k, v in r.items() if k != "error_kinds"} for r in runs]
    return out
