"""Contract section 7 from the outside: a torn tail is cut on start (and logged), damage
before the tail stops the member with a clear one-line error naming the file."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .cluster import request

pytestmark = pytest.mark.timeout(120)


def _segments(cluster, id):
    return sorted((Path(cluster.tmp) / "data" / id).glob("*.wal"))


def _logical_end(seg):
    """Where the records end: segments are preallocated, so the file goes on in zeros."""
    return len(seg.read_bytes().rstrip(b"\x00"))


def _fill(cluster, n=40):
    lead = cluster.wait_leader()
    for k in range(n):
        r = request(cluster.client_addr(lead), {"op": "record", "value": f"v{k}"}, 5.0)
        assert r and r["ok"], r
    return r["index"]


def test_torn_tail_is_cut_and_the_member_rejoins(cluster):
    last = _fill(cluster)
    cluster.wait_applied(last)
    cluster.kill("n3", signal.SIGKILL)
    seg = _segments(cluster, "n3")[-1]
    end = _logical_end(seg)
    with open(seg, "r+b") as f:  # a write torn by the crash, right after the last record
        f.seek(end)
        f.write(b"\x00\x00\x01\x00half a record")
    cluster.start("n3")
    cluster.wait_applied(last, timeout=20)
    assert "wal_tail_truncated" in cluster.log_text("n3")


def test_damage_before_the_tail_stops_the_member_with_a_clear_error(cluster):
    last = _fill(cluster)
    cluster.wait_applied(last)
    cluster.kill("n3", signal.SIGTERM)
    seg = _segments(cluster, "n3")[-1]
    data = bytearray(seg.read_bytes())
    data[_logical_end(seg) // 3] ^= 0xFF  # flip a byte in an early record; valid records follow
    seg.write_bytes(bytes(data))
    p = subprocess.run(
        [sys.executable, "-m", "cruise", "run", str(cluster.config_path), "--id", "n3"],
        capture_output=True,
        text=True,
        timeout=30,
        env=cluster.env(),
    )
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert "CorruptLog" in p.stderr and seg.name in p.stderr and "offset" in p.stderr
