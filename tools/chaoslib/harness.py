"""``tools/chaos``: one seeded run of faults against real member processes, then the checks.

The order of a run, each step with a deadline:

1. build the network (:mod:`chaoslib.net`): a namespace per member on a hub bridge; and a
   tmpfs per member for its data directory (:mod:`chaoslib.disk`), which a fault can fill;
2. write the config (members bind ``0.0.0.0`` and advertise their namespace's address, the
   README's multi-host layout) and start ``python -m cruise run`` in each namespace;
3. wait for a leader, start the clients (:mod:`chaoslib.workload`), and apply the seeded
   schedule (:mod:`chaoslib.faults`) until the duration is up;
4. stop the clients, heal everything, and ask the cluster for one more acknowledged operation
   (a record for ``log``, a read of every key for ``kv``): a cluster that never recovers fails
   here, not silently;
5. settle: every member names the same leader and has applied the last acknowledged index;
6. fetch every member's committed log (``entries``, paged) and run the checks: the log checks
   for both workloads (members agree, acknowledged records are there once), linearizability
   for ``kv``;
7. print the report (:mod:`chaoslib.report`), keep the run's directory on a failure (or with
   ``--keep``), remove it otherwise.

Whatever happens, and on Ctrl-C or SIGTERM, the ``finally`` stops every member by its pid
(SIGCONT first, so a paused one can exit), then deletes the network by its names.

Exit status: 0 pass, 1 a violation (or a cluster that did not recover), 77 when this machine
cannot run it (not root, no ``ip`` or ``nft``, no namespaces), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from chaoslib import faults, linearizability, logcheck, report
from chaoslib.disk import Disks, DiskUnavailable
from chaoslib.history import Op, Recorder, load_ops
from chaoslib.net import Network, NetworkUnavailable
from chaoslib.workload import KEYS, KvWorkload, LogWorkload
from cruise import Client, CruiseError
from cruise.client import status_all

ROOT = Path(__file__).resolve().parents[2]
PORTS = {"raft": 7100, "client": 7200, "publish": 7300}  # the same on every host, as in the README
SETTINGS: dict[str, Any] = {
    "heartbeat_ms": 50,
    "election_timeout_ms": [300, 600],
    "request_timeout_ms": 1000,
    "fsync": True,  # a SIGKILL must not lose what was acknowledged: that is under test
    "snapshot_every": 1000,  # snapshots and restarts from them happen within a run
    "retain_entries": 100000,  # and every committed entry stays readable for the checks
    "wal_segment_bytes": 64 << 10,  # a full disk refuses the next segment soon after it fills
}
CLIENT_TIMEOUT = 5.0  # one client call, retries through the members included
START_DEADLINE = 30.0  # members up and a leader elected
RECOVER_DEADLINE = 30.0  # after healing: the final operation acknowledged
SETTLE_DEADLINE = 30.0  # after that: every member applied the last acknowledged index
STOP_DEADLINE = 5.0  # a member's exit after SIGTERM, before SIGKILL
EXIT_UNAVAILABLE = 77
EXIT_INTERRUPTED = 130


# -- the members ----------------------------------------------------------------------------------


class Members:
    """The member processes, one per namespace; what :class:`faults.Injector` acts on.

    Every process is started and stopped by its pid; a member that exits without being killed
    is remembered (``crashed``): that is a finding, not noise.
    """

    def __init__(self, net: Network, ids: list[str], run_dir: Path, config: Path, disks: Disks) -> None:
        self.net = net
        self.disks = disks
        self.ids = ids
        self.run_dir = run_dir
        self.config = config
        self.addr = dict(zip(ids, net.addresses, strict=True))
        self.client_addrs = [f"tcp://{a}:{PORTS['client']}" for a in net.addresses]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.crashed: list[str] = []
        self._env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )
        atexit.register(self.stop_all)

    def log_path(self, id: str) -> Path:
        return self.run_dir / "logs" / f"{id}.log"

    def start(self, id: str, join: bool = False) -> None:
        self._note_crash(id)
        argv = [sys.executable, "-m", "cruise", "run", str(self.config), "--id", id, "--log-format", "json"]
        if join:
            argv.append("--join")
        with open(self.log_path(id), "ab") as log:
            self.procs[id] = self.net.run_in(
                self.ids.index(id),
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=str(self.run_dir),
                start_new_session=True,  # Ctrl-C reaches the harness alone; it stops them in order
            )

    def kill(self, id: str) -> None:
        self._note_crash(id)
        p = self.procs.pop(id, None)
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)

    def signal(self, id: str, sig: signal.Signals) -> None:
        p = self.procs.get(id)
        if p is not None and p.poll() is None:
            p.send_signal(sig)

    def _leading(self) -> dict[str, Any] | None:
        """The status of the member that says it leads, in the highest term among those that
        answer; None when none does."""
        leads = [s for s in status_all(self.client_addrs, timeout=0.5) if s.get("role") == "leader"]
        return max(leads, key=lambda s: s["term"]) if leads else None

    def leader(self) -> str | None:
        lead = self._leading()
        return None if lead is None else lead["id"]

    def cut(self, drops: Sequence[tuple[str, str]]) -> None:
        self.net.cut([(self.addr[a], self.addr[b]) for a, b in drops])

    def heal_network(self) -> None:
        self.net.heal()

    def transfer(self, to: str) -> str:
        with Client(self.client_addrs, timeout=CLIENT_TIMEOUT) as c:
            return c.transfer_leader(to)

    def fill_disk(self, id: str) -> int:
        return self.disks.fill(id)

    def free_disk(self, id: str) -> None:
        self.disks.free(id)

    def disk_full(self, id: str) -> str | None:
        st = status_all([self.client_addrs[self.ids.index(id)]], timeout=0.5)
        return st[0].get("disk_full") if st else None

    def wipe(self, id: str) -> None:
        self.disks.wipe(id)

    def is_member(self, id: str) -> bool | None:
        lead = self._leading()
        return None if lead is None else any(m.get("id") == id for m in lead.get("members", []))

    def remove_member(self, id: str) -> None:
        with Client(self.client_addrs, timeout=CLIENT_TIMEOUT) as c:
            c.remove_member(id)

    def add_member(self, id: str) -> None:
        a = self.addr[id]
        with Client(self.client_addrs, timeout=CLIENT_TIMEOUT) as c:
            c.add_member(id, **{k: f"tcp://{a}:{port}" for k, port in PORTS.items()})

    def check_alive(self) -> None:
        """Remember every member that exited without the harness killing it."""
        for id in list(self.procs):
            self._note_crash(id)

    def _note_crash(self, id: str) -> None:
        p = self.procs.get(id)
        if p is not None and p.poll() is not None:
            self.crashed.append(f"{id} exited by itself with status {p.returncode} (see {self.log_path(id)})")
            del self.procs[id]

    def stop_all(self) -> None:
        """SIGCONT and SIGTERM every member, wait, SIGKILL what is left; never raises."""
        atexit.unregister(self.stop_all)
        procs = list(self.procs.values())
        self.procs.clear()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a stopped process would not act on SIGTERM
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def write_config(path: Path, ids: list[str], addresses: list[str], machine: str) -> None:
    members = [
        {
            "id": i,
            **{k: f"tcp://{a}:{port}" for k, port in PORTS.items()},
            "bind": {k: f"tcp://0.0.0.0:{port}" for k, port in PORTS.items()},
        }
        for i, a in zip(ids, addresses, strict=True)
    ]
    cfg = {"members": members, "data_dir": "disks/{id}/data", "state_machine": machine, **SETTINGS}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


# -- waiting --------------------------------------------------------------------------------------


def wait_leader(members: Members, deadline: float) -> str | None:
    while time.monotonic() < deadline:
        lead = members.leader()
        if lead is not None:
            return lead
        time.sleep(0.1)
    return None


def final_ops(members: Members, recorder: Recorder, workload: str, deadline: float) -> str | None:
    """One more acknowledged operation after healing; None, or why it never came.

    ``log``: a record (process ``final``). ``kv``: a linearizable read of every key (processes
    ``final-KEY``), which the linearizability check then holds to the last writes.
    """
    remaining = max(1.0, deadline - time.monotonic())
    with Client(members.client_addrs, timeout=remaining, client_id="chaos-final") as c:
        if workload == "log":
            recorder.invoke("final", "record", value="final-1")
            try:
                r = c.record("final-1")
            except CruiseError as e:
                recorder.complete("final", "info", error=e.code)
                return f"no record acknowledged within {remaining:.0f}s after healing: {e}"
            recorder.complete("final", "ok", value="final-1", index=r.index)
            return None
        for key in KEYS:
            process = f"final-{key}"
            recorder.invoke(process, "get", key=key)
            try:
                reply = c.request("query", query={"get": key})
            except CruiseError as e:
                recorder.complete(process, "fail", error=e.code)
                return f"no read of {key} answered within {remaining:.0f}s after healing: {e}"
            recorder.complete(process, "ok", value=reply.get("result"), index=reply.get("index"))
    return None


def wait_rejoined(members: Members, deadline: float) -> float | None:
    """The monotonic time at which every member was back after a heal, or None by ``deadline``.

    Back: every member answers, names the same leader, and has applied what that leader had
    committed when this began. A member can stay cut off well after the network heals (a
    restart takes a while; a TCP connection that lost packets waits for its retransmission
    timer), and this is what shows how long.
    """
    mark: int | None = None
    while time.monotonic() < deadline:
        sts = status_all(members.client_addrs, timeout=0.25)
        leaders = {s.get("leader") for s in sts}
        lead = next((s for s in sts if s.get("role") == "leader" and leaders == {s["id"]}), None)
        if lead is not None:
            mark = int(lead["commit_index"]) if mark is None else mark
            if all(s.get("applied_index", -1) >= mark for s in sts):
                return time.monotonic()
        time.sleep(0.1)
    return None


@dataclass
class Settled:
    ok: bool
    why: str = ""
    statuses: list[dict[str, Any]] = field(default_factory=list)


def settle(members: Members, target: int, deadline: float) -> Settled:
    """Wait until every member names one leader that says it leads, and has applied ``target``."""
    sts: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        sts = status_all(members.client_addrs, timeout=1.0)
        leaders = {s.get("leader") for s in sts}
        lead = next(iter(leaders)) if len(leaders) == 1 else None
        if (
            lead is not None
            and all("error" not in s for s in sts)
            and any(s["id"] == lead and s["role"] == "leader" for s in sts)
            and all(s["applied_index"] >= target for s in sts)
        ):
            return Settled(True, statuses=sts)
        time.sleep(0.2)
    brief = [{k: s.get(k) for k in ("id", "role", "term", "leader", "applied_index", "error")} for s in sts]
    return Settled(False, f"not settled within the deadline at index {target}: {json.dumps(brief)}", sts)


def fetch_log(addr: str, upto: int) -> tuple[list[dict[str, Any]], int]:
    """The committed entries a member holds up to ``upto``, and the first index it holds.

    A member that installed a snapshot holds nothing below it: ``entries`` answers
    ``compacted`` with the snapshot's index, and the log is read from the next one.
    """
    out: list[dict[str, Any]] = []
    start = first = 1
    with Client(addr, timeout=CLIENT_TIMEOUT) as c:
        while start <= upto:
            try:
                got = c.entries(start, limit=1000)
            except CruiseError as e:
                snap = e.extra.get("snapshot_index") if e.code == "compacted" else None
                if snap is None or out:
                    raise
                start = first = int(snap) + 1
                continue
            if not got:
                break
            out.extend(got)
            start = int(got[-1]["index"]) + 1
    return [e for e in out if e["index"] <= upto], first


# -- the checks -----------------------------------------------------------------------------------


def run_checks(workload: str, ops: list[Op], logs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every violation the checkers find in the history and the members' logs (empty: pass).

    The log checks run for both workloads: members must agree on their committed logs
    whatever the state machine, and a kv write acknowledged at an index must be there as the
    record that was sent, like a ``log`` record.
    """
    acks = logcheck.acks_from_ops(ops) + kv_acks(ops)
    violations = [str(v) for v in logcheck.check_logs(logs, acks)]
    if workload == "kv":
        result = linearizability.check(ops)
        if result.status != "ok":
            violations.append(f"[linearizability] {result.explain()}")
    return violations


