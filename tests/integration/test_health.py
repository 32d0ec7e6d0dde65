"""`health` (and `cruise health`): a member is healthy while it knows a leader that a quorum has
heard within the election timeout, for load balancers and scripts."""

import os
import subprocess
import sys
import time

from .cluster import ROOT, request


def _health(cluster, id):
    return request(cluster.client_addr(id), {"op": "health"}, timeout=2.0)


def _cli(cluster, id):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "cruise", "health", "--to", cluster.client_addr(id)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_healthy_members_name_the_leader_and_a_lone_member_is_not_healthy(cluster):
    leader = cluster.wait_leader()  # the fixture started the members
    for id in cluster.ids:
        deadline = time.monotonic() + 10
        while True:  # a follower is healthy once it has heard the leader
            reply = _health(cluster, id)
            if reply and reply.get("ok"):
                break
            assert time.monotonic() < deadline, reply
            time.sleep(0.05)
        term = cluster.status(leader)["term"]
        assert reply == {"ok": True, "leader": leader, "term": term}
    r = _cli(cluster, leader)
    assert r.returncode == 0 and f'"leader": "{leader}"' in r.stdout, (r.stdout, r.stderr)

    # Two of three gone: the one left hears no leader within the election timeout.
    alone = next(i for i in cluster.ids if i != leader)
    for id in cluster.ids:
        if id != alone:
            cluster.kill(id)
    deadline = time.monotonic() + 10
    while True:
        reply = _health(cluster, alone)
        if reply and not reply.get("ok"):
            break
        assert time.monotonic() < deadline, reply
        time.sleep(0.05)
    assert reply["error"] == "unavailable"
    r = _cli(cluster, alone)
    assert r.returncode == 1 and "unavailable" in r.stderr, (r.stdout, r.stderr)
