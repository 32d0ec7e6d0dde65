"""``tools/simulate``: run many seeds, in parallel, and report ``seeds=N violations=V``."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from .network import NetConfig
from .sim import FAULT_KINDS, SimConfig, SimResult, run_seed


def config_for(seed: int, base: SimConfig, nodes: int | None, mix: bool) -> SimConfig:
    """Vary cluster size, fault mix and intensity by seed unless fixed on the command line."""
    r = random.Random(seed * 7919 + 1)
    cfg = replace(base, net=replace(base.net))
    cfg.nodes = nodes if nodes is not None else r.choice((3, 3, 4, 5, 5, 7))
    cfg.background_sync = r.random() < 0.5
    if not mix:
        return cfg
    # Membership is drawn apart (and last), so a seed without it is the run it was before
    # membership changes existed: planted-bug tests keep finding what they found.
    kinds = tuple(k for k in base.faults if k not in ("membership", "dataloss", "diskfull"))
    cfg.faults = tuple(k for k in kinds if r.random() < 0.8) or kinds
    cfg.crash_rate = r.choice((0.002, 0.004, 0.01, 0.02))
    if cfg.crash_rate >= 0.01:
        cfg.restart_after = (2, 25)
    cfg.crash_io = r.choice((0.0, 0.001, 0.003))
    cfg.max_msg_bytes = r.choice((1, 4096))
    # A long request timeout keeps requests waiting through several leaders.
    cfg.request_timeout_ticks = r.choice((40, 40, 150))
    cfg.net.max_delay = r.choice((2, 6, 12))
    cfg.net.redeliver = r.choice((0.01, 0.05, 0.2))
    if r.random() < 0.3:
        cfg = hostile(cfg)
    if "membership" in base.faults and random.Random(seed * 7919 + 2).random() < 0.5:
        cfg.faults = (*cfg.faults, "membership")
    # Data loss likewise (it needs crashes to act on).
    if "dataloss" in base.faults and random.Random(seed * 7919 + 3).random() < 0.5:
        cfg.faults = (*cfg.faults, "dataloss")
    # And full disks.
    if "diskfull" in base.faults and random.Random(seed * 7919 + 4).random() < 0.5:
        cfg.faults = (*cfg.faults, "diskfull")
    return cfg


def hostile(cfg: SimConfig) -> SimConfig:
    """A profile that aims at commit-rule and client-session bugs: leaders crash right after
    winning or committing, partitions come and go fast, members come back fast, old messages
    come back often, and every append carries one entry so replication catches up piece by
    piece (the paper's Figure 8)."""
    cfg.leader_crash = 0.5
    cfg.writers, cfg.write_rate, cfg.client_timeout_ticks = 5, 1.0, 6  # entries arrive at every moment
    cfg.partition_rate = 0.05
    cfg.partition_len = (5, 30)
    cfg.max_msg_bytes = 1
    cfg.restart_after = (1, 20)
    cfg.crash_rate = max(cfg.crash_rate, 0.01)
    cfg.net = replace(cfg.net, redeliver=0.2, long_delay=0.02)
    return cfg


def _run_one(args: tuple[int, SimConfig]) -> SimResult:
    seed, cfg = args
    return run_seed(seed, cfg)


def _strip_seeds(argv: list[str] | None) -> str:
    """The command-line flags of this run minus the seed selection, to reproduce one seed."""
    out: list[str] = []
    skip = False
    for x in list(sys.argv[1:] if argv is None else argv):
        if skip:
            skip = False
        elif x in ("--seeds", "--start", "--seed", "--jobs"):
            skip = True
        elif x.split("=")[0] not in ("--seeds", "--start", "--seed", "--jobs"):
            out.append(x)
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="simulate",
        description="Run seeded fault schedules against whole cruise members (the production "
        "member code on a simulated network and disk) and check Raft's and the clients' guarantees.",
    )
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    p.add_argument("--start", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--seed", type=int, help="run just this seed and print its trace")
    p.add_argument("--nodes", type=int, help="cluster size (default: 3 to 7, varied by seed)")
    p.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated fault kinds from {','.join(FAULT_KINDS)}, or 'none' (default: all, mixed by seed)",
    )
    p.add_argument("--no-mix", action="store_true", help="use exactly --faults for every seed")
    p.add_argument("--ticks", type=int, default=SimConfig.fault_ticks, help="ticks of faults per seed")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--trace", type=int, default=40, help="trace lines to print for a failing seed")
    a = p.parse_args(argv)

    faults = () if a.faults == "none" else tuple(x.strip() for x in a.faults.split(",") if x.strip())
    bad = [x for x in faults if x not in FAULT_KINDS]
    if bad:
        p.error(f"unknown fault kind(s): {', '.join(bad)} (choose from {', '.join(FAULT_KINDS)})")
    if a.nodes is not None and not 1 <= a.nodes <= 9:
        p.error("--nodes must be between 1 and 9")
    if a.seeds < 1 or a.ticks < 1:
        p.error("--seeds and --ticks must be positive")
    base = SimConfig(faults=faults, fault_ticks=a.ticks, net=NetConfig())
    seeds = [a.seed] if a.seed is not None else list(range(a.start, a.start + a.seeds))
    work = [(s, config_for(s, base, a.nodes, mix=not a.no_mix)) for s in seeds]

    t0 = time.monotonic()
    results: list[SimResult] = []
    failures: list[SimResult] = []
    show_progress = sys.stderr.isatty() and len(work) > 1

    def take(r: SimResult) -> None:
        results.append(r)
        if r.violation:
            failures.append(r)
        if show_progress and len(results) % 50 == 0:
            print(f"  {len(results)}/{len(work)} seeds, {len(failures)} violations", file=sys.stderr)

    if a.jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(a.jobs) as ex:
            for r in ex.map(_run_one, work, chunksize=4):
                take(r)
    else:
        for w in work:
            take(_run_one(w))
    dt = time.monotonic() - t0
    sizes = sorted({r.nodes for r in results})
    print(
        f"seeds={len(results)} violations={len(failures)} nodes={','.join(map(str, sizes))} "
        f"leaders={sum(r.leaders for r in results)} committed={sum(r.committed for r in results)} "
        f"acked={sum(r.acked for r in results)} crashes={sum(r.crashes for r in results)} "
        f"partitions={sum(r.partitions for r in results)} restores={sum(r.restores for r in results)} wipes={sum(r.wipes for r in results)} "
        f"disk_fulls={sum(r.disk_fulls for r in results)} messages={sum(r.messages for r in results)} "
        f"seconds={dt:.1f}"
    )
    for r in failures:  # each on one line; the first with its trace below
        print(f"FAILED seed={r.seed} nodes={r.nodes}: {r.violation}")
    for r in failures[:1]:
        print(f"reproduce: tools/simulate --seed {r.seed} {_strip_seeds(argv)}".rstrip())
        print("last steps:")
        for line in r.trace[-a.trace :]:
            print("  " + line)
    if a.seed is not None and not failures:
        for line in results[0].trace[-a.trace :]:
            print("  " + line)
    return 1 if failures else 0
