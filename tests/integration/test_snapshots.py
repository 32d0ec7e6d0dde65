"""Snapshots and compaction in real member processes: a member that was down catches up by
InstallSnapshot, a whole cluster restarts from snapshot plus log, at-most-once survives a
restart from a snapshot, a user's state machine is rebuilt from its snapshot, disk use stays
bounded, readers of compacted history are told and go on, and a damaged snapshot stops the
member with one line naming the file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from cruise import Client, Subscriber

from .cluster import request

pytestmark = pytest.mark.timeout(180)

EVERY = 50  # snapshot_every
RETAIN = 10  # retain_entries
SEGMENT = 64 << 10  # wal_segment_bytes: small, so compaction has whole segments to delete


def snapshotting(make_cluster, **kw):
    c = make_cluster(
        state_machine=kw.pop("state_machine", "kv"),
        snapshot_every=EVERY,
        retain_entries=RETAIN,
        wal_segment_bytes=SEGMENT,
        **kw,
    )
    c.start()
    c.wait_leader()
    return c


def client(c, *ids: str, timeout: float = 15.0) -> Client:
    return Client([c.client_addr(i) for i in ids or c.ids], timeout=timeout)


def put_many(c, n: int, start: int = 0, ids: tuple[str, ...] = ()) -> None:
    with client(c, *ids) as cl:
        for k in range(start, start + n):
            cl.record({"put": f"k{k % 37}", "value": k})


def kv_state(c, id: str) -> dict:
    with client(c, id) as cl:
        return {key: cl.query({"get": key}) for key in cl.query({"keys": ""})}


def wait_status(c, id: str, pred, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = c.status(id, 0.5)
        if st and pred(st):
            return st
        time.sleep(0.05)
    raise AssertionError(f"{id} never got there: {st}\n{c._logs_tail()}")


def events(c, id: str, name: str) -> list[dict]:
    out = []
    for line in c.log_text(id).splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("event") == name:
            out.append(d)
    return out


def test_a_member_that_was_down_rejoins_by_snapshot(make_cluster):
    c = snapshotting(make_cluster)
    lead = c.wait_leader()
    down = next(i for i in c.ids if i != lead)
    c.kill(down, signal.SIGKILL)
    put_many(c, 5 * EVERY, ids=tuple(i for i in c.ids if i != down))
    st = c.status(lead)
    assert st["snapshot_index"] >= 4 * EVERY and st["first_index"] > 1, st
    c.start(down)
    wait_status(c, down, lambda s: s["applied_index"] >= st["commit_index"])
    installed = events(c, down, "snapshot_installed")
    assert installed, c.log_text(down)[-3000:]
    assert kv_state(c, down) == kv_state(c, lead)
    snap = installed[-1]["index"]
    mine = c.entries(down, snap + 1)
    assert mine and mine == c.entries(lead, snap + 1)
    # And it goes on replicating normally after the snapshot.
    put_many(c, 5, start=10_000)
    wait_status(c, down, lambda s: s["applied_index"] >= c.status(lead)["commit_index"])
    assert kv_state(c, down) == kv_state(c, lead)


def test_a_full_restart_comes_back_from_snapshot_plus_log(make_cluster):
    c = snapshotting(make_cluster)
    put_many(c, 3 * EVERY + 7)
    before = {i: kv_state(c, i) for i in c.ids}
    assert len({json.dumps(s, sort_keys=True) for s in before.values()}) == 1
    for i in c.ids:
        assert c.kill(i, signal.SIGTERM) == 0
    c.start()
    c.wait_leader()
    for i in c.ids:
        st = wait_status(c, i, lambda s: s["snapshot_index"] > 0)
        assert st["first_index"] <= st["snapshot_index"] + 1
        assert kv_state(c, i) == before[i]


def test_a_retried_seq_is_applied_once_after_a_restart_from_a_snapshot(make_cluster):
    c = snapshotting(make_cluster, state_machine="tests.machines.sample:Tally")
    lead = c.wait_leader()
    first = request(c.client_addr(lead), {"op": "record", "value": 5, "client": "retry", "seq": 1}, 10)
    assert first and first["ok"], first
    with client(c) as cl:
        for _ in range(2 * EVERY):  # past a snapshot, and the entry itself compacted away
            cl.record(0)
    for i in c.ids:
        assert c.kill(i, signal.SIGTERM) == 0
    c.start()
    lead = c.wait_leader()
    wait_status(c, lead, lambda s: s["snapshot_index"] > first["index"] + RETAIN)
    again = request(c.client_addr(lead), {"op": "record", "value": 5, "client": "retry", "seq": 1}, 10)
    assert again == first  # the first attempt's index, term and result; not applied again
    with client(c) as cl:
        assert cl.query("total") == 5


def test_a_custom_machine_is_rebuilt_from_its_snapshot(make_cluster):
    c = snapshotting(make_cluster, state_machine="tests.machines.sample:Tally")
    with client(c) as cl:
        for n in range(1, 2 * EVERY + 1):
            cl.record(n)
        want = (cl.query("total"), cl.query("count"))
    assert want == (sum(range(1, 2 * EVERY + 1)), 2 * EVERY)
    for i in c.ids:
        assert c.kill(i, signal.SIGTERM) == 0
    c.start()
    c.wait_leader()
    for i in c.ids:
        st = wait_status(c, i, lambda s: s["snapshot_index"] >= EVERY)
        # The log no longer holds the first records: the total can only come from the snapshot.
        assert st["first_index"] > 1, st
        with client(c, i) as cl:
            assert (cl.query("total"), cl.query("count")) == want


def test_disk_use_stays_bounded(make_cluster):
    c = snapshotting(make_cluster)
    data = c.tmp / "data"

    def used(i: str) -> int:
        return sum(f.stat().st_size for f in (data / i).iterdir() if f.is_file())

    value = "x" * 1000  # 10 x snapshot_every of these is 8 segments' worth per member
    with client(c) as cl:
        for k in range(10 * EVERY):
            cl.record({"put": f"k{k % 5}", "value": value})
    for i in c.ids:
        wait_status(c, i, lambda s: s["snapshot_index"] >= 9 * EVERY)
    print("data dirs:", {i: used(i) for i in c.ids})
    for i in c.ids:
        # The log is compacted behind each snapshot and its sealed segments deleted: what
        # is left is the active segment, at most two sealed ones, and one small snapshot.
        segs = list((data / i).glob("*.wal"))
        assert len(segs) <= 3, segs
        assert len(list((data / i).glob("snapshot-*.snap"))) == 1
        assert used(i) <= 3 * SEGMENT + 32 * 1024


def test_readers_of_compacted_history_are_told_and_go_on(make_cluster):
    c = snapshotting(make_cluster)
    put_many(c, 2 * EVERY)
    lead = c.wait_leader()
    st = c.status(lead)
    r = request(c.client_addr(lead), {"op": "entries", "from": 1, "limit": 10})
    assert r["ok"] is False and r["error"] == "compacted"
    assert r["snapshot_index"] == st["first_index"] - 1
    seen = []
    with Subscriber([c.client_addr(lead)], since=1, on_compacted=lambda a, b: seen.append((a, b))) as sub:
        e = sub.next(timeout=10)
    assert seen == [(1, st["first_index"] - 1)]
    assert e["index"] == st["first_index"]
    # cruise tail says so on stderr, and prints from there on.
    p = subprocess.Popen(
        [sys.executable, "-m", "cruise", "tail", "--since", "1", "--from", c.client_addr(lead)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=c.env(),
        cwd=str(c.tmp),
    )
    try:
        line = p.stdout.readline()
    finally:
        p.kill()
        _, err = p.communicate(timeout=10)
    assert json.loads(line)["index"] == st["first_index"]
    assert f"entries 1..{st['first_index'] - 1} are compacted into a snapshot" in err


def test_a_damaged_snapshot_stops_the_member_with_one_line(make_cluster):
    c = snapshotting(make_cluster)
    put_many(c, EVERY + 5)
    victim = c.ids[0]
    wait_status(c, victim, lambda s: s["snapshot_index"] > 0)
    assert c.kill(victim, signal.SIGTERM) == 0
    snap = next((c.tmp / "data" / victim).glob("snapshot-*.snap"))
    raw = bytearray(snap.read_bytes())
    raw[-10] ^= 0xFF  # inside the state, past every header
    snap.write_bytes(bytes(raw))
    p = subprocess.run(
        [sys.executable, "-m", "cruise", "run", str(c.config_path), "--id", victim],
        capture_output=True,
        text=True,
        timeout=60,
        env=c.env(),
        cwd=str(c.tmp),
    )
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr
    assert "snapshot data fails its checksum" in lines[0] and str(snap) in lines[0], lines[0]
    assert "Traceback" not in p.stderr


def test_the_segment_size_is_configurable(make_cluster):
    c = snapshotting(make_cluster)
    for i in c.ids:
        (seg,) = (c.tmp / "data" / i).glob("*.wal")
        assert seg.stat().st_size <= SEGMENT
