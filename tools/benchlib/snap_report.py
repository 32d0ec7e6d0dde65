"""``tools/bench_snapshot``'s table and JSON line.

Every figure is the median over the rounds that produced it, with its spread (min-max) in
brackets, and ``n`` when fewer rounds than asked produced it. RSS rows give each member's
median (leader first, as each run names members in its own order: the figure is taken
per role, not per id). The JSON line holds every run's figures as measured, plus ``medians``:
each row of the table as numbers.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from typing import Any

Get = Callable[[dict[str, Any]], Any]


def _path(*keys: str | int) -> Get:
    def get(run: dict[str, Any]) -> Any:
        v: Any = run
        for k in keys:
            if isinstance(k, int):
                v = v[k] if isinstance(v, list) and len(v) > k else None
            elif isinstance(v, dict):
                v = v.get(k)
            else:
                return None
        return v

    return get


def _mb_bytes(*keys: str) -> Get:
    get = _path(*keys)
    return lambda run: None if get(run) is None else get(run) / 1e6


def _rss(key: str, which: str) -> Get:
    """The leader's RSS (``which`` "leader"), or the max / min of the members'."""

    def get(run: dict[str, Any]) -> float | None:
        rss = run.get(key)
        if not isinstance(rss, dict) or not rss:
            return None
        vals = [v for v in rss.values() if v is not None]
        if which in ("leader", "follower"):
            return rss.get(run.get(which, ""))
        return (max if which == "max" else min)(vals) if vals else None

    return get


# (label, unit, getter) per scenario
_LOADAVG: tuple[str, str, Get] = ("machine load average (1 min) at the run's start", "", _path("loadavg", 0))
CATCHUP_ROWS: list[tuple[str, str, Get]] = [
    ("load: puts/s (a follower down)", "/s", _path("load", "puts_per_s")),
    ("catch-up: follower start -> applied >= leader commit", "s", _path("catchup_s")),
    ("  follower answers (cruise: status; etcd: /metrics)", "s", _path("follower_answers_s")),
    ("  follower serves clients (cruise: status; etcd: Status)", "s", _path("follower_serves_clients_s")),
    ("  leader starts sending the snapshot", "s", _path("transfer_started_s")),
    ("  snapshot installed (cruise) / applied (etcd)", "s", _path("installed_s")),
    ("snapshot sent", "MB", _mb_bytes("snapshot_bytes")),
    ("transfer: leader's send start -> end", "s", _path("transfer_s")),
    ("snapshot MB/s over the transfer", "MB/s", _path("snapshot_mb_per_s")),
    ("snapshot MB/s over the whole catch-up", "MB/s", _path("snapshot_mb_per_catchup_s")),
    ("transfers started (1 = no retry)", "", _path("streams")),
    ("writer p50 before", "ms", _path("writer_before", "p50_ms")),
    ("writer p99 before", "ms", _path("writer_before", "p99_ms")),
    ("writer p50 during catch-up", "ms", _path("writer_catchup", "p50_ms")),
    ("writer p99 during catch-up", "ms", _path("writer_catchup", "p99_ms")),
    ("writer max during catch-up", "ms", _path("writer_catchup", "max_ms")),
    ("writer p99 during the transfer", "ms", _path("writer_transfer", "p99_ms")),
    ("writer max during the transfer", "ms", _path("writer_transfer", "max_ms")),
    ("writer failures during catch-up", "", _path("writer_catchup", "failures")),
    ("RSS leader, before the restart", "MB", _rss("rss_mb_before_restart", "leader")),
    ("RSS max member, after catch-up", "MB", _rss("rss_mb_after_catchup", "max")),
    ("RSS peak (VmHWM) of the restarted follower", "MB", _rss("rss_peak_mb", "follower")),
    ("RSS peak (VmHWM) of the leader", "MB", _rss("rss_peak_mb", "leader")),
    _LOADAVG,
]
MEMORY_ROWS: list[tuple[str, str, Get]] = [
    ("load: puts/s (all members up)", "/s", _path("load", "puts_per_s")),
    ("RSS max member after the keys", "MB", _rss("rss_mb", "max")),
    ("RSS min member after the keys", "MB", _rss("rss_mb", "min")),
    ("leader snapshot of the keys: started -> saved", "s", _path("pause", "snapshot_s")),
    ("  snapshot file", "MB", _mb_bytes("pause", "snapshot_file_bytes")),
    ("status max latency, quiet", "ms", _path("pause", "pinger_quiet", "max_ms")),
    ("status max latency, during the snapshot", "ms", _path("pause", "pinger_snapshot", "max_ms")),
    ("status p99, during the snapshot", "ms", _path("pause", "pinger_snapshot", "p99_ms")),
    ("writer p99, quiet", "ms", _path("pause", "writer_quiet", "p99_ms")),
    ("writer max, quiet", "ms", _path("pause", "writer_quiet", "max_ms")),
    ("writer p99, during the snapshot", "ms", _path("pause", "writer_snapshot", "p99_ms")),
    ("writer max, during the snapshot", "ms", _path("pause", "writer_snapshot", "max_ms")),
    ("writer max, during all 3 members' snapshots", "ms", _path("pause", "writer_snapshots", "max_ms")),
    ("all 3 members' snapshots: first start -> last save", "s", _path("pause", "members_snapshots_span_s")),
    ("RSS max member after the snapshot", "MB", _rss("rss_mb_after_pause", "max")),
    ("RSS peak (VmHWM), max member, after the snapshot", "MB", _rss("rss_peak_mb_after_pause", "max")),
    _LOADAVG,
]
ROWS = {"catchup": CATCHUP_ROWS, "memory": MEMORY_ROWS}
TITLES = {
    "catchup": "catch-up by snapshot: a follower down while the keys are put, then restarted",
    "memory": "memory after the keys, all members up; cruise's leader while it snapshots them",
}


def figure(runs: list[dict[str, Any]], get: Get) -> dict[str, Any] | None:
    vals = [v for v in (get(r) for r in runs if "failed" not in r) if isinstance(v, int | float)]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _fmt(f: dict[str, Any] | None, unit: str, runs: int) -> str:
    if f is None:
        return "-"

    def num(v: float) -> str:
        if isinstance(v, int) or (not unit and float(v).is_integer()):
            return f"{int(v):,}"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"

    spread = "" if f["n"] == 1 else f" [{num(f['min'])}-{num(f['max'])}]"
    n = "" if f["n"] == runs else f" (n={f['n']})"
    return f"{num(f['median'])} {unit}".rstrip() + spread + n


def medians(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sc, by_system in report["results"].items():
        out[sc] = {
            label: {s: figure(runs, get) for s, runs in by_system.items()} for label, _, get in ROWS[sc]
        }
    return out


def table(report: dict[str, Any]) -> str:
    lines = []
    st = report["settings"]
    m = report["machine"]
    lines.append(
        f"tools/bench_snapshot: {st['keys']:,} keys of {st['value_bytes']} B, snapshot_every "
        f"{st['snapshot_every']:,} (etcd --snapshot-count), retain_entries {st['retain_entries']:,} "
        f"(etcd keeps 5,000), fsync on; {st['runs']} round(s); {m['nproc']} cores, load "
        f"{' '.join(f'{x:.2f}' for x in m['loadavg_start'])}"
    )
    code = m.get("code")
    if code:
        lines.append(
            f"cruise at {code['commit'][:10]}, {code['changed_files']} file(s) of cruise/ and brokerless/ changed since"
        )
    for sc, by_system in report["results"].items():
        systems = list(by_system)
        lines += ["", TITLES[sc], ""]
        lines.append("| figure | " + " | ".join(systems) + " |")
        lines.append("| --- |" + " --- |" * len(systems))
        for label, unit, get in ROWS[sc]:
            cells = [_fmt(figure(by_system[s], get), unit, st["runs"]) for s in systems]
            if all(c == "-" for c in cells):
                continue
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for s in systems:
            for i, r in enumerate(by_system[s]):
                if "failed" in r:
                    lines.append(f"{s} round {i + 1} failed: {r['failed']}")
    for s, info in report["systems"].items():
        if info.get("status") == "skipped":
            lines.append(f"{s}: skipped ({info.get('reason')})")
    return "\n".join(lines)


def json_line(report: dict[str, Any]) -> str:
    return json.dumps({**report, "medians": medians(report)}, separators=(",", ":"), default=str)
