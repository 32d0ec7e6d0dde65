"""A cluster secured with CURVE, in real processes: it elects, records and publishes for
authorized clients; strangers (a client or a "member" with a key the cluster does not list)
get nothing and change nothing; a sniffer on the wire sees no plaintext value."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
import zmq

from cruise import Client, CruiseError, Subscriber, wire
from cruise.core.messages import RequestVote
from cruise.security import client_options, generate, load_secret

from .cluster import Cluster, request

pytestmark = pytest.mark.timeout(120)
SECRET = "a-value-nobody-on-the-wire-may-read"


@pytest.fixture
def secured(tmp_path: Path):
    keys = tmp_path / "keys"
    clients = tmp_path / "clients"
    for i in ("n1", "n2", "n3"):
        generate(keys, i)
    generate(clients, "alice")  # authorized: her .key is in the clients directory
    generate(tmp_path / "strangers", "mallory")  # not authorized
    c = Cluster(
        tmp_path,
        n=3,
        security={"curve": True, "secret_key_file": "keys/{id}.key_secret"},
        clients={"authorized_keys": "clients"},
    )
    cfg = yaml.safe_load(c.config_path.read_text())
    for m in cfg["members"]:
        m["public_key"] = load_secret(keys / f"{m['id']}.key_secret")[0].decode()
    c.config_path.write_text(yaml.safe_dump(cfg))
    c.server_keys = {m["client"]: m["public_key"] for m in cfg["members"]}
    c.server_keys.update({m["publish"]: m["public_key"] for m in cfg["members"]})
    c.alice = clients / "alice.key_secret"
    c.mallory = tmp_path / "strangers" / "mallory.key_secret"
    try:
        c.start()
        yield c
    finally:
        c.close()


def client(c: Cluster, key: Path, timeout: float = 10) -> Client:
    return Client([c.client_addr(i) for i in c.ids], timeout=timeout, key=key, server_key=c.server_keys)


def wait_leader(c: Cluster) -> dict:
    deadline = time.monotonic() + 20
    with client(c, c.alice, timeout=1) as a:
        while time.monotonic() < deadline:
            try:
                st = a.status()
                if st.get("leader"):
                    return st
            except CruiseError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"no leader\n{c._logs_tail()}")


def test_a_secured_cluster_elects_records_and_publishes_for_its_clients(secured):
    c = secured
    wait_leader(c)
    with (
        Subscriber([c.client_addr(i) for i in c.ids], since=1, key=c.alice, server_key=c.server_keys) as sub,
        client(c, c.alice) as a,
    ):
        r = a.record({"secret": SECRET})
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not got or got[-1]["index"] < r.index):
            e = sub.next(timeout=0.5)
            if e is not None:
                got.append(e)
        assert {"secret": SECRET} in [e["value"] for e in got]
    assert "curve_on" in c.log_text("n1")


def test_strangers_get_nothing_and_change_nothing(secured):
    c = secured
    st = wait_leader(c)
    # A plain client (no CURVE) and one with a key the cluster does not list: no answer.
    assert request(c.client_addr("n1"), {"op": "status"}, timeout=1.0) is None
    with client(c, c.mallory, timeout=1.5) as m:
        with pytest.raises(CruiseError):
            m.record("from-mallory")
    # A "member" with a key the cluster does not list asks n1 for its vote in a far higher term
    # (as a leadership transfer, which no lease ignores): the handshake fails, so nothing
    # reaches n1's core. (It names itself n9: n2's name is taken by n2's own connection.)
    ctx = zmq.Context.instance()
    n1 = load_secret(Path(c.tmp) / "keys" / "n1.key_secret")[0]
    d = ctx.socket(zmq.DEALER)
    for opt, v in client_options(load_secret(c.mallory), n1).items():
        d.setsockopt(opt, v)
    d.setsockopt(zmq.IDENTITY, b"n9")
    d.setsockopt(zmq.LINGER, 0)
    d.connect(c.member("n1")["raft"])
    for _ in range(20):
        vote = RequestVote(st["term"] + 100, "n9", "n1", 10**6, st["term"] + 99, False, True)
        try:
            d.send(wire.encode(vote), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the handshake never completed: nothing can be queued
        time.sleep(0.05)
    d.close()
    time.sleep(0.5)
    with client(c, c.alice) as a:
        after = a.status()
        assert after["term"] < st["term"] + 100 and after["leader"]
        index = a.record("still-fine").index
    values = [e["value"] for e in c_entries(c, index)]
    assert "from-mallory" not in values and "still-fine" in values


def c_entries(c: Cluster, until: int) -> list[dict]:
    """The committed log as the member asked holds it, once it holds ``until`` (a follower
    learns a commit with its leader's next message)."""
    deadline = time.monotonic() + 10
    with client(c, c.alice) as a:
        while True:
            got = a.entries(1, 1000)
            if (got and got[-1]["index"] >= until) or time.monotonic() > deadline:
                return got
            time.sleep(0.02)


class Relay(threading.Thread):
    """A TCP relay between a client and a member that keeps every byte it carries: a
    sniffer on the wire."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listen = socket.create_server(("127.0.0.1", 0))
        self.addr = f"tcp://127.0.0.1:{self.listen.getsockname()[1]}"
        self.seen = bytearray()
        self.stop = threading.Event()

    def run(self) -> None:
        self.listen.settimeout(0.2)
        while not self.stop.is_set():
            try:
                a, _ = self.listen.accept()
            except TimeoutError:
                continue
            b = socket.create_connection(self.target)
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.seen += data
            try:
                dst.sendall(data)
            except OSError:
                return


def test_a_sniffer_on_the_wire_reads_no_value(secured):
    c = secured
    wait_leader(c)
    relay = Relay(c.client_addr("n1"))
    relay.start()
    try:
        key = c.server_keys[c.client_addr("n1")]
        with Client([relay.addr], timeout=10, key=c.alice, server_key=key) as a:
            index = a.record({"secret": SECRET}).index
            # The client reads it (n1 may learn the commit a heartbeat after the answer)...
            deadline = time.monotonic() + 10
            while not (got := a.entries(index, 1)) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert SECRET in str(got)
        assert len(relay.seen) > 100
        assert SECRET.encode() not in relay.seen  # ...the wire never carries it in the clear
    finally:
        relay.stop.set()
    # And a plain SUB on the publish port gets nothing at all.
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(c.publish_addr("n1"))
    with client(c, c.alice) as a:
        a.record({"secret": SECRET})
    assert not sub.poll(1000)
    sub.close()


def test_without_security_the_member_warns_once(tmp_path):
    c = Cluster(tmp_path, n=3)
    try:
        c.start("n1")
        deadline = time.monotonic() + 10
        while "unauthenticated" not in c.log_text("n1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.log_text("n1").count("unauthenticated") == 1
    finally:
        c.close()


def cli(c: Cluster, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in c.env().items() if not k.startswith("CRUISE_")}
    return subprocess.run(
        [sys.executable, "-m", "cruise", *argv], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_the_cli_speaks_to_a_secured_cluster_with_a_key_and_not_without(secured, tmp_path):
    c = secured
    wait_leader(c)
    conf = str(c.config_path)
    ok = cli(c, "record", "from-the-cli", "--config", conf, "--key", str(c.alice))
    assert ok.returncode == 0 and '"index"' in ok.stdout, ok
    st = cli(c, "status", "--config", conf, "--key", str(c.alice))
    assert st.returncode == 0 and "leader" in st.stdout, st
    plain = cli(c, "status", "--config", conf, "--timeout", "1")
    assert plain.returncode == 1 and "unreachable" in plain.stdout, plain
    up = cli(c, "up", conf)  # it runs secured clusters too; this one runs already
    assert up.returncode == 1 and "already running" in up.stderr, up
    gen = cli(c, "keys", "generate", "bob", "--dir", str(tmp_path / "more"))
    assert gen.returncode == 0 and (tmp_path / "more" / "bob.key_secret").exists(), gen
    again = cli(c, "keys", "generate", "bob", "--dir", str(tmp_path / "more"))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr, again
