"""``tools/bench_snapshot``'s scenarios, the same steps for cruise and etcd.

A *side* (:class:`benchlib.snap_cruise.CruiseSide`, :class:`benchlib.snap_etcd.EtcdSide`) is
one fresh 3-member cluster of one system with the snapshot settings of the run; this module
runs the steps on it and turns what the probes and the members' logs saw into one run's figures.

* :func:`catchup` -- stop a follower, put ``--keys`` keys through ``--clients`` x
  ``--inflight`` clients (so the leader snapshots and compacts the log past the follower), wait
  for the leader's last snapshot and compaction (overwriting keys past the next one first when
  it is under :func:`headroom` entries away, so that one snapshot brings the follower back),
  start one writer on the leader (the *before*
  phase, ``--before`` seconds), restart the follower and poll until its applied index reaches
  the leader's commit index (:func:`benchlib.snap_probe.watch`). Figures: seconds from the
  follower's start to caught up; the snapshot's bytes, the transfer's seconds (the leader's log:
  stream started to ended) and so MB/s; the writer's p50/p99/max before, during the catch-up,
  and during the transfer; each member's RSS before the restart and after the catch-up.
* :func:`memory` -- all three members up, ``--keys`` keys put, then each member's RSS. For
  cruise, then: a writer and a status pinger on the leader, ``--before`` quiet seconds, puts
  that overwrite keys up to ``--margin`` entries short of the next snapshot, so the writer
  itself crosses it with only the probes running; the longest replies while the leader's
  snapshot was taken (its log's ``snapshot_started`` to ``snapshot_saved``) against those of
  the quiet seconds.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from .kv_keys import preload_share
from .pool import Pool
from .procs import BenchError, progress
from .snap_probe import phase

SLACK = 60.0  # seconds added to every deadline


class Side(Protocol):
    system: str

    def start(self) -> str: ...
    def leader(self) -> str: ...
    def followers(self) -> list[str]: ...
    def applied(self, member: str) -> int: ...
    def stop_member(self, member: str) -> None: ...
    def start_member(self, member: str) -> None: ...
    def target(self, member: str) -> str: ...
    def watch_args(self, leader: str, follower: str) -> dict[str, Any]: ...
    def put_job(self) -> tuple[str, dict[str, Any]]: ...
    def wait_compacted(self, past: int, timeout: float, newer_than: int = 0) -> dict[str, Any]: ...
    def transfer(self, leader: str, follower: str, since: float) -> dict[str, Any]: ...
    def rss(self) -> dict[str, float | None]: ...
    def pids(self) -> dict[str, int]: ...
    def stop(self) -> None: ...


def events(path: Path, names: set[str], key: str = "event", ts: str = "timestamp") -> list[dict[str, Any]]:
    """The JSON log lines of ``path`` whose ``key`` is one of ``names``, each with ``t``: its
    timestamp (ISO 8601 or seconds) as seconds since the epoch."""
    out = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get(key) not in names:
            continue
        stamp = ev.get(ts)
        if isinstance(stamp, int | float):
            ev["t"] = float(stamp)
        elif isinstance(stamp, str):
            ev["t"] = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        else:
            continue
        out.append(ev)
    return out


def peak_mb(pids: dict[str, int]) -> dict[str, float | None]:
    """Each process's peak resident memory so far (VmHWM), MB."""
    out: dict[str, float | None] = {}
    for name, pid in pids.items():
        out[name] = None
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        out[name] = int(line.split()[1]) / 1024.0
        except (OSError, ValueError, IndexError):
            pass
    return out


