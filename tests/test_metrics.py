"""The Prometheus endpoint of each member (the member key ``metrics``), scraped over HTTP."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest
import yaml

from brokerless.testing import free_tcp_addresses
from cruise import Client, Node
from cruise.config import ConfigError
from tests.integration.cluster import ROOT, Cluster

sys.path.insert(0, str(ROOT / "tools"))

from benchlib.secure_side import CLIENT_NAME, key_of, make_tls, tls_available  # noqa: E402  (the bench's throwaway CA)

pytestmark = pytest.mark.timeout(90)

# What an operator's dashboards and alerts are built on; every member exports all of them.
REQUIRED = (
    "cruise_member_info",
    "cruise_term",
    "cruise_commit_index",
    "cruise_applied_index",
    "cruise_is_leader",
    "cruise_has_leader",
    'cruise_role{role="leader"}',
    'cruise_role{role="follower"}',
    'cruise_role{role="candidate"}',
    "cruise_leader_changes_seen_total",
    "cruise_proposals_committed_total",
    "cruise_proposals_failed_total",
    "cruise_requests_in_flight",
    "cruise_wal_fsync_duration_seconds_count",
    "cruise_apply_duration_seconds_count",
    "cruise_snapshot_index",
    "cruise_snapshots_taken_total",
    "cruise_snapshots_installed_total",
    "cruise_snapshot_bytes",
)


def scrape(address: str, timeout: float = 2.0) -> dict[str, float]:
    """``/metrics`` at ``address`` (HOST:PORT) as ``{"name{labels}": value}``; labels dropped
    for the info metric, whose labels vary."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("cruise_member_info{"):
            name = "cruise_member_info"
        out[name] = float(value)
    return out


def scrape_until(address: str, ok, timeout: float = 15.0) -> dict[str, float]:
    """Scrape until ``ok(figures)`` holds; fail with the last figures at the deadline."""
    deadline = time.monotonic() + timeout
    last: dict[str, float] | str = "no scrape answered"
    while time.monotonic() < deadline:
        try:
            last = scrape(address)
        except OSError as e:  # not serving yet
            last = repr(e)
        else:
            if ok(last):
                return last
        time.sleep(0.05)
    raise AssertionError(f"{address}: not as expected within {timeout} s: {last}")


def free_host_ports(n: int, taken: AbstractSet[str] = frozenset()) -> list[str]:
    """``n`` free loopback ``HOST:PORT``s, none of them one of ``taken`` (``tcp://`` addresses)."""
    while True:
        addrs = free_tcp_addresses(n)
        if taken.isdisjoint(addrs):
            return [a.removeprefix("tcp://") for a in addrs]


def port_is_free(address: str) -> bool:
    """Whether a server could listen on ``address`` now. SO_REUSEADDR, as servers (the metrics
    one too) set it: the port of a connection the server closed stays in TIME_WAIT a while."""
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
            s.listen()
        except OSError:
            return False
    return True


def with_metrics(config: Path, addresses: list[str]) -> None:
    """Give each member of ``config`` a metrics address."""
    cfg = yaml.safe_load(config.read_text())
    for m, a in zip(cfg["members"], addresses, strict=True):
        m["metrics"] = a
    config.write_text(yaml.safe_dump(cfg))


def one_member_config(tmp_path: Path, metrics: str | None = None, **top: object) -> Path:
    """A one-member cluster's config; ``metrics`` None: a free loopback port; ``top``: more
    top-level keys."""
    a = free_tcp_addresses(4)  # at once, so that none repeats
    metrics = metrics or a[3].removeprefix("tcp://")
    member = {"id": "n1", "raft": a[0], "client": a[1], "publish": a[2], "metrics": metrics}
    path = tmp_path / "one.yaml"
    data_dir = str(tmp_path / "data" / "{id}")
    path.write_text(yaml.safe_dump({"members": [member], "data_dir": data_dir, **top}))
    return path


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, n=3)
    taken = {a for m in c.members for k, a in m.items() if k != "id"}
    c.metrics = free_host_ports(3, taken)  # type: ignore[attr-defined]
    with_metrics(c.config_path, c.metrics)  # type: ignore[attr-defined]
    c.start()
    try:
        yield c
    finally:
        c.close()


def test_every_member_exports_its_state_and_one_leads(cluster):
    cluster.wait_leader()
    before = {}
    for a in cluster.metrics:
        figures = scrape_until(a, lambda f: all(k in f for k in REQUIRED))
        before[a] = figures["cruise_commit_index"]
        assert figures["cruise_applied_index"] <= figures["cruise_commit_index"]
        assert figures["cruise_term"] >= 1

    def leaders() -> list[str]:
        return [a for a in cluster.metrics if scrape(a)["cruise_is_leader"] == 1]

    deadline = time.monotonic() + 15
    while len(lead := leaders()) != 1:
        assert time.monotonic() < deadline, f"not exactly one leader: {lead}"
        time.sleep(0.05)
    leader = scrape(lead[0])
    assert leader['cruise_role{role="leader"}'] == 1 and leader['cruise_role{role="follower"}'] == 0
    assert leader["cruise_leader_changes_seen_total"] >= 1

    with Client([m["client"] for m in cluster.members], timeout=10) as c:
        last = max(c.record({"n": i}).index for i in range(5))

    for a in cluster.metrics:
        figures = scrape_until(
            a, lambda f: f["cruise_commit_index"] >= last and f["cruise_applied_index"] >= last
        )
        assert figures["cruise_commit_index"] > before[a]
        assert figures["cruise_wal_fsync_duration_seconds_count"] >= 1
        assert figures["cruise_apply_duration_seconds_count"] >= 1
    committed = sum(scrape(a)["cruise_proposals_committed_total"] for a in cluster.metrics)
    assert committed >= 5