def kv_acks(ops: list[Op]) -> list[logcheck.Ack]:
    """The kv writes the cluster answered, as the record each put in the log."""
    out = []
    for op in ops:
        if op.index is None or op.complete_time is None:
            continue
        if op.f == "put" and op.kind == "ok":
            value: Any = {"put": op.key, "value": op.value}
        elif op.f == "cas" and (op.kind == "ok" or (op.kind == "fail" and op.error is None)):
            expect, new = op.value
            value = {"cas": op.key, "expect": expect, "value": new}
        else:
            continue
        out.append(logcheck.Ack(value, op.index, op.invoke_time, op.complete_time, op.process))
    return out


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tools/chaos", description=(__doc__ or "").splitlines()[0])
    one = ap.add_mutually_exclusive_group(required=True)
    one.add_argument("--seed", type=int, help="draws the fault schedule and the op mix")
    one.add_argument("--seeds", help="a campaign: A-B runs seeds A to B one after another, then sums up")
    ap.add_argument("--duration", type=float, required=True, help="seconds of workload under faults")
    ap.add_argument("--members", default="3", help="3 or 5; a campaign may say 3,5 (each seed on each)")
    ap.add_argument(
        "--faults",
        default=",".join(faults.KINDS),
        help=f"comma-separated, from {','.join(faults.KINDS)} (default: all); empty: none",
    )
    ap.add_argument("--workload", choices=("log", "kv"), default="log")
    ap.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory on a pass too")
    args = ap.parse_args(argv)
    args.fault_kinds = [k for k in (s.strip() for s in args.faults.split(",")) if k]
    unknown = sorted(set(args.fault_kinds) - set(faults.KINDS))
    if unknown:
        ap.error(f"unknown faults: {', '.join(unknown)} (known: {', '.join(faults.KINDS)})")
    if args.duration <= 0 or args.clients < 1:
        ap.error("--duration and --clients must be positive")
    try:
        args.member_counts = [int(x) for x in args.members.split(",")]
    except ValueError:
        ap.error(f"--members takes 3, 5 or 3,5, not {args.members!r}")
    if not args.member_counts or any(n not in (3, 5) for n in args.member_counts):
        ap.error(f"--members takes 3, 5 or 3,5, not {args.members!r}")
    if args.seeds is None:
        if len(args.member_counts) > 1:
            ap.error("one run has one size: --members 3 or 5 (3,5 is for --seeds)")
        args.seed_list = [args.seed]
    else:
        lo, sep, hi = args.seeds.partition("-")
        if not (lo.isdigit() and (hi.isdigit() or not sep)) or (sep and int(hi) < int(lo)):
            ap.error(f"--seeds takes A-B (or one seed), not {args.seeds!r}")
        args.seed_list = list(range(int(lo), int(hi or lo) + 1))
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    if args.seeds is None:
        args.members = args.member_counts[0]
        return run_one(args)[0]
    # A campaign: every seed on every size, one run at a time; the full report of a failed
    # run, the verdict line of a passed one, then the sum of them all.
    results: list[report.Result] = []
    code = 0
    for n in args.member_counts:
        for seed in args.seed_list:
            one = argparse.Namespace(**vars(args))
            one.seed, one.members, one.quiet = seed, n, True
            rc, result = run_one(one)
            if rc in (EXIT_UNAVAILABLE, EXIT_INTERRUPTED):
                return rc
            code = max(code, rc)
            if result is not None:
                results.append(result)
    print("\n" + report.summary(results, SETTINGS["election_timeout_ms"]), flush=True)
    return code