def put_many(pool: Pool, side: Side, o: argparse.Namespace, count: int, what: str) -> dict[str, Any]:
    """``count`` puts to the leader from ``--clients`` load processes x ``--inflight`` each; the
    keys are the key space's first ``count`` (each once), wrapping past ``--keys``.

    Raises:
        BenchError: a put failed or went unanswered.
    """
    name, where = side.put_job()
    t0 = time.monotonic()
    jobs = []
    for i in range(o.clients):
        share = preload_share(i, o.clients, count)
        if share:
            jobs.append(
                {
                    **where,
                    "worker": i,
                    "workers": o.clients,
                    "nkeys": o.keys,
                    "inflight": o.inflight,
                    "value_bytes": o.value_bytes,
                    "start_at": time.monotonic(),
                    "warmup": 0.0,
                    "seconds": 0.0,
                    "max_records": share,
                }
            )
    parts = pool.run(name, jobs, count / 200 + SLACK)
    ok = sum(p["ok"] for p in parts)
    errors = {k: v for p in parts for k, v in p["error_kinds"].items()}
    secs = time.monotonic() - t0
    if ok != count or errors:
        raise BenchError(f"{side.system}: {what}: {ok:,} of {count:,} puts acknowledged, errors {errors}")
    progress(f"{side.system}: {what}: {count:,} puts in {secs:.1f} s ({count / secs:,.0f}/s)")
    return {"puts": count, "seconds": round(secs, 1), "puts_per_s": round(count / secs)}


class Probes:
    """Probe jobs (:func:`benchlib.snap_probe.probe`) running on their own pool, from a thread,
    until :meth:`stop` creates the stop file."""

    def __init__(self, pool: Pool, stop_file: Path) -> None:
        self.pool = pool
        self.stop_file = stop_file
        self.results: list[dict] = []
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, jobs: list[dict[str, Any]], max_seconds: float) -> float:
        """Start ``jobs``; the wall-clock time they were handed over."""
        self.stop_file.unlink(missing_ok=True)
        jobs = [{**j, "stop_file": str(self.stop_file), "max_seconds": max_seconds} for j in jobs]

        def run() -> None:
            try:
                self.results = self.pool.run("benchlib.snap_probe:probe", jobs, max_seconds + SLACK)
            except BaseException as e:  # handed to stop()
                self.error = e

        self._thread = threading.Thread(target=run, name="bench-probes", daemon=True)
        self._thread.start()
        return time.time()

    def stop(self) -> list[dict]:
        """Stop the probes; their traces, in the order of the jobs.

        Raises:
            BenchError: a probe failed.
        """
        self.stop_file.touch()
        assert self._thread is not None
        self._thread.join()
        self._thread = None
        self.stop_file.unlink(missing_ok=True)
        if self.error is not None:
            raise BenchError(f"probes: {self.error}")
        return self.results

    def close(self) -> None:
        """Stop the probes if they still run (after a failed run), so the next run's are the
        only jobs on their pool."""
        if self._thread is not None:
            try:
                self.stop()
            except BenchError as e:
                progress(f"probes: {e}")