@pytest.mark.parametrize("background_fsync", [False, True], ids=["inline-fsync", "background-fsync"])
def test_an_embedded_node_serves_metrics_until_stopped_then_frees_its_port(
    tmp_path, monkeypatch, background_fsync
):
    monkeypatch.setattr(Node, "background_fsync", background_fsync)  # fsyncs timed on either thread
    config = one_member_config(tmp_path)
    address = yaml.safe_load(config.read_text())["members"][0]["metrics"]
    node = Node.from_config(config, id="n1", snapshot_every=3)
    node.start()
    try:
        node.wait_for_leader(timeout=10)
        last = max(node.record(i).result(timeout=5)[0] for i in range(7))
        # The configuration entry that binds the member's incarnation may come before the
        # records or after them, so the log ends at ``last`` or one past it.
        figures = scrape_until(
            address,
            lambda f: (
                f["cruise_is_leader"] == 1
                and f["cruise_snapshots_taken_total"] >= 2
                and f["cruise_applied_index"] == f["cruise_commit_index"] >= last
            ),
        )
        assert figures["cruise_snapshot_index"] >= 6 and figures["cruise_snapshot_bytes"] > 0
        assert figures["cruise_proposals_committed_total"] == 7
        assert figures["cruise_commit_index"] in (last, last + 1)
        assert figures["cruise_wal_fsync_duration_seconds_count"] >= 1
        assert figures["cruise_apply_duration_seconds_count"] >= 1
    finally:
        node.stop(timeout=10)
    assert port_is_free(address)
    with pytest.raises(urllib.error.URLError):
        scrape(address, timeout=1)
    assert not [t for t in threading.enumerate() if "serve_forever" in t.name]


def test_an_embedded_node_whose_metrics_port_is_taken_fails_to_start_and_binds_nothing(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        config = one_member_config(tmp_path, address)
        node = Node.from_config(config, id="n1")
        with pytest.raises(ConfigError) as e:
            node.start()
        node.stop(timeout=10)
    assert str(e.value) == f"{config}: members[0].metrics: {address} is in use"
    member = yaml.safe_load(config.read_text())["members"][0]
    for key in ("raft", "client", "publish"):
        assert port_is_free(member[key].removeprefix("tcp://")), key


def test_cruise_run_with_its_metrics_port_taken_exits_with_one_line_naming_the_key(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        config = one_member_config(tmp_path, address)
        r = subprocess.run(  # the deadline kills it if it hangs
            [sys.executable, "-m", "cruise", "run", str(config), "--id", "n1"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    # The log lines before it go to stderr too; the error is the last line, and one line.
    assert r.stderr.strip().splitlines()[-1] == f"{config}: members[0].metrics: {address} is in use"


def test_metrics_over_https_answer_only_scrapers_with_a_certificate_the_ca_signed(tmp_path):
    import ssl

    if (why := tls_available()) is not None:
        pytest.skip(why)
    # A throwaway CA, a certificate for 127.0.0.1 (the member's) and one for a scraper.
    certs = make_tls(tmp_path / "tls", ["server"])
    tls_files = {
        "cert_file": certs["server"],
        "key_file": key_of(certs["server"]),
        "client_ca_file": certs["ca"],
    }
    config = one_member_config(tmp_path, metrics_tls=tls_files)
    address = yaml.safe_load(config.read_text())["members"][0]["metrics"]
    node = Node.from_config(config, id="n1")
    node.start()
    try:
        node.wait_for_leader(timeout=10)
        ctx = ssl.create_default_context(cafile=certs["ca"])
        ctx.load_cert_chain(certs[CLIENT_NAME], key_of(certs[CLIENT_NAME]))
        with urllib.request.urlopen(f"https://{address}/metrics", timeout=5, context=ctx) as r:
            assert "cruise_is_leader 1.0" in r.read().decode()
        anonymous = ssl.create_default_context(cafile=certs["ca"])  # no client certificate
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(f"https://{address}/metrics", timeout=5, context=anonymous).read()
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            scrape(address, timeout=2)  # plain HTTP gets nothing
    finally:
        node.stop(timeout=10)


def test_metrics_tls_with_a_missing_file_fails_to_start_naming_the_key(tmp_path):
    config = one_member_config(tmp_path, metrics_tls={"cert_file": "nowhere.crt", "key_file": "nowhere.key"})
    node = Node.from_config(config, id="n1")
    with pytest.raises(ConfigError) as e:
        node.start()
    assert "metrics_tls" in str(e.value) and "nowhere.crt" in str(e.value)
