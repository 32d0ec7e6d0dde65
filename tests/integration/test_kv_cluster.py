"""State machines in real member processes: the built-in ``kv`` (linearizable gets across a
leader change, atomic ``cas`` under concurrent clients, the ``cruise kv`` commands) and a class
of the user's loaded from the config (results, queries, and a restart that rebuilds it from
the log)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cruise import Client, CruiseError

from .cluster import ROOT

pytestmark = pytest.mark.timeout(120)

KV_ON_STREAM = "the cluster runs the stream state machine; set state_machine: kv"


def _client(cluster, *ids: str, timeout: float = 15.0) -> Client:
    return Client([cluster.client_addr(i) for i in ids or cluster.ids], timeout=timeout)


def test_a_get_through_another_member_sees_a_put_across_a_leader_change(make_cluster):
    c = make_cluster(state_machine="kv")
    c.start()
    lead = c.wait_leader()
    follower, other = (i for i in c.ids if i != lead)
    with _client(c, follower) as w:
        assert w.record({"put": "k", "value": {"v": 1}}).result is None
        assert w.record({"put": "gone", "value": 1}).result is None
        assert w.record({"delete": "gone"}).result is True
    # Through another member at once: linearizable, not "eventually".
    with _client(c, other) as r:
        assert r.query({"get": "k"}) == {"v": 1}
    c.kill(lead, signal.SIGKILL)
    # No waiting for the new leader: the read must not answer before it is safe to.
    with _client(c, other, timeout=20) as r:
        assert r.query({"get": "k"}) == {"v": 1}
        assert r.query({"get": "gone"}) is None
        assert r.query({"keys": ""}) == ["k"]
        rest = [i for i in c.ids if i != lead]
        c.wait_leader(rest)
        # A put through the new cluster, then a get through the other survivor.
        with _client(c, follower) as w:
            w.record({"put": "k", "value": {"v": 2}})
        assert r.query({"get": "k"}) == {"v": 2}


def test_cas_is_atomic_under_concurrent_clients(make_cluster):
    c = make_cluster(state_machine="kv")
    c.start()
    c.wait_leader()
    writers, increments = 4, 15
    swapped = [0] * writers
    failed = [0] * writers
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            ids = c.ids[k % 3 :] + c.ids[: k % 3]  # each writer starts at another member
            with _client(c, *ids, timeout=20) as cl:
                deadline = time.monotonic() + 90
                while swapped[k] < increments:
                    assert time.monotonic() < deadline, "no progress"
                    now = cl.query({"get": "counter"})
                    new = 1 if now is None else now + 1
                    if cl.record({"cas": "counter", "expect": now, "value": new}).result is True:
                        swapped[k] += 1
                    else:
                        failed[k] += 1
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not any(t.is_alive() for t in threads), "a writer is stuck"
    assert not errors, errors
    with _client(c) as cl:
        assert cl.query({"get": "counter"}) == sum(swapped) == writers * increments
    # The writers did contend: some cas lost (unless the scheduler serialized them all).
    print(f"cas: {sum(swapped)} swapped, {sum(failed)} lost to another writer")


TALLY = "tests.machines.sample:Tally"


def test_a_custom_machine_from_the_config_answers_and_survives_a_restart(make_cluster):
    c = make_cluster(state_machine=TALLY)
    c.start()
    c.wait_leader()
    with _client(c) as cl:
        results = [cl.record(n).result for n in range(1, 11)]
        assert results == [{"count": k, "total": k * (k + 1) // 2} for k in range(1, 11)]
        assert cl.record("not a number").result == {"count": 11, "total": 55}
    answers = {}
    for i in c.ids:
        with _client(c, i) as cl:
            answers[i] = (cl.query("total"), cl.query("count"), cl.query("indexes"))
            with pytest.raises(CruiseError) as e:
                cl.query("median")
            assert e.value.code == "bad_request" and "Tally answers total" in e.value.message
    assert {a[:2] for a in answers.values()} == {(55, 11)}
    assert len({tuple(a[2]) for a in answers.values()}) == 1  # the same indexes everywhere

    for i in c.ids:  # every member stops: the state lives only in the log now
        assert c.kill(i, signal.SIGTERM) == 0
    c.start()
    c.wait_leader()
    for i in c.ids:
        with _client(c, i) as cl:
            assert (cl.query("total"), cl.query("count"), cl.query("indexes")) == answers[i]
    with _client(c) as cl:
        assert cl.record(45).result == {"count": 12, "total": 100}


# -- the command line --------------------------------------------------------------------------


def cruise(cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    to = [a for i in cluster.ids for a in ("--to", cluster.client_addr(i))]
    return subprocess.run(
        [sys.executable, "-m", "cruise", *args, *to, "--timeout", "15"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(Path(cluster.tmp)),
        stdin=subprocess.DEVNULL,
    )


def _json(r: subprocess.CompletedProcess[str]):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_cli_kv_commands_against_a_kv_cluster(make_cluster):
    c = make_cluster(state_machine="kv")
    c.start()
    c.wait_leader()
    put = _json(cruise(c, "kv", "put", "cfg/a", '{"x": [1, 2]}'))
    assert set(put) == {"index", "term"}
    _json(cruise(c, "kv", "put", "cfg/b", "plain text"))
    _json(cruise(c, "kv", "put", "other", "3"))
    assert _json(cruise(c, "kv", "get", "cfg/a")) == {"x": [1, 2]}
    assert _json(cruise(c, "kv", "get", "cfg/b")) == "plain text"
    assert _json(cruise(c, "kv", "get", "missing")) is None
    assert _json(cruise(c, "kv", "keys", "cfg/")) == ["cfg/a", "cfg/b"]
    assert _json(cruise(c, "kv", "keys")) == ["cfg/a", "cfg/b", "other"]
    cas = _json(cruise(c, "kv", "cas", "other", "3", "4"))
    assert cas["swapped"] is True and cas["index"] > put["index"]
    assert _json(cruise(c, "kv", "cas", "other", "3", "5"))["swapped"] is False
    assert _json(cruise(c, "kv", "cas", "new", "null", '"created"'))["swapped"] is True
    assert _json(cruise(c, "kv", "get", "other")) == 4
    assert _json(cruise(c, "kv", "get", "new")) == "created"
    assert _json(cruise(c, "kv", "delete", "cfg/b"))["existed"] is True
    assert _json(cruise(c, "kv", "delete", "cfg/b"))["existed"] is False
    assert _json(cruise(c, "kv", "keys")) == ["cfg/a", "new", "other"]


def test_cli_kv_put_against_a_stream_cluster_exits_1_before_writing(make_cluster):
    c = make_cluster()  # state_machine: stream (the default)
    c.start()
    c.wait_leader()
    for args in (("put", "k", "1"), ("delete", "k"), ("cas", "k", "null", "1"), ("get", "k"), ("keys",)):
        r = cruise(c, "kv", *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr == KV_ON_STREAM + "\n"
        assert r.stdout == ""
    assert [e for e in c.entries(c.ids[0]) if e["kind"] == "record"] == []  # nothing was recorded
