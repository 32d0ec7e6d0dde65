"""``tools/bench_snapshot``: options, the order of the runs, teardown.

Each run starts a fresh 3-member cluster (cruise: ``state_machine: kv``, fsync on; etcd: its
defaults, fsync on), with ``snapshot_every`` / ``retain_entries`` for cruise and the same
``--snapshot-count`` for etcd, runs one scenario of :mod:`benchlib.snap_plan` on it and stops
it by its pids. Runs are interleaved: round r runs every scenario on cruise, then on etcd, so a
slow moment of a shared machine hits both. A figure is the median of the rounds, printed with
its spread (min-max) by :mod:`benchlib.snap_report`, which also prints the JSON line.

Processes: ``--clients`` load processes (the puts, the catch-up watcher, etcd's Status calls)
and 2 probe processes (the writer, the status pinger), started before any cluster; everything
is stopped by pid at the end, also after an error, Ctrl-C or SIGTERM
(:class:`benchlib.procs.Processes`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import etcd_side, snap_plan
from .main import REPO, UsageError, _csv, _Parser, machine_info
from .pool import Pool
from .procs import BenchError, Processes, progress, sigterm_to_exit
from .snap_cruise import CruiseSide
from .snap_etcd import EtcdSide
from .snap_report import json_line, table

SCENARIOS = ("catchup", "memory")
SYSTEMS = ("cruise", "etcd")

EPILOG = """\
scenarios:
  catchup  a follower stopped while --keys keys are put (so the leader snapshots and compacts
           past it), then restarted: seconds until its applied index reaches the leader's
           commit index, the snapshot's bytes and MB/s, and one writer's p50/p99/max on the
           leader before and during the catch-up.
  memory   --keys keys put with all members up, then each member's RSS; for cruise also the
           leader's longest pause while it snapshots them (a status pinger and a writer, their
           max latency between its snapshot_started and snapshot_saved, against quiet seconds).

