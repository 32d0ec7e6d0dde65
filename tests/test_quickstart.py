"""The README's Quickstart, run as written: its shell block's commands, verbatim, through bash.

The cluster is a copy of configs/local.yaml in a temp folder, with its addresses moved to free
ports. The commands run there, with CRUISE_CONFIG naming that copy and a `cruise` on PATH that
is this checkout's, so the README's commands need no flags. Each is checked for its exit code
and the parts of its output the README's comment promises.

Not verbatim:
- `kill -9 <pid of the leader>`: the placeholder is the leader's pid, read from `cruise up`'s
  output as the README says to.
- `cruise up` and `cruise tail` run until Ctrl-C, so they run in the background (behind bash's
  `exec`, so that our SIGINT reaches them as Ctrl-C would) and are read line by line.
- The README shows `{"index": 2, "term": 1}` for the first record. Its index depends on what
  the log holds before it (the leader's no-op, and on a new cluster its first configuration
  entry too), its term on how the election went: the reply's shape and the order of the
  indexes are checked, not those figures.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from brokerless.testing import free_tcp_addresses

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "<pid of the leader>"

# The quickstart's commands in order, comments dropped. The test below runs exactly these and
# knows what each should print: a change to the README's block must change this list too.
COMMANDS = [
    "cruise up",
    """cruise record '{"hello": "world"}'""",
    "cruise record plain-text",
    "cruise tail --since 1",
    "cruise status",
    f"kill -9 {PLACEHOLDER}",
    "cruise record after-the-kill",
    "cruise status",
]


def quickstart_commands() -> list[str]:
    """The commands of the first ```sh block under "## Quickstart", comments dropped."""
    section = (ROOT / "README.md").read_text().split("\n## Quickstart", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "no ```sh block under ## Quickstart"
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.group(1).splitlines() if line.strip()]


class Lines:
    """The lines of a pipe, read by a thread, so every read can have a deadline."""

    def __init__(self, stream) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []

        def pump() -> None:
            with stream:
                for line in stream:
                    self.q.put(line.rstrip("\n"))
            self.q.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, pred, timeout: float = 20) -> str:
        """Read until a line satisfies ``pred``; return it. Fails at the deadline or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no such line within {timeout}s; got {self.seen}"
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"ended without such a line; got {self.seen}"
            self.seen.append(line)
            if pred(line):
                return line


@pytest.fixture
def here(tmp_path):
    """A folder holding configs/local.yaml (free ports) and bin/cruise; the environment to use."""
    text = (ROOT / "configs" / "local.yaml").read_text()
    pattern = r"tcp://127\.0\.0\.1:\d+"
    count = len(re.findall(pattern, text))
    assert count == 9, "the quickstart config should have 3 members x 3 addresses"
    free = iter(free_tcp_addresses(count))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "local.yaml").write_text(re.sub(pattern, lambda _: next(free), text))
    (tmp_path / "bin").mkdir()
    shim = tmp_path / "bin" / "cruise"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cruise "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CRUISE_CONFIG", "CRUISE_ENDPOINTS")}
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CRUISE_CONFIG"] = "configs/local.yaml"  # as the README's default, in this folder
    return tmp_path, env


def test_the_quickstart_block_is_what_this_test_runs():
    assert quickstart_commands() == COMMANDS


def test_quickstart_commands_as_written(here):
    cwd, env = here
    started: list[subprocess.Popen[str]] = []
    member_pids: dict[str, int] = {}

    def background(cmd: str) -> tuple[subprocess.Popen[str], Lines, Lines]:
        p = subprocess.Popen(
            ["bash", "-c", f"exec {cmd}"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A test run started in the background (`cmd &` in a script) inherits SIGINT
            # ignored, and so would the command: Ctrl-C is what these commands are stopped with.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        started.append(p)
        return p, Lines(p.stdout), Lines(p.stderr)

    def run(cmd: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    def recorded(cmd: str) -> int:
        r = run(cmd)
        assert r.returncode == 0, (cmd, r.stderr)
        reply = json.loads(r.stdout)
        assert set(reply) == {"index", "term"} and reply["term"] >= 1, r.stdout
        return int(reply["index"])

    def status_rows(cmd: str) -> dict[str, str]:
        r = run(cmd)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        header, *rows = r.stdout.splitlines()
        assert header.split()[:3] == ["ID", "ADDRESS", "ROLE"], r.stdout
        return {row.split()[0]: row for row in rows}

    commands = iter(COMMANDS)
    try:
        # terminal 1: three members; prints who leads and their pids
        up, up_out, up_err = background(next(commands))
        line = up_out.until(lambda s: s.startswith("cluster up: "), timeout=30)
        leader = line.split()[2]
        words = up_out.until(lambda s: "pid" in s).split()  # "n1 pid P  n2 pid P  n3 pid P"
        member_pids.update({id: int(pid) for id, pid in zip(words[0::3], words[2::3], strict=True)})
        assert sorted(member_pids) == ["n1", "n2", "n3"] and leader in member_pids

        # terminal 2: {"index": I, "term": T}, then the string, at the next index
        first = recorded(next(commands))
        assert first >= 2  # entries before it: at least the leader's no-op
        second = recorded(next(commands))
        assert second > first

        # the committed log as JSON lines, from index 1, then live; Ctrl-C ends it
        tail, tail_out, _ = background(next(commands))
        entries = []
        while len(entries) < second:
            entries.append(json.loads(tail_out.until(lambda s: True)))
        assert [e["index"] for e in entries] == list(range(1, second + 1))
        by_index = {e["index"]: e for e in entries}
        assert by_index[first]["kind"] == "record" and by_index[first]["value"] == {"hello": "world"}
        assert by_index[second]["value"] == "plain-text"
        tail.send_signal(signal.SIGINT)
        assert tail.wait(30) == 0

        # one row per member: role, term, leader, indexes
        rows = status_rows(next(commands))
        assert sorted(rows) == ["n1", "n2", "n3"]
        assert sum(" leader " in row for row in rows.values()) == 1, rows

        # the leader now (it may have changed since `up` printed it: `up` prints each change)
        leader = next(id for id, row in rows.items() if " leader " in row)
        kill = next(commands).replace(PLACEHOLDER, str(member_pids[leader]))
        assert run(kill).returncode == 0
        up_err.until(lambda s: s.startswith(f"member {leader} exited unexpectedly"), timeout=10)

        # a new leader is elected within a second; this still commits
        assert recorded(next(commands)) > second

        # the dead member shows as unreachable
        rows = status_rows(next(commands))
        assert "unreachable" in rows[leader], rows
        assert sum(" leader " in row for id, row in rows.items() if id != leader) == 1, rows
        assert next(commands, None) is None

        # Ctrl-C in terminal 1 stops the cluster
        up.send_signal(signal.SIGINT)
        assert up.wait(20) == 0
        up_out.until(lambda s: s == "stopping 2 members")
    finally:
        for p in started:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        # Members outlive a `cruise up` that was SIGKILLed: end any left, if they are ours.
        for pid in member_pids.values():
            try:
                if str(cwd).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