def headroom(o: argparse.Namespace) -> int:
    """Entries a measurement should have before the leader's next snapshot: the probes alone
    (the writer: at most about 1000 puts/s) take 20 s to write them (or half of
    ``--snapshot-every``)."""
    return min(20_000, o.snapshot_every // 2)


def settle(side: Side, pool: Pool, o: argparse.Namespace, past: int) -> dict[str, Any]:
    """Wait for the leader's snapshot and compaction past ``past`` (see ``wait_compacted``);
    when its next snapshot is under :func:`headroom` entries away, overwrite keys past it first
    and wait for that one: else the probes would reach it during the measurement (and in a
    catch-up its compaction would make the follower need a second snapshot)."""
    compacted = side.wait_compacted(past, o.keys / 1000 + SLACK)
    room = o.snapshot_every - (compacted["applied_index"] - compacted["snapshot_index"])
    if room < headroom(o):
        put_many(pool, side, o, room + o.margin, f"overwrite past the next snapshot ({room} entries away)")
        compacted = side.wait_compacted(past, SLACK, newer_than=compacted["snapshot_index"])
    return compacted


def catchup(side: Side, pool: Pool, probes: Probes, o: argparse.Namespace) -> dict[str, Any]:
    """One catch-up run on a started ``side`` (see the module docstring)."""
    s = side.system
    leader = side.leader()
    follower = side.followers()[0]
    behind = side.applied(follower)
    side.stop_member(follower)
    progress(f"{s}: stopped follower {follower} at applied index {behind}; putting {o.keys:,} keys")
    load = put_many(pool, side, o, o.keys, "load")
    compacted = settle(side, pool, o, behind)
    rss_before = side.rss()
    writer = {"kind": "writer", "system": s, "where": side.target(leader)}
    writer.update(nkeys=o.keys, value_bytes=o.value_bytes)
    probes.start([writer], o.before + o.catchup_timeout + 10)
    time.sleep(o.before)
    t_start = time.time()
    side.start_member(follower)
    progress(f"{s}: restarted {follower}; waiting for it to catch up")
    job = {"system": s, **side.watch_args(leader, follower)}
    [w] = pool.run(
        "benchlib.snap_probe:watch", [{**job, "timeout": o.catchup_timeout}], o.catchup_timeout + SLACK
    )
    time.sleep(0.5)
    [trace] = probes.stop()
    if w["caught_up"] is None:
        raise BenchError(
            f"{s}: {follower} not caught up within {o.catchup_timeout:g} s "
            f"(applied {w['follower_applied']}, leader commit {w['leader_commit']})"
        )
    xfer = side.transfer(leader, follower, t_start)
    out: dict[str, Any] = {
        "leader": leader,
        "follower": follower,
        "load": load,
        "compacted": compacted,
        "catchup_s": w["caught_up"] - t_start,
        "follower_answers_s": None if w["first_answer"] is None else w["first_answer"] - t_start,
        "follower_serves_clients_s": None if w["serves_clients"] is None else w["serves_clients"] - t_start,
        "leader_commit_at_catchup": w["leader_commit"],
        **xfer,
        "writer_before": phase(trace, t_start - o.before + 0.5, t_start),
        "writer_catchup": phase(trace, t_start, w["caught_up"]),
        "rss_mb_before_restart": rss_before,
        "rss_mb_after_catchup": side.rss(),
        "rss_peak_mb": peak_mb(side.pids()),
    }
    if xfer.get("transfer_started") and xfer.get("transfer_ended"):
        out["writer_transfer"] = phase(trace, xfer["transfer_started"], xfer["transfer_ended"])
    if xfer.get("snapshot_bytes"):
        out["snapshot_mb_per_s"] = (
            xfer["snapshot_bytes"] / 1e6 / xfer["transfer_s"] if xfer.get("transfer_s") else None
        )
        out["snapshot_mb_per_catchup_s"] = xfer["snapshot_bytes"] / 1e6 / out["catchup_s"]
    progress(
        f"{s}: caught up in {out['catchup_s']:.1f} s; snapshot {_mb(xfer.get('snapshot_bytes'))} in "
        f"{_s(xfer.get('transfer_s'))}; writer p99 {_ms(out['writer_before']['p99_ms'])} before, "
        f"{_ms(out['writer_catchup']['p99_ms'])} during (max {_ms(out['writer_catchup']['max_ms'])})"
    )
    return out


def memory(side: Side, pool: Pool, probes: Probes, o: argparse.Namespace) -> dict[str, Any]:
    """One memory run on a started ``side``; cruise also measures the snapshot pause."""
    s = side.system
    load = put_many(pool, side, o, o.keys, "load")
    compacted = settle(side, pool, o, 0)
    rss = side.rss()
    progress(
        f"{s}: RSS after {o.keys:,} keys: " + ", ".join(f"{m} {_mb(v and v * 1e6)}" for m, v in rss.items())
    )
    out: dict[str, Any] = {
        "load": load,
        "compacted": compacted,
        "rss_mb": rss,
        "rss_peak_mb": peak_mb(side.pids()),
    }
    pause = getattr(side, "pause", None)
    if pause is not None and o.pause:
        out["pause"] = pause(pool, probes, o)
        out["rss_mb_after_pause"] = side.rss()
        out["rss_peak_mb_after_pause"] = peak_mb(side.pids())
    return out


def _mb(b: float | None) -> str:
    return "?" if b is None else f"{b / 1e6:.1f} MB"


def _s(v: float | None) -> str:
    return "?" if v is None else f"{v:.1f} s"


def _ms(v: float | None) -> str:
    return "?" if v is None else f"{v:.1f} ms"