def run_one(args: argparse.Namespace) -> tuple[int, report.Result | None]:
    """One seeded run: its exit status and its result (None when it could not start)."""
    ids = [f"n{i + 1}" for i in range(args.members)]
    schedule = faults.plan(args.seed, args.duration, args.fault_kinds, ids)
    try:
        net = Network(args.members)
    except NetworkUnavailable as e:
        print(f"chaos: cannot run here: {e}", flush=True)
        return EXIT_UNAVAILABLE, None
    run_dir = Path(tempfile.mkdtemp(prefix=f"chaos-seed{args.seed}-"))
    (run_dir / "logs").mkdir()
    members: Members | None = None
    disks: Disks | None = None
    passed = False
    try:
        try:
            disks = Disks(run_dir / "disks", ids)
        except DiskUnavailable as e:
            print(f"chaos: cannot run here: {e}", flush=True)
            return EXIT_UNAVAILABLE, None
        config = run_dir / "cluster.yaml"
        write_config(config, ids, net.addresses, "stream" if args.workload == "log" else "kv")
        members = Members(net, ids, run_dir, config, disks)
        result = _run(args, schedule, net, members, run_dir)
        passed = result.passed
        text = report.render(result)
        print(text.splitlines()[0] if passed and getattr(args, "quiet", False) else text, flush=True)
        return (0 if passed else 1), result
    except KeyboardInterrupt as e:
        print(f"chaos: interrupted ({str(e) or 'SIGINT'}); the run's files are in {run_dir}", flush=True)
        return EXIT_INTERRUPTED, None
    except Exception:
        print(f"chaos: the harness failed (traceback below); the run's files are in {run_dir}", flush=True)
        raise
    finally:
        if members is not None:
            members.stop_all()
        if disks is not None:
            disks.close(keep_in=None if passed and not args.keep else run_dir / "data")
        net.close()
        if passed and not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    schedule: list[faults.Planned],
    net: Network,
    members: Members,
    run_dir: Path,
) -> report.Result:
    result = report.Result(
        seed=args.seed,
        members=args.members,
        workload=args.workload,
        duration=args.duration,
        kinds=args.fault_kinds,
        run_dir=run_dir,
        member_logs=[members.log_path(i) for i in members.ids],
        network=f"hub {net.hub}, nft table bridge {net.table}, members {', '.join(net.addresses)}",
        keep=args.keep,
    )
    for i in members.ids:
        members.start(i)
    leader = wait_leader(members, time.monotonic() + START_DEADLINE)
    if leader is None:
        members.check_alive()
        result.problems.append(f"no leader within {START_DEADLINE:.0f}s of starting the members")
        result.problems.extend(members.crashed)
        return result
    progress(f"seed {args.seed}: {len(schedule)} faults planned over {args.duration:g}s; {leader} leads")
    _drive(args, schedule, members, run_dir / "history.jsonl", result)
    _judge(args, members, run_dir, result)
    return result


