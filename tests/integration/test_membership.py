"""Membership changes in real member processes, while a writer records continuously and no
acknowledged record may be lost: grow 3 -> 5 with members that start with `join: true`,
remove the leader, shrink to 3, add and promote a learner, transfer leadership to each member
in turn; after each step every member's `status` agrees on the membership. Then a member
restarted from a YAML that lists an old membership takes the one in its log."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from cruise import Client, CruiseError

from .cluster import Cluster

pytestmark = pytest.mark.timeout(240)


class Writer(threading.Thread):
    """Records `w-N` values one after another through any member; keeps what was acknowledged."""

    def __init__(self, addrs: list[str]) -> None:
        super().__init__(daemon=True)
        self.addrs = addrs
        self.acked: dict[str, int] = {}
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        with Client(self.addrs, timeout=20) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    self.acked[f"w-{n}"] = c.record(f"w-{n}").index
                except CruiseError as e:
                    self.errors.append(f"w-{n}: {e}")
                time.sleep(0.005)


def start_joiner(c: Cluster, id: str, via: str) -> None:
    """Start member `id` with `join: true` and a YAML naming only itself and member `via`."""
    me = c.member(id)
    cfg = yaml.safe_load(c.config_path.read_text())
    cfg["members"] = [me, c.member(via)]
    cfg["join"] = True
    path = c.tmp / f"{id}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = open(c.tmp / "logs" / f"{id}.log", "ab")
    c.procs[id] = subprocess.Popen(
        [sys.executable, "-m", "cruise", "run", str(path), "--id", id, "--log-format", "json"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=c.env(),
        cwd=str(c.tmp),
    )
    log.close()


def membership(c: Cluster, among: list[str], timeout: float = 20.0) -> list[tuple[str, bool]]:
    """The membership every member in `among` reports, once they all report the same one."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        sts = [c.status(i, 0.5) for i in among]
        seen = [None if s is None else sorted((m["id"], m["voter"]) for m in s["members"]) for s in sts]
        if all(seen) and all(s == seen[0] for s in seen):
            return seen[0]
        time.sleep(0.05)
    raise AssertionError(f"members disagree on the membership: {seen}\n{c._logs_tail()}")


def test_grow_shrink_replace_the_leader_learners_and_transfers_lose_nothing(tmp_path):
    c = Cluster(tmp_path, n=6)
    initial = ["n1", "n2", "n3"]
    cfg = yaml.safe_load(c.config_path.read_text())
    cfg["members"] = [c.member(i) for i in initial]
    c.config_path.write_text(yaml.safe_dump(cfg))
    try:
        c.start(*initial)
        c.wait_leader(initial)
        writer = Writer([c.client_addr(i) for i in c.ids])
        writer.start()
        admin = Client([c.client_addr(i) for i in initial], timeout=30)

        # Grow 3 -> 5: each joiner starts empty, is added as a learner, catches up, and is
        # promoted by the leader; add_member answers once it votes.
        for new in ("n4", "n5"):
            start_joiner(c, new, via="n2")
            m = c.member(new)
            admin.add_member(new, m["raft"], m["client"], m["publish"])
        live = ["n1", "n2", "n3", "n4", "n5"]
        assert membership(c, live) == [(i, True) for i in live]

        # Remove the leader: it hands over once the change commits.
        lead = c.wait_leader(live)
        admin.remove_member(lead)
        live.remove(lead)
        assert membership(c, live) == [(i, True) for i in live]
        assert c.wait_leader(live) != lead
        c.kill(lead, signal.SIGTERM)

        # Shrink to 3.
        gone = live[0]
        admin.remove_member(gone)
        live.remove(gone)
        c.kill(gone, signal.SIGTERM)
        assert membership(c, live) == [(i, True) for i in live]

        # A learner, then its promotion.
        start_joiner(c, "n6", via=live[0])
        m = c.member("n6")
        admin.add_member("n6", m["raft"], m["client"], m["publish"], learner=True)
        assert membership(c, [*live, "n6"]) == sorted([(i, True) for i in live] + [("n6", False)])
        deadline = time.monotonic() + 30
        while True:
            try:
                admin.promote_member("n6")
                break
            except CruiseError as e:  # not caught up yet
                assert time.monotonic() < deadline and "caught up" in e.message, e
                time.sleep(0.2)
        live.append("n6")
        assert membership(c, live) == sorted((i, True) for i in live)

        # Leadership to each member in turn.
        for target in live:
            assert admin.transfer_leader(target) == target
            assert c.wait_leader(live) == target

        writer.stop.set()
        writer.join(30)
        assert not writer.is_alive()
        admin.close()
        assert len(writer.acked) > 20, writer.errors
        # Nothing acknowledged was lost: every acknowledged record is in the log at its index.
        log = {e["index"]: e for e in c.entries(live[0])}
        for value, index in writer.acked.items():
            assert log[index]["value"] == value, (value, index, log.get(index))
    finally:
        c.close()


def test_a_restarted_member_takes_the_membership_from_its_log_not_its_yaml(tmp_path):
    c = Cluster(tmp_path, n=4)
    cfg = yaml.safe_load(c.config_path.read_text())
    old_yaml = dict(cfg, members=[c.member(i) for i in ("n1", "n2", "n3")])
    c.config_path.write_text(yaml.safe_dump(old_yaml))
    try:
        c.start("n1", "n2", "n3")
        c.wait_leader(["n1", "n2", "n3"])
        start_joiner(c, "n4", via="n1")
        m = c.member("n4")
        with Client([c.client_addr(i) for i in ("n1", "n2", "n3")], timeout=30) as admin:
            admin.add_member("n4", m["raft"], m["client"], m["publish"])
        want = [(i, True) for i in ("n1", "n2", "n3", "n4")]
        assert membership(c, ["n1", "n2", "n3", "n4"]) == want
        # n2 restarts from the YAML that still lists three members.
        assert c.kill("n2", signal.SIGTERM) == 0
        c.start("n2")
        assert membership(c, ["n1", "n2", "n3", "n4"]) == want
    finally:
        c.close()
