"""``tools/bench``: options, the order of things, and teardown.

The bench starts everything it measures (on free loopback ports, in a temp dir), then for
each workload runs R rounds; each round measures every system once (cruise, then the peers),
so a slow moment of a shared machine hits all systems alike. A figure is the median of the R
rounds. The load processes are started first (before any cluster), the server clusters (cruise,
etcd) next. The library clusters (cruise with n1 embedded in the bench, PySyncObj) run only
around the workloads that use them (embedded, single), so their idle timers are not on the 2
cores while the other workloads run. Every process is stopped by PID, at the latest at the end,
also on an error, Ctrl-C or SIGTERM.

Workloads and who runs them:

==========  ==========================  ====================================  ==============
workload    cruise                      PySyncObj                             etcd
==========  ==========================  ====================================  ==============
external    N procs x K DEALER          n/a (no client protocol)              N procs x K gRPC
embedded    Node in the bench process   in the leader process, callbacks      n/a
floor       -- no system: 4 ZeroMQ hops between sleeping processes + 1 fdatasync, 1 REQ --
single      one REQ, sequential         in the leader, batching off and on    one blocking Put
halfload    paced at 50% of its max     n/a                                   paced at 50% of its max
secure      external's load, plain and  n/a                                   external's load, plain and
            CURVE-secured clusters                                            TLS clusters
flood       1 DEALER flooding + 1       n/a                                   1 aio gRPC flooder + 1
            cruise.Client; the Client                                         blocking Put; the Put
            alone too                                                         alone too
kv-put      N x K kv puts, client+seq   n/a                                   N x K Puts
kv-get      N x K kv gets, all members  n/a                                   N x K Ranges, all members
memory      1M records, then VmRSS      -                                     -
==========  ==========================  ====================================  ==============

cruise's load sends every record as :class:`cruise.Client` does, with ``client`` (one id per
load process and connection) and a rising ``seq`` (``--no-client-seq`` drops them); the
embedded API takes neither. *floor* (:mod:`benchlib.floor_side`) is what this machine allows
one writer; when *single* runs too, the floor is measured inside its rounds and every
single-writer p50/p99 is also reported as a multiple of the floor's. *kv-put* and *kv-get*
(:mod:`benchlib.kv_plan`, not in the default list) run on a cruise cluster of their own with
``state_machine: kv``, started around them, and print each system's get rate over its put rate.
*secure* (:mod:`benchlib.secure_side`, not in the default list) runs external's load in the
same rounds on the plain cruise cluster, on a cruise cluster with CURVE on every socket and
clients admitted by key (``cruise_secure``) and, with ``--against etcd``, on the plain etcd
and on an etcd with TLS on client and peer URLs and certificates required of both
(``etcd_tls``); the secured clusters run only around it. It reports secured cruise / TLS etcd
(the target), secured / plain for each system, and plain cruise / plain etcd
(``secure_ratios`` in the JSON line).
*flood* (:mod:`benchlib.flood_side`, not in the default list) measures, in each round and for
cruise and (with ``--against etcd``) etcd, a polite client (sequential records with
:class:`cruise.Client`; blocking Puts) alone, then again while one flooder on the same leader
sends as fast as it can without waiting (one DEALER pipelining records with ``client``/``seq``,
which the member caps at 1024 in flight per connection; ``--flood-inflight`` async Puts). It
reports the polite client's rate, p50 and p99 under flood and alone, the flooder's sent,
acknowledged and refused per second and its unanswered requests, and under flood / alone for
each system (``flood_ratios`` in the JSON line).

Beside the rate, every figure carries the members' CPU per record (``cpu_us_per_rec``): the
user + system CPU of the member processes only (cruise's 3, etcd's 3, PySyncObj's 3, the
floor's 2; :class:`benchlib.procs.CpuWindow`) over the measured window, divided by the records
acknowledged in it. Where the load runs inside a member (embedded; PySyncObj always; cruise's
n1 embedded is the bench process) that member's CPU includes the load. The load processes'
own CPU per request is ``client_cpu_us_per_record``.

"Its max" is that system's external median from the same invocation (or one calibration run
when ``external`` was not chosen); the paced load comes from ``--halfload-clients`` processes
(default ``--clients``). On a 2-core machine every extra load process competes with the members
for the CPU, and that shows in the tail: fewer pacing processes give a p99 closer to the
cluster's own.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cruise_side, etcd_side, flood_side, kv_plan, pysyncobj_side
from .floor_side import FloorChain
from .pool import Pool
from .procs import BenchError, CpuWindow, Processes, progress, rss_mb, sigterm_to_exit
from .report import apply_floor, flood_ratios, json_line, judge, kv_get_vs_put, secure_ratios, table
from .secure_side import make_tls, tls_available
from .stats import median_of_runs, summarize

WORKLOADS = (
    "external",
    "embedded",
    "floor",
    "single",
    "halfload",
    "secure",
    "flood",
    "kv-put",
    "kv-get",
    "memory",
)
ETCD_WORKLOADS = {"external", "single", "halfload", "secure", "flood", *kv_plan.WORKLOADS}
DEFAULT_WORKLOADS = "external,embedded,floor,single,halfload"
PEERS = ("pysyncobj", "etcd")
TOOLS_DIR = Path(__file__).resolve().parents[1]
REPO = TOOLS_DIR.parent
MEMORY_PROGRESS = 100_000
SLACK = 40.0  # seconds added to every measurement's deadline (start-up, drain, a slow machine)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, never a usage dump or traceback
        raise UsageError(message)


def _csv(values: list[str] | None, allowed: tuple[str, ...], what: str) -> list[str]:
    out: list[str] = []
    for v in values or []:
        for item in v.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item not in allowed:
                raise UsageError(f"{what}: unknown {item!r} (choose from {', '.join(allowed)})")
            if item not in out:
                out.append(item)
    return out


EPILOG = """\
workloads: external (N load processes x K records in flight), embedded (the member's own API),
floor (this machine's limit for one writer: 4 ZeroMQ hops between sleeping processes + 1
fdatasync), single (one writer, one record at a time), halfload (paced at half of external's
max), secure (external's load on cruise plain and with CURVE on every socket, and with
--against etcd on etcd plain and with client and peer TLS; not in the default list), flood
(a polite client's sequential records alone and while one other connection floods the leader;
not in the default list), kv-put
and kv-get (state_machine kv: N x K puts to the leader, N x K linearizable gets spread over the
members; not in the default list), memory (1M records, then each member's RSS).
Every figure also gives the members' CPU per record (cpu_us_per_rec: the member processes'
utime+stime over the window / records; for kv, per operation).

the peers (--against), on Debian/Ubuntu:
  apt-get update && apt-get install -y etcd-server   # etcd on PATH, for --against etcd
  pip install -e '.[bench]'                          # pysyncobj, grpcio

examples:
  tools/bench                                    # the default workloads, cruise alone
  tools/bench --against pysyncobj,etcd           # the peers in the same rounds
  tools/bench --quick --workloads floor,single   # 1 run of 1 s: cruise's single writer vs the floor
  tools/bench --workloads kv-put,kv-get --against etcd   # kv puts and gets beside etcd's
  tools/bench --workloads secure --against etcd  # secured cruise vs TLS etcd, and both plain
  tools/bench --workloads flood --against etcd   # a polite client beside a flooding one
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="tools/bench",
        description="Start a cruise cluster (and optionally PySyncObj and etcd clusters), drive it,\n"
        "print a table and one JSON line: records/s, latency p50/p99 and the members' CPU per\n"
        "record, per workload and system.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workloads",
        default=DEFAULT_WORKLOADS,
        help=f"comma list of {', '.join(WORKLOADS)} (default {DEFAULT_WORKLOADS}; memory is long)",
    )
    p.add_argument(
        "--runs", type=int, default=None, help="runs per figure; the median is reported (default 3)"
    )
    p.add_argument("--seconds", type=float, default=None, help="seconds per measurement (default 5)")
    p.add_argument("--clients", type=int, default=4, help="external load processes (default 4)")
    p.add_argument(
        "--halfload-clients",
        type=int,
        default=None,
        help="load processes pacing the halfload workload (default: --clients)",
    )
    p.add_argument("--inflight", type=int, default=16, help="records in flight per load process (default 16)")
    p.add_argument(
        "--embedded-inflight", type=int, default=8192, help="records in flight, embedded (default 8192)"
    )
    p.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="SYSTEMS",
        help="also measure pysyncobj and/or etcd (comma list or repeated)",
    )
    p.add_argument("--value-bytes", type=int, default=100, help="bytes per record value (default 100)")
    p.add_argument(
        "--client-seq",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cruise records carry client and seq, as cruise.Client sends them (default on)",
    )
    p.add_argument(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cruise members fsync (default on; with --no-fsync no target counts)",
    )
    p.add_argument("--quick", action="store_true", help="1 run of 1 s per figure (smoke tests)")
    p.add_argument("--json-only", action="store_true", help="print only the JSON line on stdout")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, data, logs)")
    p.add_argument("--tmpdir", default=None, help="where the temp dir goes (default: the system's)")
    p.add_argument(
        "--memory-records",
        type=int,
        default=1_000_000,
        help="records the memory workload drives (default 1M)",
    )
    p.add_argument(
        "--kv-keys",
        type=int,
        default=1000,
        help="keys preloaded for kv-put and kv-get; puts overwrite them, gets read them (default 1000)",
    )
    p.add_argument(
        "--etcd-client",
        choices=("aio", "future"),
        default="aio",
        help="how etcd's gRPC load keeps K calls in flight (default aio; see etcd_side)",
    )
    p.add_argument(
        "--flood-inflight",
        type=int,
        default=flood_side.DEFAULT_INFLIGHT,
        help="Puts the flood workload's etcd flooder keeps in flight (default"
        f" {flood_side.DEFAULT_INFLIGHT}; cruise's flooder is capped by the member)",
    )
    args = p.parse_args(argv)

    args.workloads = _csv([args.workloads], WORKLOADS, "--workloads")
    if not args.workloads:
        raise UsageError("--workloads: name at least one workload")
    args.against = _csv(args.against, PEERS, "--against")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 5.0
    checks = [
        (args.runs >= 1, f"--runs must be 1 or more (got {args.runs})"),
        (args.seconds > 0, f"--seconds must be more than 0 (got {args.seconds:g})"),
        (args.seconds <= 3600, f"--seconds must be at most 3600 (got {args.seconds:g})"),
        (1 <= args.clients <= 64, f"--clients must be 1..64 (got {args.clients})"),
        (
            1 <= args.inflight <= 1024,
            f"--inflight must be 1..1024, what a member holds in flight per connection (got {args.inflight})",
        ),
        (
            1 <= args.embedded_inflight <= 90_000,
            f"--embedded-inflight must be 1..90000 (got {args.embedded_inflight})",
        ),
        (1 <= args.value_bytes <= 1_000_000, f"--value-bytes must be 1..1000000 (got {args.value_bytes})"),
        (args.memory_records >= 1, f"--memory-records must be 1 or more (got {args.memory_records})"),
        (1 <= args.kv_keys <= 1_000_000, f"--kv-keys must be 1..1000000 (got {args.kv_keys})"),
        (
            1 <= args.flood_inflight <= 100_000,
            f"--flood-inflight must be 1..100000 (got {args.flood_inflight})",
        ),
        (args.tmpdir is None or os.path.isdir(args.tmpdir), f"--tmpdir {args.tmpdir}: not a directory"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    if args.halfload_clients is None:
        args.halfload_clients = args.clients
    if not 1 <= args.halfload_clients <= args.clients:
        raise UsageError(
            f"--halfload-clients must be 1..--clients ({args.clients}) (got {args.halfload_clients})"
        )
    args.warmup = min(1.0, max(0.3, args.seconds / 5))
    return args


def machine_info(tmp: Path) -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu,
        "loadavg_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "kernel": f"{platform.system()} {platform.release()}",
        "tmp_fs": _fs_type(tmp),
    }


def _fs_type(path: Path) -> str | None:
    """The file system type holding ``path`` (from /proc/mounts), to flag a tmpfs (free fsync)."""
    best, fs = "", None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, fs = parts[1], parts[2]
    except OSError:
        return None
    return fs


class Bench:
    """One invocation: the clusters, the load processes, and the results."""

    def __init__(self, opts: argparse.Namespace, procs: Processes, tmp: Path) -> None:
        self.o = opts
        self.procs = procs
        self.tmp = tmp
        self.pool: Pool | None = None
        self.cruise: cruise_side.CruiseCluster | None = None  # all members as processes
        self.cruise_emb: cruise_side.CruiseCluster | None = None  # n1 embedded here
        self.cruise_kv: cruise_side.CruiseCluster | None = None  # state_machine: kv
        self.pso: pysyncobj_side.PySyncObjCluster | None = None  # library defaults
        self.pso_nobatch: pysyncobj_side.PySyncObjCluster | None = None  # appendEntriesUseBatch=False
        self.etcd: etcd_side.EtcdCluster | None = None
        self.cruise_secure: cruise_side.CruiseCluster | None = None  # CURVE on every socket
        self.etcd_tls: etcd_side.EtcdCluster | None = None  # TLS on client and peer URLs
        self.floor: FloorChain | None = None
        self._pso_started = False
        self._floor_started = False
        self._rss_stopped: dict[str, Any] = {}  # members' RSS read just before an early stop
        self.systems: dict[str, dict[str, Any]] = {
            "cruise": {"status": "ok", "fsync": opts.fsync},
            "pysyncobj": {"status": "not requested"},
            "etcd": {"status": "not requested"},
            "floor": {"status": "not requested"},
            "cruise_secure": {"status": "not requested"},
            "etcd_tls": {"status": "not requested"},
        }
        self.results: dict[str, dict[str, Any]] = {}
        self.failures: dict[tuple[str, str], str] = {}

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        o = self.o
        w = set(o.workloads)
        self.pool = Pool(max(2 if "flood" in w else 1, o.clients), self.procs)  # flood: 2 clients
        if w & {"external", "single", "halfload", "secure", "flood", "memory"}:
            self.cruise = cruise_side.CruiseCluster(self.tmp, "cruise", self.procs, REPO, o.fsync)
            self.cruise.start()
        if "pysyncobj" in o.against:
            self._check_pysyncobj(w)
        if "etcd" in o.against:
            self._start_etcd(w)

    # The library clusters (cruise with n1 embedded here, PySyncObj) serve only the embedded
    # and single workloads: they start right before the first of those and stop right after
    # the last, so their idle timers do not share the 2 cores with the other workloads. The
    # floor's two processes likewise live only around the floor and single workloads.
    def _start_library_clusters(self, workload: str) -> None:
        o = self.o
        if workload in ("floor", "single") and "floor" in o.workloads and not self._floor_started:
            self._floor_started = True
            self._start_floor()
        if workload == "embedded" and self.cruise_emb is None:
            self.cruise_emb = cruise_side.CruiseCluster(
                self.tmp, "cruise-embedded", self.procs, REPO, o.fsync, embedded=True
            )
            self.cruise_emb.start()
        if workload in ("embedded", "single") and not self._pso_started:
            self._pso_started = True
            if self.systems["pysyncobj"]["status"] == "ok":
                self._start_pysyncobj(set(o.workloads))
        if workload in kv_plan.WORKLOADS and self.cruise_kv is None:
            self._start_kv()
        if workload == "secure" and self.cruise_secure is None:
            self._start_secure()

    # The secured clusters serve only the secure workload, so, like the library clusters, they
    # run only around it: their idle members would otherwise share the cores with the others.
    def _start_secure(self) -> None:
        o = self.o
        st = self.systems["cruise_secure"]
        st.update(
            status="ok",
            fsync=o.fsync,
            note="CURVE on every socket (raft, client, publish); clients admitted by public key",
        )
        try:
            self.cruise_secure = cruise_side.CruiseCluster(
                self.tmp, "cruise-secure", self.procs, REPO, o.fsync, curve=True
            )
            self.cruise_secure.start()
        except BenchError as e:
            st.update(status="failed", reason=str(e))
            progress(f"cruise[cruise-secure]: failed to start: {e}")
            if self.cruise_secure is not None:
                self.cruise_secure.stop()
            self.cruise_secure = None
        if "etcd" not in o.against:
            return
        st = self.systems["etcd_tls"]
        why = self.systems["etcd"].get("reason") if self.systems["etcd"]["status"] == "skipped" else None
        why = why or tls_available()
        if why:
            st.update(status="skipped", reason=why)
            progress(f"etcd-tls: skipped ({why})")
            return
        st.update(
            status="ok",
            version=self.systems["etcd"].get("version"),
            fsync=True,
            note="client and peer URLs https, --client-cert-auth and --peer-client-cert-auth"
            f" (ECDSA P-256 certificates of a throwaway CA); gRPC {o.etcd_client} client with a"
            " client certificate",
        )
        try:
            certs = make_tls(self.tmp / "etcd-tls-certs", etcd_side.NAMES)
            self.etcd_tls = etcd_side.EtcdCluster(self.tmp, self.procs, self.pool, name="etcd-tls", tls=certs)
            self.etcd_tls.start()
        except BenchError as e:
            st.update(status="failed", reason=str(e))
            progress(f"etcd-tls: failed to start: {e}")
            if self.etcd_tls is not None:
                self.etcd_tls.stop()
            self.etcd_tls = None

    def _start_kv(self) -> None:
        """The kv workloads' cruise cluster, then the same keys preloaded into it and etcd."""
        assert self.pool is not None
        self.cruise_kv = kv_plan.start_cluster(self.tmp, self.procs, REPO, self.o.fsync)
        kv_plan.preload(self.pool, "cruise", self.cruise_kv, self.o)
        if self.etcd is not None:
            try:
                kv_plan.preload(self.pool, "etcd", self.etcd, self.o)
            except BenchError as e:
                progress(f"etcd: {e}")
                for w in kv_plan.WORKLOADS:
                    self.failures[(w, "etcd")] = str(e)

    def _start_floor(self) -> None:
        st = self.systems["floor"]
        st.update(
            status="ok",
            fsync=self.o.fsync,
            note="client -> leader -> follower (write + fdatasync) -> leader -> client, "
            "sleeping Python processes, 1 REQ" + ("" if self.o.fsync else " (no fdatasync: --no-fsync)"),
        )
        try:
            self.floor = FloorChain(self.tmp, self.procs, TOOLS_DIR, fsync=self.o.fsync)
            self.floor.start()
        except BenchError as e:
            st.update(status="failed", reason=str(e))
            progress(f"floor: failed to start: {e}")
            if self.floor is not None:
                self.floor.stop()
            self.floor = None

    def _stop_library_clusters(self, remaining: set[str]) -> None:
        if "secure" not in remaining:
            for name in ("cruise_secure", "etcd_tls"):
                c = getattr(self, name)
                if c is not None:
                    self._rss_stopped[name] = c.rss()
                    c.stop()
                    setattr(self, name, None)
        if not remaining & {"floor", "single"} and self.floor is not None:
            self.floor.stop()
            self.floor = None
        if not remaining & set(kv_plan.WORKLOADS) and self.cruise_kv is not None:
            self._rss_stopped["cruise_kv"] = self.cruise_kv.rss()
            self.cruise_kv.stop()
            self.cruise_kv = None
        if "embedded" not in remaining and self.cruise_emb is not None:
            self._rss_stopped["cruise_embedded"] = self.cruise_emb.rss()
            self.cruise_emb.stop()
            self.cruise_emb = None
        if not remaining & {"embedded", "single"}:
            for name in ("pso", "pso_nobatch"):
                c = getattr(self, name)
                if c is not None:
                    if name == "pso":
                        self._rss_stopped["pysyncobj"] = c.rss()
                    c.stop()
                    setattr(self, name, None)

    def _check_pysyncobj(self, w: set[str]) -> None:
        st = self.systems["pysyncobj"]
        why = pysyncobj_side.available()
        if why:
            st.update(status="skipped", reason=why)
            progress(f"pysyncobj: skipped ({why})")
            return
        st.update(
            status="ok",
            version=pysyncobj_side.version(),
            fsync=False,
            note="journal in a file that is never fsynced; load runs inside the leader process",
        )
        if not w & {"embedded", "single"}:
            st["note"] += " (no workload it takes part in was chosen)"

    def _start_pysyncobj(self, w: set[str]) -> None:
        st = self.systems["pysyncobj"]
        try:
            self.pso = pysyncobj_side.PySyncObjCluster(
                self.tmp, "pysyncobj", self.procs, TOOLS_DIR, batch=True
            )
            self.pso.start()
            if "single" in w:
                self.pso_nobatch = pysyncobj_side.PySyncObjCluster(
                    self.tmp, "pysyncobj-nobatch", self.procs, TOOLS_DIR, batch=False
                )
                self.pso_nobatch.start()
        except BenchError as e:
            st.update(status="failed", reason=str(e))
            progress(f"pysyncobj: failed to start: {e}")
            self.pso = self.pso_nobatch = None

    def _start_etcd(self, w: set[str]) -> None:
        st = self.systems["etcd"]
        why = etcd_side.available()
        if why:
            st.update(status="skipped", reason=why)
            progress(f"etcd: skipped ({why})")
            return
        st.update(
            status="ok",
            version=etcd_side.version(),
            fsync=True,
            note=f"defaults (fsync on); puts sent to the leader over gRPC ({self.o.etcd_client} client)",
        )
        if "kv-get" in w:
            st["note"] += "; kv-get's linearizable Ranges spread over all members"
        if not w & ETCD_WORKLOADS:
            return
        try:
            self.etcd = etcd_side.EtcdCluster(self.tmp, self.procs, self.pool)
            self.etcd.start()
        except BenchError as e:
            st.update(status="failed", reason=str(e))
            progress(f"etcd: failed to start: {e}")
            self.etcd = None

    # -- measure ----------------------------------------------------------------------------
    def systems_for(self, workload: str) -> list[str]:
        """Who runs ``workload`` in this invocation, in order (cruise first; the floor last)."""
        if workload == "floor":
            return ["floor"] if self.floor else []
        out = ["cruise"]
        if workload == "embedded" and self.pso:
            out.append("pysyncobj")
        if workload == "single":
            if self.pso_nobatch:
                out.append("pysyncobj")
            if self.pso:
                out.append("pysyncobj_batched")
        if workload == "secure" and self.cruise_secure:
            out.append("cruise_secure")
        if workload in ETCD_WORKLOADS and self.etcd:
            out.append("etcd")
        if workload == "secure" and self.etcd_tls:
            out.append("etcd_tls")
        if workload == "single" and self.floor:
            out.append("floor")  # measured in the same rounds; reported under "floor"
        return out

    def not_applicable(self, workload: str) -> dict[str, str]:
        out = {}
        if self.systems["pysyncobj"]["status"] == "ok":
            if workload in ("external", "halfload", "flood"):
                out["pysyncobj"] = "n/a (PySyncObj has no client protocol)"
        if self.systems["etcd"]["status"] == "ok" and workload == "embedded":
            out["etcd"] = "n/a (etcd is a server, not a library)"
        for peer in PEERS:
            st = self.systems[peer]
            if st["status"] in ("skipped", "failed") and workload in self._peer_workloads(peer):
                out[peer] = f"{st['status']} ({st['reason']})"
        if workload == "secure":
            for name in ("cruise_secure", "etcd_tls"):
                st = self.systems[name]
                if st["status"] in ("skipped", "failed"):
                    out[name] = f"{st['status']} ({st['reason']})"
        return out

    @staticmethod
    def _peer_workloads(peer: str) -> set[str]:
        return {"embedded", "single"} if peer == "pysyncobj" else ETCD_WORKLOADS

    def _how(self, workload: str, system: str, rate: float | None = None) -> str:
        o = self.o
        seq = ", client+seq" if o.client_seq else ", no client/seq"
        if system == "floor":
            return "4 ZeroMQ hops + fdatasync, 1 REQ" if o.fsync else "4 ZeroMQ hops, no fsync, 1 REQ"
        if workload in kv_plan.WORKLOADS:
            return kv_plan.how(workload, system, o)
        if workload == "flood":
            return flood_side.how(system, o)
        if workload in ("external", "secure"):
            proto = {
                "cruise": f"DEALER{seq}",
                "cruise_secure": f"CURVE{seq}",
                "etcd": f"gRPC {o.etcd_client}",
                "etcd_tls": f"gRPC {o.etcd_client}, TLS",
            }[system]
            return f"{o.clients} procs x {o.inflight} {proto}"
        if workload == "embedded":
            if system == "cruise":
                return f"Node.record, {o.embedded_inflight} in flight"
            return f"@replicated, {o.embedded_inflight} in flight, no fsync"
        if workload == "single":
            return {
                "cruise": f"1 REQ, sequential{seq}",
                "pysyncobj": "in leader, batching off",
                "pysyncobj_batched": "in leader, defaults (100 ms timer)",
                "etcd": "1 blocking Put, sequential",
            }[system]
        if workload == "halfload":
            return f"paced at {rate:,.0f}/s ({o.halfload_clients} procs)" if rate else "paced"
        return ""

    def _timeout(self) -> float:
        return self.o.warmup + self.o.seconds + cruise_side.REQUEST_TIMEOUT + SLACK

    def _cpu_window(self, pids: dict[str, int], start_at: float) -> CpuWindow:
        """The members' CPU over the window the load processes count (from ``start_at``)."""
        start = start_at + self.o.warmup
        return CpuWindow(pids, start, start + self.o.seconds)

    def measure(self, workload: str, system: str, rate: float | None = None) -> dict[str, Any]:
        """One run of ``workload`` on ``system``: that run's figures, members' CPU included."""
        o = self.o
        pool = self.pool
        assert pool is not None
        secs, warm = o.seconds, o.warmup
        n = o.halfload_clients if workload == "halfload" else o.clients
        if system == "cruise" and workload == "embedded":
            c = self.cruise_emb
            assert c is not None
            if c.node.role != "leader":
                progress("cruise[cruise-embedded]: n1 lost the lead; moving it back")
                c._make_n1_leader(20.0)
            start_at = time.monotonic()
            cpu = self._cpu_window(c.pids(), start_at)  # n1 is this process: the load's CPU too
            res = cruise_side.run_embedded(c.node, o.embedded_inflight, o.value_bytes, start_at, warm, secs)
            fig = summarize([res], secs)
            fig.update(cpu.result(fig["acknowledged"]))
            return fig
        if system in ("pysyncobj", "pysyncobj_batched"):
            cluster = (
                self.pso if (workload == "embedded" or system == "pysyncobj_batched") else self.pso_nobatch
            )
            assert cluster is not None
            kw: dict[str, Any] = {"value_bytes": o.value_bytes}
            if workload == "embedded":
                kw["inflight"] = o.embedded_inflight
            return cluster.run(workload, self._timeout(), warmup=warm, seconds=secs, **kw)

        if workload == "flood":
            server = self.cruise if system == "cruise" else self.etcd
            assert server is not None
            return flood_side.measure(pool, system, server, o, self._timeout())

        # Server systems, driven from the load processes. The secure workload is external's
        # load; only the cluster it is aimed at differs.
        if workload == "secure":
            workload = "external"
        if workload in kv_plan.WORKLOADS:
            cluster = self.cruise_kv if system == "cruise" else self.etcd
            assert cluster is not None
            name, jobs, pids, start_at = kv_plan.jobs(workload, system, o, cluster)
        elif system in ("cruise", "cruise_secure", "floor"):
            curve = None
            if system != "floor":
                c = self.cruise_secure if system == "cruise_secure" else self.cruise
                assert c is not None
                leader = c.check_leader()
                addr, curve, pids = c.client_addr(leader), c.curve_job(leader), c.pids()
            else:
                assert self.floor is not None
                addr, pids = self.floor.addr, self.floor.pids()
            start_at = time.monotonic() + 0.2
            common: dict[str, Any] = {
                "addr": addr,
                "value_bytes": o.value_bytes,
                "start_at": start_at,
                "warmup": warm,
                "seconds": secs,
                "client_seq": o.client_seq,
            }
            if workload == "external":
                job = {**common, "inflight": o.inflight, **({"curve": curve} if curve else {})}
                name, jobs = "benchlib.cruise_side:closed_loop", [job] * n
            elif workload in ("single", "floor"):
                name, jobs = "benchlib.cruise_side:single_writer", [common]
            else:
                assert rate is not None
                name, jobs = "benchlib.cruise_side:open_loop", [{**common, "rate": rate / n}] * n
        elif system in ("etcd", "etcd_tls"):
            e = self.etcd_tls if system == "etcd_tls" else self.etcd
            assert e is not None
            e.check_leader()
            pids = e.pids()
            start_at = time.monotonic() + 0.2
            common = {
                "target": e.leader_target,
                "value_bytes": o.value_bytes,
                "start_at": start_at,
                "warmup": warm,
                "seconds": secs,
                **e.tls_job,
            }
            if workload == "single":
                name, jobs = "benchlib.etcd_side:single_writer", [common]
            elif workload == "external":
                name = "benchlib.etcd_side:closed_loop"
                jobs = [
                    {**common, "worker": i, "client": o.etcd_client, "inflight": o.inflight} for i in range(n)
                ]
            else:
                assert rate is not None
                name = "benchlib.etcd_side:open_loop"
                jobs = [{**common, "worker": i, "client": o.etcd_client, "rate": rate / n} for i in range(n)]
        else:
            raise AssertionError(system)
        cpu = self._cpu_window(pids, start_at)
        parts = pool.run(name, jobs, self._timeout())
        fig = summarize(parts, secs, **({"target_rate": rate} if workload == "halfload" else {}))
        fig.update(cpu.result(fig["acknowledged"]))
        return fig

    def run_workload(self, workload: str) -> None:
        o = self.o
        systems = self.systems_for(workload)
        rates: dict[str, float | None] = {}
        basis: dict[str, str] = {}
        if workload == "halfload":
            for s in systems:
                rates[s], basis[s] = self._half_rate(s)
            systems = [s for s in systems if rates.get(s)]
        runs: dict[str, list[dict]] = {s: [] for s in systems}
        for r in range(o.runs):
            for s in systems:
                if (workload, s) in self.failures:
                    continue
                progress(f"{workload}: run {r + 1}/{o.runs} {s} ({self._how(workload, s, rates.get(s))})...")
                try:
                    fig = self.measure(workload, s, rates.get(s))
                except BenchError as e:
                    progress(f"{workload}: {s} failed: {e}")
                    self.failures[(workload, s)] = str(e)
                    continue
                runs[s].append(fig)
                err = f", {fig['errors']} errors {fig['error_kinds']}" if fig["errors"] else ""
                cpu = fig.get("cpu_us_per_rec")
                cpu_txt = "" if cpu is None else f", members {cpu:,.0f} us CPU/record"
                progress(
                    f"{workload}: run {r + 1}/{o.runs} {s}: {fig['records_per_s']:,.0f} records/s,"
                    f" p50 {_ms(fig['p50_ms'])}, p99 {_ms(fig['p99_ms'])}{cpu_txt}{err}"
                )
                if workload == "flood":
                    progress(
                        f"{workload}: run {r + 1}/{o.runs} {s}: (that is the polite client under flood;"
                        f" alone {fig['alone_records_per_s']:,.0f} records/s, p50 {_ms(fig['alone_p50_ms'])},"
                        f" p99 {_ms(fig['alone_p99_ms'])}); flooder sent {fig['flood_sent_per_s']:,.0f}/s,"
                        f" acknowledged {fig['flood_acked_per_s']:,.0f}/s, refused"
                        f" {fig['flood_refused_per_s']:,.0f}/s, {fig['flood_unanswered']} unanswered"
                    )
        out: dict[str, Any] = {}
        for s in self.systems_for(workload):
            if (workload, s) in self.failures and not runs.get(s):
                out[s] = {"failed": self.failures[(workload, s)]}
            elif s in runs and runs[s]:
                out[s] = {"how": self._how(workload, s, rates.get(s)), **median_of_runs(runs[s])}
                if s in basis:
                    out[s]["half_of"] = basis[s]
                if (workload, s) in self.failures:
                    out[s]["failed_runs"] = self.failures[(workload, s)]
                if workload == "flood":
                    flood_side.sum_kinds(out[s])
            elif workload == "halfload" and s not in runs:
                out[s] = {"failed": "no external figure to take half of"}
        out.update(self.not_applicable(workload))
        if workload in ("floor", "single") and "floor" in o.workloads:
            st = self.systems["floor"]
            floor = out.pop("floor", None) or f"{st['status']} ({st.get('reason', '')})"
            self.results["floor"] = {"floor": floor}  # before single's, as the table reads
        if workload != "floor":
            self.results[workload] = out

    def _half_rate(self, system: str) -> tuple[float | None, str]:
        """Half of ``system``'s max records/s (this run's external median, else one calibration
        run of the external workload); and where the max came from."""
        ext = self.results.get("external", {}).get(system)
        if isinstance(ext, dict) and ext.get("records_per_s"):
            return 0.5 * ext["records_per_s"], f"external median, {ext['records_per_s']:.0f} records/s"
        progress(f"halfload: measuring {system}'s max first (one external run)")
        try:
            fig = self.measure("external", system)
        except BenchError as e:
            progress(f"halfload: {system} calibration failed: {e}")
            return None, "calibration failed"
        rate = fig["records_per_s"]
        return (0.5 * rate if rate else None), f"one calibration external run, {rate:.0f} records/s"

    def run_memory(self) -> None:
        """Drive ``--memory-records`` records through external clients, then read members' VmRSS."""
        o = self.o
        c = self.cruise
        pool = self.pool
        assert c is not None and pool is not None
        total = o.memory_records
        before = c.rss()
        done = errors = 0
        t0 = time.monotonic()
        chunk = min(MEMORY_PROGRESS, total)
        progress(
            f"memory: driving {total:,} records of {o.value_bytes} B through {o.clients} x {o.inflight} DEALER"
        )
        try:
            while done < total:
                want = min(chunk, total - done)
                addr = c.client_addr(c.check_leader())
                per = [want // o.clients + (1 if i < want % o.clients else 0) for i in range(o.clients)]
                jobs = [
                    {
                        "addr": addr,
                        "inflight": o.inflight,
                        "value_bytes": o.value_bytes,
                        "start_at": time.monotonic(),
                        "warmup": 0.0,
                        "seconds": 0.0,
                        "max_records": k,
                    }
                    for k in per
                    if k
                ]
                parts = pool.run("benchlib.cruise_side:closed_loop", jobs, want / 500 + SLACK)
                got = sum(p["ok"] for p in parts)
                errors += sum(p["errors"] for p in parts)
                if got == 0:
                    raise BenchError("memory: a chunk of records got no acknowledgement")
                done += got
                elapsed = time.monotonic() - t0
                rss = ", ".join(f"{i} {_mb(v)}" for i, v in c.rss().items())
                progress(f"memory: {done:,}/{total:,} records ({done / elapsed:,.0f}/s); RSS {rss}")
        except BenchError as e:
            progress(f"memory: failed: {e}")
            self.results["memory"] = {"cruise": {"failed": str(e), "acknowledged": done}}
            return
        elapsed = time.monotonic() - t0
        after = c.rss()
        status = c.statuses(2.0)
        fig: dict[str, Any] = {
            "how": f"{total:,} records, {o.clients} x {o.inflight} DEALER",
            "records_per_s": done / elapsed,
            "acknowledged": done,
            "errors": errors,
            "seconds": elapsed,
            "rss_mb_after_start": c.rss_after_start,
            "rss_mb_before": before,
            "rss_mb_after": after,
            "rss_mb_max": max((v for v in after.values() if v is not None), default=None),
            "last_index": {i: (s or {}).get("last_index") for i, s in status.items()},
        }
        if self.cruise_emb is not None:
            fig["rss_mb_bench_process_with_embedded_n1"] = rss_mb(os.getpid())
        self.results["memory"] = {"cruise": fig}

    def run(self) -> None:
        self.start()
        chosen = [w for w in WORKLOADS if w in self.o.workloads]
        if "single" in chosen and "floor" in chosen:
            chosen.remove("floor")  # measured inside single's rounds
        for k, workload in enumerate(chosen):
            self._start_library_clusters(workload)
            if workload == "memory":
                self.run_memory()
            else:
                self.run_workload(workload)
            self._stop_library_clusters(set(chosen[k + 1 :]))

    def rss_end(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._rss_stopped)
        if self.cruise:
            out["cruise"] = self.cruise.rss()
        if self.cruise_emb:
            out["cruise_embedded"] = self.cruise_emb.rss()
        if self.cruise_kv:
            out["cruise_kv"] = self.cruise_kv.rss()
        if self.pso:
            out["pysyncobj"] = self.pso.rss()
        if self.etcd:
            out["etcd"] = self.etcd.rss()
        if self.cruise_secure:
            out["cruise_secure"] = self.cruise_secure.rss()
        if self.etcd_tls:
            out["etcd_tls"] = self.etcd_tls.rss()
        if self.floor:
            out["floor"] = self.floor.rss()
        return out

    def stop(self) -> None:
        for c in (
            self.cruise_emb,
            self.cruise_kv,
            self.cruise_secure,
            self.cruise,
            self.pso,
            self.pso_nobatch,
            self.etcd_tls,
            self.etcd,
            self.floor,
        ):
            if c is not None:
                try:
                    c.stop()
                except Exception as e:  # teardown goes on; stop_all kills what is left
                    progress(f"bench: stopping {type(c).__name__}: {e}")
        if self.pool is not None:
            self.pool.close()


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} ms"


def _mb(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_args(argv)
    except UsageError as e:
        print(f"tools/bench: error: {e}", file=sys.stderr)
        return 2
    sigterm_to_exit()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="cruise-bench-", dir=opts.tmpdir))
    machine = machine_info(tmp)
    progress(
        f"bench: nproc {machine['nproc']}, load average "
        f"{' '.join(f'{x:.2f}' for x in machine['loadavg_start'])}; temp dir {tmp} ({machine['tmp_fs']})"
    )
    if not opts.fsync:
        progress(
            "bench: !!! cruise fsync is OFF: acknowledged records are not on disk; targets do not count !!!"
        )
    if machine["tmp_fs"] in ("tmpfs", "ramfs"):
        progress(f"bench: warning: {tmp} is on {machine['tmp_fs']}: fsync costs nothing there (use --tmpdir)")
    bench = Bench(opts, procs, tmp)
    code = 0
    rss_end: dict[str, Any] = {}
    try:
        try:
            bench.run()
        except BenchError as e:
            progress(f"bench: error: {e}")
            code = 1
        rss_end = bench.rss_end()
    except KeyboardInterrupt:
        progress("bench: interrupted; stopping every process it started")
        code = 130
    except SystemExit:
        progress("bench: terminated; stopping every process it started")
        raise
    finally:
        progress("bench: stopping everything...")
        bench.stop()
        procs.stop_all()
        if opts.keep:
            progress(f"bench: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code == 130:
        return code
    machine["loadavg_end"] = list(os.getloadavg())
    report = {
        "bench": "cruise",
        "schema": 1,
        "machine": machine,
        "settings": {
            "workloads": opts.workloads,
            "against": opts.against,
            "runs": opts.runs,
            "seconds": opts.seconds,
            "warmup": opts.warmup,
            "clients": opts.clients,
            "inflight": opts.inflight,
            "halfload_clients": opts.halfload_clients,
            "embedded_inflight": opts.embedded_inflight,
            "value_bytes": opts.value_bytes,
            "client_seq": opts.client_seq,
            "fsync": opts.fsync,
            "etcd_client": opts.etcd_client,
            "memory_records": opts.memory_records if "memory" in opts.workloads else None,
            "kv_keys": opts.kv_keys if set(opts.workloads) & set(kv_plan.WORKLOADS) else None,
            "flood_inflight": opts.flood_inflight if "flood" in opts.workloads else None,
            "flood_member_cap": flood_side.member_cap() if "flood" in opts.workloads else None,
            "temp_dir": str(tmp) if opts.keep else None,
        },
        "systems": bench.systems,
        "results": bench.results,
        "targets": judge(bench.results, bench.systems, opts.fsync),
        "vs_floor": apply_floor(bench.results),
        "kv_get_vs_put": kv_get_vs_put(bench.results),
        "secure_ratios": secure_ratios(bench.results),
        "flood_ratios": flood_ratios(bench.results),
        "rss_mb_end": rss_end,
        "ok": code == 0
        and all(
            isinstance(v, dict) and "failed" not in v
            for w in bench.results.values()
            for k, v in w.items()
            if k in ("cruise", "cruise_secure")
        ),
    }
    if not opts.json_only:
        print(table(report))
    print(json_line(report), flush=True)
    if code == 0 and not report["ok"]:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
