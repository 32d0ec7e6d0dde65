"""A member whose disk fills up stands still, refuses writes with a clear error, corrupts and
loses nothing, and goes on when space returns (real processes, data directories on tmpfs)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from cruise import Client

from .cluster import ROOT, Cluster, request

sys.path.insert(0, str(ROOT / "tools"))

from chaoslib.disk import Disks, DiskUnavailable  # noqa: E402  (the chaos harness's tmpfs disks)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def tmpfs_cluster(tmp_path):
    """Three members, each with its data directory on a 4 MiB tmpfs of its own (root only)."""
    # Small segments: a new one is made (and refused) soon after the disk fills.
    c = Cluster(tmp_path, wal_segment_bytes=64 << 10, request_timeout_ms=2000, data_dir="disks/{id}/data")
    try:
        c.disks = Disks(tmp_path / "disks", c.ids, size=4 << 20)
    except DiskUnavailable as e:
        pytest.skip(str(e))
    try:
        c.start()
        yield c
    finally:
        c.close()
        c.disks.close()


def _wait(what, timeout: float = 20.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout}s: {what.__doc__ or what}"
        time.sleep(step)


def test_a_full_disk_stops_the_leader_and_it_goes_on_when_space_returns(tmpfs_cluster):
    c = tmpfs_cluster
    leader = c.wait_leader()
    value = "v" * 2000  # a few dozen records fill what the active segment has reserved
    acked: dict[str, int] = {}
    with Client([c.client_addr(i) for i in c.ids], timeout=15) as client:
        for i in range(5):
            acked[f"before-{i}"] = client.record(f"before-{i}").index
        c.disks.fill(leader)

        def leader_stands_still():
            st = c.status(leader)
            if st is None:  # fail now, with what it said, rather than at the test's timeout
                code = c.procs[leader].poll()
                assert code is None, f"the leader exited ({code}):\n{c.log_text(leader)[-3000:]}"
            return st is not None and st.get("disk_full")

        deadline = time.monotonic() + 60
        n = 0
        while not leader_stands_still():
            assert n < 2000 and time.monotonic() < deadline, "the leader never met its full disk"
            name = f"filling-{n}"
            acked[name] = client.record(name + value).index
            n += 1

        # The member says so everywhere an operator looks.
        st = c.status(leader)
        assert "No space left on device" in st["disk_full"], st
        health = request(c.client_addr(leader), {"op": "health"}, 2.0)
        assert health and health["error"] == "unavailable" and "disk is full" in health["message"], health
        direct = request(c.client_addr(leader), {"op": "record", "value": "direct"}, 2.0)
        assert direct and direct["error"] == "unavailable" and "disk is full" in direct["message"], direct
        log_lines = [json.loads(line) for line in c.log_text(leader).splitlines() if line.startswith("{")]
        assert any(line.get("event") == "disk_full" for line in log_lines)

        # The others elect a leader among themselves and go on taking records.
        others = [i for i in c.ids if i != leader]
        new_leader = c.wait_leader(among=others)
        assert new_leader != leader
        for i in range(20):
            acked[f"during-{i}"] = client.record(f"during-{i}").index

        # Space returns: the member goes on where its write stopped and catches up.
        c.disks.free(leader)
        last = client.record("after").index
        acked["after"] = last
    c.wait_applied(last, timeout=30)
    assert _wait(lambda: c.status(leader).get("disk_full") is None)
    assert any(
        json.loads(x).get("event") == "disk_writable" for x in c.log_text(leader).splitlines() if x[:1] == "{"
    )

    logs = {i: c.entries(i) for i in c.ids}
    assert logs[leader] == logs[others[0]] == logs[others[1]]
    _check_acked_once(logs[leader], acked, value)

    # Nothing on its disk is damaged: a restart (after a SIGKILL) reads it all back.
    c.kill(leader)
    c.start(leader)
    c.wait_applied(last, timeout=30)
    assert c.entries(leader) == logs[others[0]][: len(c.entries(leader))]
    assert len(c.entries(leader)) >= len(logs[others[0]])


def _check_acked_once(entries: list[dict], acked: dict[str, int], value: str) -> None:
    by_value: dict[str, list[int]] = {}
    for e in entries:
        v = e.get("value")
        if isinstance(v, str):
            by_value.setdefault(v.removesuffix(value), []).append(e["index"])
    for name, index in acked.items():
        assert by_value.get(name) == [index], (name, index, by_value.get(name))