def _drive(
    args: argparse.Namespace,
    schedule: list[faults.Planned],
    members: Members,
    history_path: Path,
    result: report.Result,
) -> None:
    """The clients under the schedule, then heal and ask for one more acknowledgement."""
    result.history = history_path
    with open(history_path, "w", encoding="utf-8") as hist:
        recorder = Recorder(hist)
        kind = LogWorkload if args.workload == "log" else KvWorkload
        workload = kind(members.client_addrs, args.clients, recorder, seed=args.seed, timeout=CLIENT_TIMEOUT)
        injector = faults.Injector(members)
        t0 = result.t0 = time.monotonic()
        workload.start()
        try:
            for p in schedule:
                _sleep_until(t0 + p.at)
                applied = injector.apply(p)
                result.applied.append(applied)
                progress(
                    f"+{applied.started - t0:.1f}s {p.kind}: {applied.detail} {' '.join(applied.errors)}"
                )
                _sleep_until(applied.started + p.duration)
                injector.heal(applied)
                later = [q.at for q in schedule if q.at > p.at]
                applied.watched = t0 + (later[0] if later else args.duration)
                applied.rejoined = wait_rejoined(members, applied.watched)
            _sleep_until(t0 + args.duration)
            progress(f"+{time.monotonic() - t0:.1f}s done: stopping the clients, healing, settling")
        finally:
            stuck = workload.stop(CLIENT_TIMEOUT + 2.0)
            injector.heal_all()
        result.problems.extend(f"client {n} did not finish its call" for n in stuck)
        members.check_alive()
        why = final_ops(members, recorder, args.workload, time.monotonic() + RECOVER_DEADLINE)
    if why is not None:
        result.problems.append(why)
    result.ops = load_ops(history_path)


