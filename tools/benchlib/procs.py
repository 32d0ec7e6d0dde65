"""Processes the benchmark starts, and the guarantee that it stops every one of them.

Every process ``tools/bench`` starts goes through :class:`Processes`: member processes
(cruise, PySyncObj, etcd) are ``subprocess.Popen`` children in a session of their own, so a
Ctrl-C in the terminal reaches only the bench, which then stops them in order; load-generator
workers are ``multiprocessing`` children (see :mod:`benchlib.pool`) that ignore SIGINT.

Stopping is by PID only, never by name: SIGTERM, a bounded wait, then SIGKILL. It runs from
the bench's ``finally`` and, as a last resort, from an ``atexit`` hook (which SIGKILLs
whatever is still alive). A SIGTERM sent to the bench becomes ``SystemExit`` so the
``finally`` runs too.

Also here: small helpers every side uses (free loopback ports, resident memory from
``/proc/PID/status``, progress lines on stderr, waiting with a deadline), and
:class:`CpuWindow`, the members' CPU over a measurement window (utime + stime from
``/proc/PID/stat``, every thread of the process, read when the window opens and when it
closes).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

STOP_DEADLINE = 8.0  # seconds a member gets to exit after SIGTERM before SIGKILL


class BenchError(Exception):
    """A failure the bench reports in one line (a member that did not start, a missed deadline)."""


def progress(msg: str) -> None:
    """One progress line on stderr (stdout is for the table and the JSON line)."""
    print(msg, file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (for config files written before a bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports (kept bound together while choosing, so no two are the same)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (VmRSS from /proc/PID/status), None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """CPU ``pid`` has used so far, user + system, all its threads (``/proc/PID/stat`` fields
    14 and 15, in clock ticks: 10 ms resolution); None if unreadable (gone, not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()  # the name may hold spaces and ')'
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


class CpuWindow:
    """The CPU the processes ``pids`` spend inside the window ``[start, end)`` (monotonic s).

    A thread sleeps until ``start``, reads every process's utime + stime, sleeps until
    ``end`` and reads them again; :meth:`result` waits for it and turns the deltas into
    figures. The load processes count their completions over the same window (they get
    the same ``start_at + warmup`` and ``seconds``), so CPU per record = this CPU / the
    records acknowledged in the window (in a steady state, the records committed in it).
    """

    def __init__(self, pids: dict[str, int], start: float, end: float) -> None:
        self.pids = dict(pids)
        self.start = start
        self.end = end
        self._before: dict[str, float | None] = {}
        self._after: dict[str, float | None] = {}
        self._t0 = self._t1 = 0.0
        self._thread = threading.Thread(target=self._sample, name="bench-cpu-window", daemon=True)
        self._thread.start()

    @staticmethod
    def _sleep_until(t: float) -> None:
        while (left := t - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))

    def _sample(self) -> None:
        self._sleep_until(self.start)
        self._t0 = time.monotonic()
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._sleep_until(self.end)
        self._t1 = time.monotonic()
        self._after = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def result(self, records: int, timeout: float = 5.0) -> dict[str, Any]:
        """``cpu_us_per_rec`` (member CPU microseconds per record acknowledged in the window),
        ``member_cpu_cores`` (their CPU / the window: 1.0 = one core busy) and ``member_cpu_s``
        (each process's CPU seconds); None figures when a process could not be read."""
        self._thread.join(max(0.0, self.end - time.monotonic()) + timeout)
        per: dict[str, float | None] = {}
        for name in self.pids:
            a, b = self._after.get(name), self._before.get(name)
            per[name] = None if a is None or b is None else round(a - b, 3)
        known = [v for v in per.values() if v is not None]
        total = sum(known) if known and len(known) == len(per) else None
        span = self._t1 - self._t0
        return {
            "cpu_us_per_rec": total / records * 1e6 if total is not None and records else None,
            "member_cpu_cores": total / span if total is not None and span > 0 else None,
            "member_cpu_s": per,
        }


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.05
) -> tuple[T, float]:
    """Call ``check`` until it returns something other than None; ``(value, seconds taken)``.

    Raises:
        BenchError: nothing within ``timeout`` seconds (the message names ``what``).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        value = check()
        if value is not None:
            return value, time.monotonic() - t0
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


class Processes:
    """The registry of every child process; :meth:`stop_all` ends them all (idempotent)."""

    def __init__(self) -> None:
        self._popen: list[tuple[str, subprocess.Popen]] = []
        self._mp: list[tuple[str, Any]] = []  # multiprocessing.Process objects
        atexit.register(self._last_resort)

    def spawn(
        self,
        name: str,
        cmd: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen:
        """Start ``cmd`` in a session of its own, stderr (and stdout unless piped) to ``log_path``."""
        log = open(log_path, "ab")
        try:
            p = subprocess.Popen(
                cmd,
                stdin=stdin,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as e:
            raise BenchError(f"{name}: cannot start {cmd[0]}: {e}") from None
        finally:
            log.close()
        self._popen.append((name, p))
        return p

    def adopt(self, name: str, proc: Any) -> None:
        """Track a started ``multiprocessing.Process`` so it is ended with the rest."""
        self._mp.append((name, proc))

    def stop(self, proc: subprocess.Popen, deadline: float = STOP_DEADLINE) -> int | None:
        """SIGTERM one child, wait up to ``deadline`` s, then SIGKILL; its exit code."""
        if proc.poll() is None:
            try:
                proc.terminate()
                return proc.wait(deadline)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    return proc.wait(5)
                except subprocess.TimeoutExpired:
                    return None
            except OSError:
                pass
        return proc.poll()

    def stop_all(self) -> None:
        """SIGTERM every member child at once, wait for them with one deadline, SIGKILL the rest."""
        for _, proc in self._mp:
            try:
                if proc.is_alive():
                    proc.kill()
            except (OSError, ValueError, AssertionError):
                pass
        for _, proc in self._mp:
            try:
                proc.join(5)
            except (OSError, ValueError, AssertionError):
                pass
        self._mp.clear()
        live = [p for _, p in self._popen if p.poll() is None]
        for p in live:
            try:
                p.terminate()
            except OSError:
                pass
        deadline = time.monotonic() + STOP_DEADLINE
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        for p in live:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for _, p in self._popen:
            for f in (p.stdout, p.stdin):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
        self._popen.clear()

    def _last_resort(self) -> None:
        """atexit: SIGKILL anything still alive (stop_all normally ran already)."""
        for _, p in self._popen:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for _, proc in self._mp:
            try:
                if proc.is_alive():
                    proc.kill()
            except (OSError, ValueError, AssertionError):
                pass


def sigterm_to_exit() -> None:
    """Make SIGTERM raise SystemExit(143) so ``finally`` blocks tear everything down."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def child_env(*paths: str) -> dict[str, str]:
    """The environment for a child: ``paths`` in front of PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