examples:
  tools/bench_snapshot                                  # both scenarios, cruise and etcd, 3 rounds
  tools/bench_snapshot --scenarios catchup --runs 2
  tools/bench_snapshot --quick                          # smoke: 50k keys, snapshot_every 10k, 1 round
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="tools/bench_snapshot",
        description="Snapshots at scale, cruise beside etcd: a follower's catch-up by snapshot,\n"
        "members' RSS after many keys, the leader's pause while it snapshots them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenarios", default="catchup,memory", help="comma list of catchup, memory (default both)"
    )
    p.add_argument("--systems", default="cruise,etcd", help="comma list of cruise, etcd (default both)")
    p.add_argument("--runs", type=int, default=None, help="rounds; figures are medians (default 3)")
    p.add_argument("--keys", type=int, default=None, help="keys put, kv/000000... (default 1000000)")
    p.add_argument("--value-bytes", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument("--clients", type=int, default=4, help="load processes putting the keys (default 4)")
    p.add_argument("--inflight", type=int, default=64, help="puts in flight per load process (default 64)")
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=None,
        help="cruise snapshot_every and etcd --snapshot-count (default 100000)",
    )
    p.add_argument(
        "--retain-entries",
        type=int,
        default=None,
        help="cruise retain_entries (default 10000; etcd keeps 5000)",
    )
    p.add_argument(
        "--wal-segment-bytes", type=int, default=None, help="cruise wal_segment_bytes (default cruise's)"
    )
    p.add_argument("--before", type=float, default=None, help="seconds the probes run before (default 5)")
    p.add_argument(
        "--catchup-timeout", type=float, default=600.0, help="seconds to wait for a catch-up (default 600)"
    )
    p.add_argument("--ping-ms", type=float, default=2.0, help="the status pinger's interval, ms (default 2)")
    p.add_argument(
        "--margin",
        type=int,
        default=500,
        help="entries short of the snapshot the overwrite stops (default 500)",
    )
    p.add_argument(
        "--no-pause", dest="pause", action="store_false", help="memory: skip cruise's snapshot pause"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke: 50k keys, snapshot_every 10k, retain 1k, 1 round"
    )
    p.add_argument("--json-only", action="store_true", help="print only the JSON line on stdout")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, data, logs)")
    p.add_argument("--tmpdir", default=None, help="where the temp dir goes (default: the system's)")
    o = p.parse_args(argv)
    o.scenarios = _csv([o.scenarios], SCENARIOS, "--scenarios")
    o.systems = _csv([o.systems], SYSTEMS, "--systems")
    quick = o.quick
    defaults = {
        "runs": 1 if quick else 3,
        "keys": 50_000 if quick else 1_000_000,
        "snapshot_every": 10_000 if quick else 100_000,
        "retain_entries": 1_000 if quick else 10_000,
        "before": 2.0 if quick else 5.0,
    }
    for k, v in defaults.items():
        if getattr(o, k) is None:
            setattr(o, k, v)
    checks = [
        (bool(o.scenarios), "--scenarios: name at least one"),
        (bool(o.systems), "--systems: name at least one"),
        (o.runs >= 1, f"--runs must be 1 or more (got {o.runs})"),
        (1 <= o.keys <= 1_000_000, f"--keys must be 1..1000000 (got {o.keys})"),
        (1 <= o.value_bytes <= 1_000_000, f"--value-bytes must be 1..1000000 (got {o.value_bytes})"),
        (1 <= o.clients <= 64, f"--clients must be 1..64 (got {o.clients})"),
        (1 <= o.inflight <= 10_000, f"--inflight must be 1..10000 (got {o.inflight})"),
        (o.snapshot_every >= 1, f"--snapshot-every must be 1 or more (got {o.snapshot_every})"),
        (o.retain_entries >= 0, f"--retain-entries must be 0 or more (got {o.retain_entries})"),
        (o.before >= 1, f"--before must be at least 1 s (got {o.before:g})"),
        (o.ping_ms > 0, f"--ping-ms must be more than 0 (got {o.ping_ms:g})"),
        (o.margin >= 1, f"--margin must be 1 or more (got {o.margin})"),
        (o.tmpdir is None or Path(o.tmpdir).is_dir(), f"--tmpdir {o.tmpdir}: not a directory"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    return o


def code_version() -> dict[str, Any] | None:
    """The commit the members run and whether cruise/ or brokerless/ differ from it (None
    outside a git checkout)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        diff = subprocess.run(
            ["git", "status", "--porcelain", "--", "cruise", "brokerless"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "changed_files": len(diff.stdout.splitlines())}


def one_run(
    scenario: str,
    system: str,
    r: int,
    o: argparse.Namespace,
    procs: Processes,
    pools: tuple[Pool, Pool],
    tmp: Path,
) -> dict[str, Any]:
    """One scenario on a fresh cluster of ``system``; the run's figures (or ``failed``)."""
    pool, probe_pool = pools
    name = f"{system}-{scenario}-{r + 1}"
    side: CruiseSide | EtcdSide
    if system == "cruise":
        side = CruiseSide(tmp, name, procs, REPO, o)
    else:
        side = EtcdSide(tmp, name, procs, pool, o)
    probes = snap_plan.Probes(probe_pool, tmp / "stop-probes")
    t0 = time.monotonic()
    load0 = os.getloadavg()
    try:
        side.start()
        run = snap_plan.catchup if scenario == "catchup" else snap_plan.memory
        fig = run(side, pool, probes, o)
    except BenchError as e:
        progress(f"{name}: failed: {e}")
        fig = {"failed": str(e)}
    finally:
        probes.close()
        side.stop()
        if not o.keep:
            shutil.rmtree(tmp / name, ignore_errors=True)
    fig["run_s"] = round(time.monotonic() - t0, 1)
    fig["loadavg"] = [*load0, *os.getloadavg()]  # 1/5/15-min at the start, then at the end
    return fig


def main(argv: list[str] | None = None) -> int:
    try:
        o = parse_args(argv)
    except UsageError as e:
        print(f"tools/bench_snapshot: error: {e}", file=sys.stderr)
        return 2
    sigterm_to_exit()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="cruise-bench-snapshot-", dir=o.tmpdir))
    machine = machine_info(tmp)
    machine["code"] = code_version()
    progress(
        f"bench_snapshot: nproc {machine['nproc']}, load average {machine['loadavg_start']}; temp dir {tmp}"
    )
    systems: dict[str, Any] = {
        "cruise": {"status": "ok"} if "cruise" in o.systems else {"status": "not requested"}
    }
    if "etcd" in o.systems:
        why = etcd_side.available()
        systems["etcd"] = (
            {"status": "skipped", "reason": why} if why else {"status": "ok", "version": etcd_side.version()}
        )
        if why:
            progress(f"etcd: skipped ({why})")
    chosen = [s for s in SYSTEMS if systems.get(s, {}).get("status") == "ok"]
    results: dict[str, dict[str, list]] = {sc: {s: [] for s in chosen} for sc in o.scenarios}
    code = 0
    try:
        pools = (Pool(o.clients, procs), Pool(2, procs))
        for r in range(o.runs):
            for sc in o.scenarios:
                for s in chosen:
                    progress(f"-- round {r + 1}/{o.runs}: {sc} on {s}")
                    results[sc][s].append(one_run(sc, s, r, o, procs, pools, tmp))
    except KeyboardInterrupt:
        progress("bench_snapshot: interrupted; stopping every process it started")
        code = 130
    except BenchError as e:
        progress(f"bench_snapshot: error: {e}")
        code = 1
    finally:
        procs.stop_all()
        if o.keep:
            progress(f"bench_snapshot: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code == 130:
        return code
    machine["loadavg_end"] = list(os.getloadavg())
    report = {
        "bench": "cruise-snapshot",
        "schema": 1,
        "machine": machine,
        "settings": {k: getattr(o, k) for k in sorted(vars(o)) if k not in ("quick", "json_only", "keep")},
        "systems": systems,
        "results": results,
    }
    if not o.json_only:
        print(table(report))
    print(json_line(report), flush=True)
    failed = any("failed" in f for sc in results.values() for runs in sc.values() for f in runs)
    return code or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