def _judge(args: argparse.Namespace, members: Members, run_dir: Path, result: report.Result) -> None:
    """Settle, fetch every member's committed log, and run the checks."""
    acked = [op.index for op in result.ops if op.index is not None and op.kind in ("ok", "fail")]
    target = max(acked, default=0)
    settled = settle(members, target, time.monotonic() + SETTLE_DEADLINE)
    if not settled.ok:
        result.problems.append(settled.why)
    members.check_alive()
    result.problems.extend(members.crashed)
    # Every member's log up to the lowest commit index among them: past the last acknowledged
    # index, so a late copy of an unacknowledged record is compared too.
    upto = min((int(s["commit_index"]) for s in settled.statuses if "commit_index" in s), default=target)
    logs: dict[str, list[dict[str, Any]]] = {}
    for id, addr in zip(members.ids, members.client_addrs, strict=True):
        try:
            entries, first = fetch_log(addr, max(upto, target))
        except CruiseError as e:
            result.problems.append(f"could not read {id}'s committed log: {e}")
            continue
        logs[id] = entries
        path = run_dir / "logs" / f"{id}.entries.jsonl"
        path.write_text("".join(json.dumps(e, default=repr) + "\n" for e in entries))
        result.entry_logs.append(path)
        if first > 1:
            result.notes.append(f"{id} holds its log from index {first} (installed a snapshot)")
    result.violations = run_checks(args.workload, result.ops, logs)


def progress(msg: str) -> None:
    """One line on stderr as the run goes (stdout is for the report)."""
    print(f"chaos: {msg.rstrip()}", file=sys.stderr, flush=True)


def _sleep_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))
