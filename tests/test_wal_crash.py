"""SIGKILL a process writing a DiskStorage at random moments; whatever it reported
durable must be there, intact and contiguous, every time (contract section 7)."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from cruise.wal import DiskStorage

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import wal_writer  # noqa: E402

pytestmark = pytest.mark.timeout(60)

WRITER = os.path.join(os.path.dirname(__file__), "helpers", "wal_writer.py")
ROUNDS = 24
BUDGET_S = 16.0  # stop starting rounds after this long (the test asserts at least 20 ran)


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def read_until_ready(p: subprocess.Popen, deadline: float) -> bytes:
    """Read the writer's stdout (raw fd, so nothing stays in a Python buffer) until its
    "R" line: recovery is done and writes begin. Returns the bytes read."""
    fd = p.stdout.fileno()
    got = b""
    while b"\n" not in got:
        left = deadline - time.monotonic()
        assert left > 0, "writer did not start in time"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"writer died: {p.communicate(timeout=10)[1].decode()[-2000:]}"
            got += chunk
    assert got.startswith(b"R "), got
    return got


def check_log(path: str, last_report: tuple[int, int, int] | None) -> tuple[int, int]:
    """Reopen ``path`` and check everything the writer promised; return (first, last)."""
    with DiskStorage.open(path, segment_bytes=wal_writer.SEGMENT_BYTES, preallocate=True) as st:
        first, last = st.first_index(), st.last_index()
        ents = st.entries(first, last + 1)
        assert [e.index for e in ents] == list(range(first, last + 1)), "log is not contiguous"
        prev = st.term(first - 1)
        for e in ents:
            assert e.value == wal_writer.value(e.index, e.term), e
            assert e.origin == ("w", e.index)
            assert e.term >= prev, f"term goes down at {e.index}: truncated entries came back"
            assert st.term(e.index) == e.term
            prev = e.term
        if last_report is not None:
            durable_last, durable_term, hs_term = last_report
            assert last >= durable_last, f"index {durable_last} was reported durable; log ends at {last}"
            last_term = st.term(last)
            assert last_term >= durable_term
            if last_term == durable_term:  # nothing rewrote it since: the very same entry
                assert st.term(durable_last) == durable_term
            assert st.initial_state().term >= hs_term
        snap = st.load_snapshot()
        if snap is not None:
            idx, term, data, meta = snap
            assert data == wal_writer.snapshot_data(idx, term)
            assert meta == {"by": "wal_writer"}
            # The log starts at or behind the snapshot (entries retained behind it), and
            # holds the snapshot's last entry.
            assert first - 1 <= idx <= last
            assert st.term(idx) == term
        return first, last


def test_sigkill_at_random_moments_loses_nothing_reported_durable(tmp_path, procs):
    rng = random.Random(20240607)
    path = str(tmp_path / "data")
    t0 = time.monotonic()
    last_report = None
    rounds = rounds_with_writes = 0
    max_last = 0
    while rounds < ROUNDS and time.monotonic() - t0 < BUDGET_S:
        p = subprocess.Popen(
            [sys.executable, WRITER, path, str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(p)
        head = b""
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.0, 0.3))  # may land in startup or recovery
        else:
            head = read_until_ready(p, deadline=time.monotonic() + 10)
            time.sleep(rng.uniform(0.0, 0.25))
        exited = p.poll()
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=10)
        assert exited is None, f"writer exited by itself ({exited}): {err.decode()[-2000:]}"
        reports = [
            tuple(int(x) for x in line.split()[1:])
            for line in (head + out).decode().split("\n")[:-1]  # the last piece may be a torn line
            if line.startswith("D ")
        ]
        if reports:
            last_report = reports[-1]
            rounds_with_writes += 1
        first, last = check_log(path, last_report)
        max_last = max(max_last, last)
        rounds += 1
    assert rounds >= 20, f"only {rounds} rounds in {BUDGET_S}s"
    assert rounds_with_writes >= rounds // 2, f"only {rounds_with_writes} of {rounds} rounds wrote"
    assert max_last > 1000
