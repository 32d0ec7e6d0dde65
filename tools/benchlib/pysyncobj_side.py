"""PySyncObj under the same load: 3 member processes on loopback, load run inside the leader.

PySyncObj (bakwc/PySyncObj, the ``bench`` extra) is a library: an application subclasses
``SyncObj`` and calls its ``@replicated`` methods in-process; there is no client protocol.
So, as its users do, the load runs INSIDE the leader process:

* *embedded*: ``--embedded-inflight`` calls of the replicated ``append(value)`` in flight,
  each with ``callback=``; the callback (on PySyncObj's tick thread) records the latency and
  makes the next call until the window closes.
* *single*: one call at a time (``callback=`` + an Event), on two clusters: one with the
  defaults (``appendEntriesUseBatch=True``: new entries wait for the next 100 ms
  append-entries timer) and one with ``appendEntriesUseBatch=False`` (each call wakes the
  loop through a pipe and is sent at once), the fair single-writer figure.
* *external*: n/a (no client protocol).

Each member keeps its journal in a file (``journalFile``, an mmap the library never fsyncs,
so its figures are without fsync) and otherwise runs with the defaults. The bench talks to a
member process over its stdin/stdout, one JSON object per line: ``{"cmd": "status"}``,
``{"cmd": "embedded", ...}``, ``{"cmd": "single", ...}``, ``{"cmd": "quit"}``. A measurement
command carries ``start_at`` (monotonic time, one clock for every process), so the bench
reads the members' CPU (:class:`benchlib.procs.CpuWindow`) over the window the leader counts.

This file is both the bench-side :class:`PySyncObjCluster` and, run as
``python -m benchlib.pysyncobj_side``, the member program.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .procs import BenchError, CpuWindow, Processes, child_env, free_ports, progress, rss_mb, wait_for
from .stats import Window, sleep_until, summarize

REPLY_TIMEOUT = 5.0  # seconds one replicated call may take before it counts as lost


def available() -> str | None:
    """None when PySyncObj can be imported, else why not (for the skip message)."""
    try:
        import pysyncobj  # noqa: F401
    except ImportError as e:
        return f"not installed ({e}); pip install -e '.[bench]'"
    return None


def version() -> str | None:
    try:
        from pysyncobj.version import VERSION

        return str(VERSION)
    except ImportError:
        return None


class _Member:
    """One member process and its line-oriented control pipe."""

    def __init__(self, addr: str, proc: Any) -> None:
        self.addr = addr
        self.proc = proc
        self._buf = b""

    def ask(self, msg: dict, timeout: float) -> dict:
        """Send one command, read one JSON line back within ``timeout`` seconds."""
        if self.proc.poll() is not None:
            raise BenchError(f"pysyncobj member {self.addr} exited with {self.proc.returncode}")
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BenchError(f"pysyncobj member {self.addr} is gone") from None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"pysyncobj member {self.addr}: no answer to {msg['cmd']} within {timeout:g} s"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise BenchError(f"pysyncobj member {self.addr} closed its pipe ({msg['cmd']})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(f"pysyncobj member {self.addr}: {reply['error']}")
        return reply


class PySyncObjCluster:
    """Three PySyncObj member processes (``batch``: the library's ``appendEntriesUseBatch``)."""

    def __init__(self, root: Path, name: str, procs: Processes, tools_dir: Path, batch: bool) -> None:
        self.name = name
        self.dir = root / name
        (self.dir / "logs").mkdir(parents=True)
        self.procs = procs
        self.tools_dir = tools_dir
        self.batch = batch
        self.addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
        self.members: list[_Member] = []
        self.leader: _Member | None = None

    def start(self, timeout: float = 30.0) -> None:
        t0 = time.monotonic()
        progress(f"pysyncobj[{self.name}]: starting 3 members (appendEntriesUseBatch={self.batch})...")
        env = child_env(str(self.tools_dir))
        for i, addr in enumerate(self.addrs):
            partners = [a for a in self.addrs if a != addr]
            cmd = [
                sys.executable,
                "-m",
                "benchlib.pysyncobj_side",
                "--self",
                addr,
                "--partners",
                ",".join(partners),
                "--journal",
                str(self.dir / f"journal-{i + 1}"),
                "--batch" if self.batch else "--no-batch",
            ]
            p = self.procs.spawn(
                f"pysyncobj {addr}",
                cmd,
                self.dir / "logs" / f"m{i + 1}.log",
                env=env,
                cwd=str(self.dir),
                stdin=subprocess.PIPE,
                stdout_pipe=True,
            )
            self.members.append(_Member(addr, p))
        self.find_leader(timeout)
        progress(
            f"pysyncobj[{self.name}]: leader {self.leader.addr if self.leader else '?'} "
            f"({time.monotonic() - t0:.1f} s)"
        )

    def find_leader(self, timeout: float = 20.0) -> _Member:
        """Wait until every member names the same leader and that leader is ready."""

        def agreed() -> _Member | None:
            sts = [m.ask({"cmd": "status"}, 5.0) for m in self.members]
            leaders = {s["leader"] for s in sts}
            if len(leaders) != 1 or None in leaders:
                return None
            lead = next((m for m, s in zip(self.members, sts, strict=True) if m.addr in leaders), None)
            if lead is None:
                return None
            st = sts[self.members.index(lead)]
            return lead if st["is_leader"] and st["ready"] else None

        self.leader, _ = wait_for(f"pysyncobj[{self.name}]: an agreed leader", agreed, timeout, 0.1)
        return self.leader

    def run(self, cmd: str, timeout: float, warmup: float, seconds: float, **kw: Any) -> dict:
        """Run one measurement inside the current leader; the run's figures, with the CPU the
        three member processes spent in its window (the leader's includes the load it runs)."""
        leader = self.find_leader()
        start_at = time.monotonic() + 0.05  # the command reaches the member well before
        cpu = CpuWindow(self.pids(), start_at + warmup, start_at + warmup + seconds)
        fig = leader.ask(
            {"cmd": cmd, "start_at": start_at, "warmup": warmup, "seconds": seconds, **kw}, timeout
        )
        fig.update(cpu.result(fig["acknowledged"]))
        return fig

    def pids(self) -> dict[str, int]:
        return {m.addr: m.proc.pid for m in self.members}

    def rss(self) -> dict[str, float | None]:
        return {m.addr: rss_mb(m.proc.pid) for m in self.members}

    def stop(self) -> None:
        for m in self.members:
            if m.proc.poll() is None:
                try:
                    m.ask({"cmd": "quit"}, 3.0)
                except BenchError:
                    pass
            self.procs.stop(m.proc, deadline=3.0)


# -- the member program ------------------------------------------------------------------------


def _member_main(argv: list[str] | None = None) -> int:
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    ap = argparse.ArgumentParser(prog="pysyncobj_side")
    ap.add_argument("--self", dest="me", required=True)
    ap.add_argument("--partners", required=True)
    ap.add_argument("--journal", required=True)
    ap.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args(argv)

    class Counter(SyncObj):
        """The replicated object: counts appended values and their bytes."""

        def __init__(self) -> None:
            conf = SyncObjConf(journalFile=args.journal, appendEntriesUseBatch=args.batch)
            super().__init__(args.me, args.partners.split(","), conf)
            self.__count = 0
            self.__bytes = 0

        @replicated
        def append(self, value: bytes) -> int:
            self.__count += 1
            self.__bytes += len(value)
            return self.__count

    obj = Counter()
    out = sys.stdout

    def answer(d: dict) -> None:
        out.write(json.dumps(d) + "\n")
        out.flush()

    def embedded(inflight: int, value_bytes: int, start_at: float, warmup: float, seconds: float) -> dict:
        value = b"v" * value_bytes
        sleep_until(start_at)
        start = start_at + warmup
        end = start + seconds
        win = Window(start, end)
        lock = threading.Lock()
        outstanding = [inflight]
        drained = threading.Event()
        clock = time.monotonic

        def submit() -> None:
            t0 = clock()
            obj.append(value, callback=lambda res, err: done(err, t0))

        def done(err: int, t0: float) -> None:
            now = clock()
            with lock:
                if err == FAIL_REASON.SUCCESS:
                    win.success(now, now - t0)
                else:
                    win.failure(now, f"fail_reason_{err}")
                again = now < end
                if not again:
                    outstanding[0] -= 1
                    if outstanding[0] == 0:
                        drained.set()
            if again:
                submit()

        for _ in range(inflight):
            submit()
        sleep_until(end)
        if not drained.wait(REPLY_TIMEOUT + 10.0):
            raise RuntimeError(f"{outstanding[0]} calls unanswered after the window")
        return summarize([win.result()], seconds)

    def single(value_bytes: int, start_at: float, warmup: float, seconds: float) -> dict:
        value = b"v" * value_bytes
        sleep_until(start_at)
        start = start_at + warmup
        end = start + seconds
        win = Window(start, end)
        clock = time.monotonic
        result: list[int] = []
        ev = threading.Event()

        def cb(res: Any, err: int) -> None:
            result.append(err)
            ev.set()

        while clock() < end:
            ev.clear()
            result.clear()
            t0 = clock()
            obj.append(value, callback=cb)
            if not ev.wait(REPLY_TIMEOUT):
                win.failure(clock(), "timeout")
                continue
            now = clock()
            if result[0] == FAIL_REASON.SUCCESS:
                win.success(now, now - t0)
            else:
                win.failure(now, f"fail_reason_{result[0]}")
        return summarize([win.result()], seconds)

    for line in sys.stdin:
        try:
            msg = json.loads(line)
            cmd = msg.pop("cmd")
            if cmd == "status":
                leader = obj._getLeader()
                answer(
                    {
                        "leader": None if leader is None else leader.id,
                        "is_leader": obj._isLeader(),
                        "ready": obj.isReady(),
                        "commit_index": obj.raftCommitIndex,
                    }
                )
            elif cmd == "embedded":
                answer(embedded(**msg))
            elif cmd == "single":
                answer(single(**msg))
            elif cmd == "quit":
                answer({"bye": True})
                break
            else:
                answer({"error": f"unknown command {cmd!r}"})
        except Exception as e:  # answer, keep serving: the bench decides
            answer({"error": f"{type(e).__name__}: {e}"})
    obj.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(_member_main())
