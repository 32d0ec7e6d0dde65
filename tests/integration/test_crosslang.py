"""A Node.js client (tests/crosslang/record_and_tail.mjs) records and tails through the contract.

It runs against a real 3-member cluster (the `cluster` fixture of tests/integration/conftest.py)
and, as a check of the script itself, against tests/fake_member.py.

The Node packages must be installed first: `npm install --prefix tests/crosslang` (CI does it).
Without them these tests fail, on purpose, rather than skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cruise.client import Subscriber
from tests.fake_member import FakeCluster

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
CROSSLANG = ROOT / "tests" / "crosslang"
SCRIPT = CROSSLANG / "record_and_tail.mjs"
N = 50


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js 18+) is not on PATH: it is needed for the cross-language test")
    for pkg in ("zeromq", "@msgpack/msgpack"):
        if not (CROSSLANG / "node_modules" / pkg / "package.json").exists():
            pytest.fail(
                f"tests/crosslang/node_modules/{pkg} is missing: run `npm install --prefix tests/crosslang`",
                pytrace=False,
            )
    return node


def run_script(client: str, publish: str, n: int = N) -> dict:
    node = _node()
    r = subprocess.run(
        [node, str(SCRIPT), client, publish, str(n)],
        capture_output=True,
        text=True,
        timeout=45,
        cwd=CROSSLANG,
        env={**os.environ, "CRUISE_DEADLINE_MS": "30000"},
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, f"node exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["recorded"] == n
    return summary


def check_with_python(client_addrs: list[str], summary: dict, n: int = N) -> None:
    """What the Node client recorded is what a Python Subscriber reads back, in order."""
    with Subscriber(client_addrs, since=summary["first"], timeout=5) as sub:
        got = []
        deadline = time.monotonic() + 15
        while len(got) < n and time.monotonic() < deadline:
            e = sub.next(timeout=1)
            if (
                e is not None
                and e["kind"] == "record"
                and isinstance(e["value"], dict)
                and "js" in e["value"]
            ):
                got.append(e["value"]["js"])
    assert got == list(range(n))


# -- the tests -----------------------------------------------------------------------------------


def test_node_client_against_real_cluster(cluster):
    """`cluster` (tests/integration/conftest.py): three `cruise run` processes on loopback."""
    leader = cluster.wait_leader()
    followers = [i for i in cluster.ids if i != leader]
    # Record through a follower (it forwards to the leader); tail the other follower's stream.
    summary = run_script(cluster.client_addr(followers[0]), cluster.publish_addr(followers[1]))
    assert summary["last"] - summary["first"] == N - 1
    check_with_python([cluster.client_addr(i) for i in cluster.ids], summary)


def test_node_client_against_fake_member():
    """The script itself, against the fake (also when no real member exists)."""
    with FakeCluster(2) as fc:
        fc.members[0].drop_requests(1)  # the script's Lazy Pirate retry, same seq
        summary = run_script(fc.members[0].client_address, fc.members[1].publish_address, 10)
        assert summary["last"] - summary["first"] == 9
        assert fc.log.values()[-10:] == [{"js": i} for i in range(10)]
        check_with_python(fc.client_addresses, summary, 10)
