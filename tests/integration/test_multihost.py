"""Members that bind one address and advertise another (the member key ``bind``).

The main test runs three members as three hosts: each in its own Linux network namespace
(the chaos harness's network, ``tools/chaoslib/net.py``, without its nftables cuts), bound to
``tcp://0.0.0.0:PORT`` with the same ports on every host, as on real machines, and advertising
its host's address. The test itself stays in the root namespace, where only the advertised
addresses lead anywhere. Where namespaces cannot be made, it is skipped with the reason, and
the loopback test below still covers binding one address and advertising another.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brokerless.testing import free_tcp_addresses
from cruise import Client

from .cluster import Cluster, request

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from chaoslib.net import Network, NetworkUnavailable  # noqa: E402

pytestmark = pytest.mark.timeout(120)

KINDS = ("raft", "client", "publish")
SETTINGS: dict[str, Any] = {"heartbeat_ms": 20, "election_timeout_ms": [150, 300], "request_timeout_ms": 3000}


def _free_ports() -> dict[str, int]:
    """A port per kind, free on every interface here (in a fresh namespace every port is)."""
    addrs = free_tcp_addresses(len(KINDS), host="0.0.0.0")
    return {kind: int(a.rpartition(":")[2]) for kind, a in zip(KINDS, addrs, strict=True)}


def _members(advertised_hosts: list[str], ports: list[dict[str, int]]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"n{i + 1}",
            **{k: f"tcp://{host}:{p[k]}" for k in KINDS},
            "bind": {k: f"tcp://0.0.0.0:{p[k]}" for k in KINDS},
        }
        for i, (host, p) in enumerate(zip(advertised_hosts, ports, strict=True))
    ]


class HostsCluster(Cluster):
    """The loopback :class:`Cluster` with each member on its own host (namespace)."""

    def __init__(self, tmp: Path, hosts: Network, members: list[dict[str, Any]]) -> None:
        super().__init__(tmp, len(members), members=members, **SETTINGS)  # the file's members
        self.members = members  # what the waits and requests address: the advertised ones
        self.hosts = hosts

    def host(self, id: str) -> int:
        """The index of the member's host in :attr:`hosts`."""
        return self.ids.index(id)

    def start(self, *ids: str) -> None:
        for i in ids or self.ids:
            argv = [sys.executable, "-m", "cruise", "run", str(self.config_path), "--id", i]
            with open(self.tmp / "logs" / f"{i}.log", "ab") as log:
                self.procs[i] = self.hosts.run_in(
                    self.host(i),
                    [*argv, "--log-format", "json"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    cwd=str(self.tmp),
                )


@pytest.fixture
def hosts() -> Iterator[Network]:
    try:
        made = Network(3, cuts=False, prefix="cruise-test")
    except NetworkUnavailable as e:
        pytest.skip(str(e))
    with made:
        yield made


@pytest.fixture
def hosts_cluster(tmp_path: Path, hosts: Network) -> Iterator[HostsCluster]:
    ports = _free_ports()  # the same on every host
    c = HostsCluster(tmp_path, hosts, _members(hosts.addresses, [ports] * len(hosts.names)))
    try:
        yield c
    finally:
        c.close()  # before the hosts fixture removes the namespaces


def _committed_values(cluster: Cluster, id: str) -> list[Any]:
    return [e["value"] for e in cluster.entries(id) if e["kind"] == "record"]


def _wait_values(cluster: Cluster, ids: list[str], values: list[Any], timeout: float = 15.0) -> None:
    """Every member in ``ids`` has committed exactly ``values``, in order."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {i: _committed_values(cluster, i) for i in ids}
        if all(v == values for v in seen.values()):
            return
        assert time.monotonic() < deadline, f"wanted {values} on {ids}, got {seen}"
        time.sleep(0.05)


def _assert_status_advertises(cluster: Cluster, id: str) -> None:
    st = cluster.status(id, 2.0)
    assert st and st["ok"], st
    shown = {m["id"]: {k: m[k] for k in KINDS} for m in st["members"]}
    assert shown == {m["id"]: {k: m[k] for k in KINDS} for m in cluster.members}, st
    assert "0.0.0.0" not in json.dumps(st), st  # the bind addresses stay local to each member


def _in_host(hosts: Network, host: int, argv: list[str], timeout: float = 20.0) -> tuple[int, str]:
    p = hosts.run_in(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out


# Run on a host: a TCP connection to each port given on 127.0.0.1 succeeds.
_LOCAL_PORTS_OPEN = """
import socket, sys
for port in sys.argv[1:]:
    socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
"""


def test_three_hosts_bind_every_interface_and_advertise_their_own_address(hosts_cluster: HostsCluster):
    c, hosts = hosts_cluster, hosts_cluster.hosts
    c.start()
    leader = c.wait_leader()
    client_addrs = [m["client"] for m in c.members]

    values = [{"host": i} for i in range(10)]
    with Client(client_addrs, timeout=10) as db:
        for v in values:
            db.record(v)
    _wait_values(c, c.ids, values)
    for i in c.ids:
        _assert_status_advertises(c, i)

    # Bound to every interface, not only the advertised one: on its own host a member also
    # answers at 127.0.0.1, as a local load balancer or operator would reach it.
    ports = [str(c.members[0][k].rpartition(":")[2]) for k in KINDS]
    for i in c.ids:
        code, out = _in_host(hosts, c.host(i), [sys.executable, "-c", _LOCAL_PORTS_OPEN, *ports])
        assert code == 0, f"{i} on {hosts.names[c.host(i)]}: {out}"
    code, out = _in_host(
        hosts,
        c.host(leader),
        [sys.executable, "-m", "cruise", "health", "--to", f"tcp://127.0.0.1:{ports[1]}"],
    )
    assert code == 0 and json.loads(out)["leader"] == leader, out

    # One host down: the two others elect (or keep) a leader and still commit.
    c.kill(leader, signal.SIGKILL)
    alive = [i for i in c.ids if i != leader]
    c.wait_leader(alive)
    with Client([c.client_addr(i) for i in alive], timeout=10) as db:
        db.record("after the kill")
    _wait_values(c, alive, [*values, "after the kill"])


def test_binding_any_interface_while_advertising_loopback(tmp_path: Path):
    """The same config shape on one machine: bind ``0.0.0.0``, advertise ``127.0.0.1``."""
    ports = [_free_ports() for _ in range(3)]
    members = _members(["127.0.0.1"] * 3, ports)
    c = Cluster(tmp_path, 3, members=members, **SETTINGS)
    c.members = members
    try:
        c.start()
        c.wait_leader()
        with Client([m["client"] for m in members], timeout=10) as db:
            db.record("bound anywhere")
        _wait_values(c, c.ids, ["bound anywhere"])
        for i in c.ids:
            _assert_status_advertises(c, i)
        if sys.platform == "linux":
            # Linux routes all of 127/8 to loopback: an answer at 127.0.0.2 shows the member
            # bound every interface rather than the advertised address alone.
            for p in ports:
                reply = request(f"tcp://127.0.0.2:{p['client']}", {"op": "status"}, 2.0)
                assert reply and reply["ok"], reply
    finally:
        c.close()
