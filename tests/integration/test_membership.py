"""Membership changes in real member processes, while a writer records continuously and no
acknowledged record may be lost: grow 3 -> 5 with members that start with `join: true`,
remove the leader, shrink to 3, add and promote a learner and remove an old member for it (a
replacement), transfer leadership to each member in turn; after each step every member's
`status` agrees on the membership. Then a member restarted from a YAML that lists an old
membership takes the one in its log, and a member that lost its data directory counts toward
no quorum until it is removed and added again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from cruise import Client, CruiseError

from .cluster import Cluster, request

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

        # Replace: n6 was added (and promoted) above; now the old member it replaces goes.
        old = next(i for i in live if i != "n6" and i != c.wait_leader(live))
        admin.remove_member(old)
        live.remove(old)
        c.kill(old, signal.SIGTERM)
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


def wait_for(what: str, cond, c: Cluster, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{c._logs_tail()}")


def test_a_follower_that_lost_its_data_is_kept_out_of_quorums_until_readded(tmp_path):
    c = Cluster(tmp_path, n=3)
    ids = ["n1", "n2", "n3"]
    try:
        c.start(*ids)
        lead = c.wait_leader(ids)
        admin = Client([c.client_addr(i) for i in ids], timeout=10)
        for k in range(20):
            admin.record(f"before-{k}")

        def bound():
            sts = [c.status(i) for i in ids]
            return all(s and s["cluster_id"] and all(m.get("incarnation") for m in s["members"]) for s in sts)

        wait_for("every voter bound to its incarnation", bound, c)
        victim, other = [i for i in ids if i != lead]
        old_incarnation = c.status(victim)["incarnation"]

        # The victim's disk is lost: it comes back on an empty data directory, same id, same YAML.
        c.kill(victim)
        shutil.rmtree(tmp_path / "data" / victim)
        c.start(victim)
        st = wait_for(
            "the victim to see it lost its data",
            lambda: (s := c.status(victim)) and s["needs_readd"] and s,
            c,
        )
        assert st["incarnation"] != old_incarnation
        log = wait_for(
            "the victim's log line", lambda: "needs_readd" in c.log_text(victim) and c.log_text(victim), c
        )
        assert f"cruise member remove {victim}" in log
        health = request(c.client_addr(victim), {"op": "health"})
        assert health and not health["ok"] and "lost its data" in health["message"]
        seen = wait_for(
            "the leader to show it",
            lambda: [
                m
                for m in (c.status(lead) or {"members": []})["members"]
                if m["id"] == victim and m.get("needs_readd")
            ],
            c,
        )
        assert seen
        # The operator's commands say it too, with what to do.
        for cmd in (["status"], ["member", "list"]):
            out = subprocess.run(
                [sys.executable, "-m", "cruise", *cmd, "--config", str(c.config_path)],
                capture_output=True,
                text=True,
                env={k: v for k, v in c.env().items() if not k.startswith("CRUISE_")},
                timeout=60,
            )
            assert (
                f"{victim} lost its data" in out.stderr and f"cruise member remove {victim}" in out.stderr
            ), out
        # The cluster stays available on the two members that hold the data.
        assert admin.record("with-victim-wiped").index > 20

        # It counts toward no quorum: with the other follower stopped, the leader and the
        # wiped member (alive, answering) cannot commit.
        os.kill(c.procs[other].pid, signal.SIGSTOP)
        try:
            with Client([c.client_addr(lead)], timeout=2) as one:
                with pytest.raises(CruiseError):
                    one.record("must-not-commit")
        finally:
            os.kill(c.procs[other].pid, signal.SIGCONT)
        c.wait_leader([lead, other], timeout=20)

        # The operator does what the log says: remove it, add it again; it catches up.
        admin.remove_member(victim)
        m = c.member(victim)
        admin.add_member(victim, m["raft"], m["client"], m["publish"])
        assert membership(c, ids) == [(i, True) for i in ids]
        wait_for("the victim to be readmitted", lambda: (s := c.status(victim)) and not s["needs_readd"], c)
        last = admin.record("after-readd").index
        c.wait_applied(last, ids)
        logs = [[(e["index"], e["value"]) for e in c.entries(i)] for i in ids]
        assert logs[0] == logs[1] == logs[2]
        admin.close()
    finally:
        c.close()


def test_messages_from_another_cluster_are_dropped_and_logged(tmp_path):
    """An operator adds to cluster A a member that is in fact cluster B's: B's member drops
    what A's leader sends it (each message names its cluster) and says so."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Cluster(tmp_path / "a", n=3)
    b = Cluster(tmp_path / "b", n=4)
    cfg = yaml.safe_load(b.config_path.read_text())
    b.config_path.write_text(yaml.safe_dump(dict(cfg, members=[b.member("n4")])))
    try:
        b.start("n4")
        a.start("n1", "n2", "n3")
        b.wait_leader(["n4"])
        a.wait_leader()
        wait_for(
            "both clusters to have an id",
            lambda: all((a.status(i) or {}).get("cluster_id") for i in a.ids),
            a,
        )
        wait_for("cluster B's id", lambda: (b.status("n4") or {}).get("cluster_id"), b)
        m = b.member("n4")
        with Client([a.client_addr(i) for i in a.ids], timeout=10) as admin:
            admin.add_member("n4", m["raft"], m["client"], m["publish"], learner=True)
            admin.record("a-only")
        log = wait_for(
            "B's member to log the stranger",
            lambda: "peer_other_cluster" in b.log_text("n4") and b.log_text("n4"),
            b,
        )
        assert "dropping its messages" in log
        st = b.status("n4")
        assert [x["id"] for x in st["members"]] == ["n4"] and st["leader"] == "n4"
        assert "a-only" not in [e["value"] for e in b.entries("n4")]
    finally:
        a.close()
        b.close()
