"""The `cruise` command line, run as `python -m cruise ...` subprocesses against tests/fake_member.py."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fake_member import FakeCluster, FakeMember

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DEAD = "tcp://127.0.0.1:1"  # nothing listens on port 1


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CRUISE_CONFIG", "CRUISE_ENDPOINTS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def cruise(
    *args: str,
    timeout: float = 30,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m cruise ARGS`; ``env`` adds environment variables, ``input`` is stdin."""
    return subprocess.run(
        [sys.executable, "-m", "cruise", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_env(**(env or {})),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
    )


@pytest.fixture
def procs():
    """Started subprocesses; every one is killed in teardown."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()  # SIGTERM: `cruise up` stops its members first
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        p.wait(10)
        if p.pid not in _queues:  # else its pump thread closes stdout at EOF
            p.stdout.close()
        p.stderr.close()


def _ctrl_c_on() -> None:
    """In the child: SIGINT as a terminal delivers it, even when this test run was started in
    the background (`cmd &` in a script), which leaves SIGINT ignored for every child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(procs: list, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "cruise", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=_env(**(env or {})),
        preexec_fn=_ctrl_c_on,
    )
    procs.append(p)
    return p


def read_lines(p: subprocess.Popen[str], n: int, timeout: float = 15) -> list[str]:
    """n more lines from p's stdout, failing after timeout (never blocks forever).

    A thread reads the pipe (select() on a buffered text stream misses lines already buffered).
    """
    q = _line_queue(p)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {lines} within {timeout}s"
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            continue
        assert line is not None, f"process ended after {lines}: rc={p.wait(5)} stderr={p.stderr.read()}"
        lines.append(line.rstrip("\n"))
    return lines


_queues: dict[int, queue.Queue] = {}


def _line_queue(p: subprocess.Popen[str]) -> queue.Queue:
    if p.pid not in _queues:
        q: queue.Queue = queue.Queue()

        def pump() -> None:
            with p.stdout:
                for line in p.stdout:
                    q.put(line)
            q.put(None)

        threading.Thread(target=pump, daemon=True).start()
        _queues[p.pid] = q
    return _queues[p.pid]


def assert_one_line_no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def write_config(tmp_path: Path, members: list[FakeMember]) -> Path:
    lines = ["members:"]
    for i, m in enumerate(members):
        lines.append(
            f'  - {{id: {m.id}, raft: "tcp://127.0.0.1:{19100 + i}", client: "{m.client_address}", '
            f'publish: "{m.publish_address}"}}'
        )
    path = tmp_path / "cluster.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def member():
    with FakeMember("f1") as m:
        yield m


# -- record ------------------------------------------------------------------------------------


def test_record_prints_index_and_term(member):
    r = cruise("record", "42", "--to", member.client_address)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"index": 1, "term": 2}
    assert r.stdout.count("\n") == 1
    r = cruise("record", '{"a": [1, 2]}', "--to", member.client_address)
    assert json.loads(r.stdout) == {"index": 2, "term": 2}
    r = cruise("record", "hello world", "--to", member.client_address)
    assert r.returncode == 0
    assert member.log.values() == [42, {"a": [1, 2]}, "hello world"]


def test_record_unreachable_exits_1_within_timeout():
    t0 = time.monotonic()
    r = cruise("record", "42", "--to", DEAD, "--timeout", "1")
    assert time.monotonic() - t0 < 10
    assert r.returncode == 1
    assert r.stderr.startswith("error: unavailable: ")
    assert_one_line_no_traceback(r)
    assert r.stdout == ""


def test_record_error_reply_exits_1_with_code(member):
    member.fail_next("too_large", message="value is too big")
    r = cruise("record", "x", "--to", member.client_address)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: too_large: value is too big"


def test_record_uses_config_addresses(tmp_path, member):
    cfg = write_config(tmp_path, [member])
    r = cruise("record", "7", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["index"] == 1


def test_record_value_from_stdin_and_file(tmp_path, member):
    to = ["--to", member.client_address]
    r = cruise("record", "-", *to, input='{"from": "stdin"}\n')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"index": 1, "term": 2}
    (tmp_path / "v.json").write_text("[1, 2]")
    (tmp_path / "v.txt").write_text("plain text")
    assert cruise("record", f"@{tmp_path / 'v.json'}", *to).returncode == 0
    assert cruise("record", "@v.txt", *to, cwd=tmp_path).returncode == 0
    assert cruise("record", "-", *to, input="not json").returncode == 0
    assert member.log.values() == [{"from": "stdin"}, [1, 2], "plain text", "not json"]


def test_record_missing_value_file_exits_2(tmp_path, member):
    r = cruise("record", f"@{tmp_path / 'gone.json'}", "--to", member.client_address)
    assert r.returncode == 2
    assert_one_line_no_traceback(r)
    assert "gone.json" in r.stderr
    assert member.log.values() == []


def test_version():
    from cruise import __version__

    r = cruise("--version")
    assert r.returncode == 0
    assert r.stdout == f"cruise {__version__}\n"


# -- environment: CRUISE_CONFIG and CRUISE_ENDPOINTS --------------------------------------------


def test_cruise_config_names_the_default_config(tmp_path, member):
    cfg = write_config(tmp_path, [member])
    r = cruise("record", "1", env={"CRUISE_CONFIG": str(cfg)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cruise("record", "2", env={"CRUISE_CONFIG": "cluster.yaml"}, cwd=tmp_path)  # relative to cwd
    assert r.returncode == 0, r.stderr
    r = cruise("record", "3", "--config", "cluster.yaml", cwd=tmp_path)  # --config: relative to cwd too
    assert r.returncode == 0, r.stderr
    r = cruise("record", "4", "--config", str(cfg), env={"CRUISE_CONFIG": str(tmp_path / "nope.yaml")})
    assert r.returncode == 0, r.stderr  # --config wins
    assert member.log.values() == [1, 2, 3, 4]
    r = cruise("status", env={"CRUISE_CONFIG": str(tmp_path / "nope.yaml")})
    assert r.returncode == 2
    assert_one_line_no_traceback(r)
    assert "nope.yaml" in r.stderr


def test_cruise_endpoints_are_the_default_addresses(tmp_path, procs):
    with FakeCluster(2) as fc:
        a1, a2 = fc.client_addresses
        env = {"CRUISE_ENDPOINTS": f"{DEAD}, {a2},{a1},"}
        r = cruise("record", "1", "--timeout", "5", env=env)
        assert r.returncode == 0, r.stderr
        r = cruise("status", "--json", env=env)
        assert [x["address"] for x in json.loads(r.stdout)] == [DEAD, a2, a1]
        assert r.returncode == 0, r.stderr
        p = spawn(procs, "tail", "--since", "1", env=env)
        assert json.loads(read_lines(p, 1)[0])["value"] == 1
        # Command-line flags win: --to, --from, --config.
        dead = {"CRUISE_ENDPOINTS": DEAD}
        assert cruise("record", "2", "--to", fc.client_addresses[0], env=dead).returncode == 0
        cfg = write_config(tmp_path, fc.members)
        assert cruise("record", "3", "--config", str(cfg), env=dead).returncode == 0
        p = spawn(procs, "tail", "--since", "3", "--from", fc.client_addresses[0], env=dead)
        assert json.loads(read_lines(p, 1)[0])["value"] == 3
        assert fc.log.values() == [1, 2, 3]
        r = cruise("status", env={"CRUISE_ENDPOINTS": "localhost:7201"})
        assert r.returncode == 2
        assert_one_line_no_traceback(r)
        assert "CRUISE_ENDPOINTS" in r.stderr


# -- usage and config errors: exit 2, one line, no traceback ----------------------------------


def test_missing_config_file_exits_2(tmp_path):
    r = cruise("record", "1", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert_one_line_no_traceback(r)
    assert "nope.yaml" in r.stderr


def test_default_config_missing_exits_2(tmp_path):
    r = cruise("status", cwd=tmp_path)  # no configs/local.yaml there
    assert r.returncode == 2
    assert_one_line_no_traceback(r)
    assert "configs/local.yaml" in r.stderr


def test_bad_config_key_exits_2_naming_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'members:\n  - {id: n1, raft: "tcp://127.0.0.1:7101", client: "tcp://127.0.0.1:7201", '
        'publish: "tcp://127.0.0.1:7301"}\nheartbeat: 50\n'
    )
    for args in (["status", "--config", str(bad)], ["run", str(bad), "--id", "n1"], ["up", str(bad)]):
        r = cruise(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert_one_line_no_traceback(r)
        assert "bad.yaml" in r.stderr and "heartbeat" in r.stderr


def test_run_unknown_id_exits_2(tmp_path, member):
    cfg = write_config(tmp_path, [member])
    r = cruise("run", str(cfg), "--id", "zz")
    assert r.returncode == 2
    assert_one_line_no_traceback(r)


@pytest.mark.parametrize(
    "args",
    [
        ["record", "1", "--to", "localhost:7201"],
        ["tail", "--from", "not-an-address"],
        ["status", "--to", "tcp://127.0.0.1"],
        ["tail", "--since", "abc", "--from", DEAD],
        ["tail", "--since", "-3", "--from", DEAD],
        ["record", "1", "--timeout", "soon"],
        ["record"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_usage_exits_2(args):
    r = cruise(*args)
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr
    assert r.stderr.strip()


# -- status ------------------------------------------------------------------------------------


def test_status_json_parses_and_reports_unreachable():
    with FakeCluster(2) as fc:
        r = cruise(
            "status", "--json", "--to", fc.client_addresses[0], "--to", fc.client_addresses[1], "--to", DEAD
        )
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert [x.get("id") for x in rows] == ["f1", "f2", None]
        assert rows[0]["role"] == "leader" and rows[1]["role"] == "follower"
        assert rows[0]["address"] == fc.client_addresses[0]
        for k in ("term", "leader", "commit_index", "applied_index", "last_index", "members"):
            assert k in rows[0]
        assert rows[2] == {"address": DEAD, "error": "unreachable"}


def test_status_table_from_config(tmp_path):
    with FakeCluster(3) as fc:
        cfg = write_config(tmp_path, fc.members)
        fc.log.commit("x")
        r = cruise("status", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST"]
        assert lines[1].split() == ["f1", fc.client_addresses[0], "leader", "2", "f1", "1", "1", "1"]
        assert lines[2].split()[:3] == ["f2", fc.client_addresses[1], "follower"]
        fc.members[1].stop()
        r = cruise("status", "--config", str(cfg), "--timeout", "0.5")
        assert r.returncode == 0, r.stderr  # 2 of 3 answered: a quorum, and f1 leads
        assert r.stdout.splitlines()[2].split() == ["f2", fc.client_addresses[1], "unreachable"]
        assert r.stderr == ""


def test_status_without_a_quorum_exits_1_naming_the_unreachable(tmp_path):
    with FakeCluster(3) as fc:
        cfg = write_config(tmp_path, fc.members)
        fc.members[1].stop()
        fc.members[2].stop()
        for extra in ([], ["--json"]):
            r = cruise("status", "--config", str(cfg), "--timeout", "0.5", *extra)
            assert r.returncode == 1, r.stderr
            assert_one_line_no_traceback(r)
            assert "1 of 3 voters answered, not a quorum" in r.stderr
            assert f"f2 ({fc.client_addresses[1]})" in r.stderr and "f3" in r.stderr
            assert "f1" not in r.stderr.split("unreachable:")[1]
        rows = json.loads(r.stdout)  # --json output unchanged: still the array
        assert [x.get("error") for x in rows] == [None, "unreachable", "unreachable"]
        # Addresses given with --to: the voters are those the members report (the fake drops a
        # stopped member from its list; a real one keeps its configured voters).
        fc.log.extra_members += [m.member_map() for m in fc.members[1:]]
        r = cruise(
            "status", "--to", fc.client_addresses[0], "--to", fc.client_addresses[1], "--timeout", "0.5"
        )
        assert r.returncode == 1
        assert "unreachable: f2" in r.stderr and "not asked: f3" in r.stderr


def test_status_no_leader_known_exits_1():
    with FakeCluster(2) as fc:
        fc.log.leader = None
        r = cruise("status", "--to", fc.client_addresses[0], "--to", fc.client_addresses[1])
        assert r.returncode == 1
        assert r.stdout.splitlines()[1].split()[:3] == ["f1", fc.client_addresses[0], "follower"]
        assert_one_line_no_traceback(r)
        assert r.stderr.startswith("error: unavailable: no member knows a leader")
        r = cruise("status", "--json", "--to", fc.client_addresses[0], "--to", fc.client_addresses[1])
        assert r.returncode == 1
        assert [x["leader"] for x in json.loads(r.stdout)] == [None, None]


def test_status_none_answered_exits_1():
    r = cruise("status", "--to", DEAD, "--timeout", "0.5")
    assert r.returncode == 1
    assert "unreachable" in r.stdout
    assert r.stderr.startswith("error: unavailable")


# -- tail --------------------------------------------------------------------------------------


def test_tail_since_prints_entries_then_live(procs):
    with FakeCluster(2) as fc:
        fc.log.commit({"a": 1})
        fc.log.commit(b"\xff\x00")  # bytes: {"$bytes": base64}
        fc.log.commit({"k": [b"text", "text"], "b": b""})  # at any depth, even when UTF-8
        fc.log.commit(None, kind="noop")
        p = spawn(
            procs, "tail", "--since", "2", "--from", fc.client_addresses[0], "--from", fc.client_addresses[1]
        )
        lines = [json.loads(x) for x in read_lines(p, 3)]
        assert lines == [
            {"index": 2, "term": 2, "kind": "record", "value": {"$bytes": "/wA="}},
            {
                "index": 3,
                "term": 2,
                "kind": "record",
                "value": {"k": [{"$bytes": "dGV4dA=="}, "text"], "b": {"$bytes": ""}},
            },
            {"index": 4, "term": 2, "kind": "noop", "value": None},
        ]
        for i in range(3):
            fc.log.commit(f"live{i}")
        live = [json.loads(x) for x in read_lines(p, 3)]
        assert [e["index"] for e in live] == [5, 6, 7]
        assert [e["value"] for e in live] == ["live0", "live1", "live2"]
        p.send_signal(signal.SIGINT)  # Ctrl-C: a clean exit
        assert p.wait(30) == 0
        assert "Traceback" not in p.stderr.read()


def test_tail_unreachable_exits_1():
    r = cruise("tail", "--from", DEAD, "--timeout", "1")
    assert r.returncode == 1
    assert_one_line_no_traceback(r)


# -- member, transfer, kv ------------------------------------------------------------------------


def test_member_and_transfer_commands():
    with FakeCluster(2) as fc:
        to = ["--to", fc.client_addresses[1]]
        r = cruise(
            "member", "add", "n9", "--raft", "tcp://127.0.0.1:9101", "--client", "tcp://127.0.0.1:9201",
            "--publish", "tcp://127.0.0.1:9301", *to,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"index": 1}
        r = cruise("member", "remove", "n9", *to)
        assert json.loads(r.stdout) == {"index": 2}
        r = cruise("transfer", "f2", *to)
        assert json.loads(r.stdout) == {"leader": "f2"}
        r = cruise("transfer", "nobody", *to)
        assert r.returncode == 1 and r.stderr.startswith("error: not_member: ")


def test_kv_commands():
    with FakeCluster(1, kv=True) as fc:
        to = ["--to", fc.client_addresses[0]]
        assert json.loads(cruise("kv", "put", "a/1", '{"x": 1}', *to).stdout) == {"index": 1, "term": 2}
        assert cruise("kv", "put", "a/2", "two", *to).returncode == 0
        assert cruise("kv", "put", "b", "3", *to).returncode == 0
        assert json.loads(cruise("kv", "get", "a/1", *to).stdout) == {"x": 1}
        assert json.loads(cruise("kv", "get", "zz", *to).stdout) is None
        assert json.loads(cruise("kv", "keys", "a/", *to).stdout) == ["a/1", "a/2"]
        assert json.loads(cruise("kv", "keys", *to).stdout) == ["a/1", "a/2", "b"]
        out = json.loads(cruise("kv", "delete", "b", *to).stdout)
        assert out["existed"] is True and out["index"] == 4
        out = json.loads(cruise("kv", "cas", "a/2", "two", "[2]", *to).stdout)
        assert out == {"index": 5, "term": 2, "swapped": True}
        out = json.loads(cruise("kv", "cas", "a/2", "two", "3", *to).stdout)
        assert out["swapped"] is False
        assert json.loads(cruise("kv", "get", "a/2", *to).stdout) == [2]
        assert fc.log.values()[0] == {"put": "a/1", "value": {"x": 1}}
        assert fc.log.values()[4] == {"cas": "a/2", "expect": "two", "value": [2]}


def test_kv_put_value_from_stdin_and_file(tmp_path):
    with FakeCluster(1, kv=True) as fc:
        to = ["--to", fc.client_addresses[0]]
        assert cruise("kv", "put", "a", "-", *to, input='{"x": 1}').returncode == 0
        (tmp_path / "v").write_text("text")
        assert cruise("kv", "put", "b", f"@{tmp_path / 'v'}", *to).returncode == 0
        assert json.loads(cruise("kv", "get", "a", *to).stdout) == {"x": 1}
        assert json.loads(cruise("kv", "get", "b", *to).stdout) == "text"
        r = cruise("kv", "put", "c", f"@{tmp_path / 'gone'}", *to)
        assert r.returncode == 2
        assert_one_line_no_traceback(r)
        assert len(fc.log.values()) == 2


@pytest.mark.parametrize(
    "args",
    [
        ("put", "k", "1"),
        ("delete", "k"),
        ("cas", "k", "null", "1"),
        ("get", "k"),
        ("keys",),
    ],
)
def test_kv_commands_on_a_stream_cluster_write_nothing_and_say_so(args):
    with FakeCluster(1) as fc:  # no kv: queries are refused as the stream machine refuses them
        r = cruise("kv", *args, "--to", fc.client_addresses[0])
        assert r.returncode == 1
        assert r.stderr == "the cluster runs the stream state machine; set state_machine: kv\n"
        assert r.stdout == ""
        assert fc.log.values() == []


# -- run: the CLI's side of the Node contract, with a stand-in Node (cruise/node.py is the lead's) --


class _StandInNode:
    """Records what `cruise run` asks of a Node: from_config, open, run (blocks until stop), stop."""

    made: list[tuple] = []
    fail_with: BaseException | None = None
    calls: list[str] = []

    def __init__(self) -> None:
        import threading

        self.stopped = threading.Event()

    def open(self) -> None:
        self.calls.append("open")

    @classmethod
    def from_config(cls, path, id=None, **overrides):
        cls.made.append((str(path), id, overrides))
        if cls.fail_with is not None:
            raise cls.fail_with
        node = cls()
        cls.last = node
        return node

    def run(self) -> None:
        self.calls.append("run")
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would, while the member runs
        assert self.stopped.wait(10), "SIGTERM did not call node.stop()"

    def stop(self) -> None:
        self.stopped.set()


@pytest.fixture
def stand_in_node(monkeypatch):
    import types

    module = types.ModuleType("cruise.node")
    module.Node = _StandInNode
    _StandInNode.made = []
    _StandInNode.fail_with = None
    _StandInNode.calls = []
    monkeypatch.setitem(sys.modules, "cruise.node", module)
    # `cruise run` freezes the collector's view of the process once the member is open;
    # record that instead of freezing the test process.
    import cruise.cli

    monkeypatch.setattr(cruise.cli.gc, "freeze", lambda: _StandInNode.calls.append("gc.freeze"))
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield _StandInNode
    signal.signal(signal.SIGTERM, old[0])
    signal.signal(signal.SIGINT, old[1])


def test_run_calls_node_and_sigterm_stops_it(tmp_path, member, stand_in_node, capsys):
    from cruise.cli import main

    cfg = write_config(tmp_path, [member])
    assert main(["run", str(cfg), "--id", "f1", "--log-level", "warning"]) == 0
    assert stand_in_node.made == [(str(cfg), "f1", {})]
    assert stand_in_node.calls == ["open", "gc.freeze", "run"]
    assert stand_in_node.last.stopped.is_set()


def test_run_bind_failure_is_one_line_exit_2(tmp_path, member, stand_in_node, capsys):
    from brokerless import BindError
    from cruise.cli import main

    cfg = write_config(tmp_path, [member])
    stand_in_node.fail_with = BindError("tcp://127.0.0.1:19100", "Address already in use", 98)
    assert main(["run", str(cfg), "--id", "f1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {cfg}: members[0].raft: tcp://127.0.0.1:19100 is in use (another process listens "
        "there), so f1 cannot start; free it or change the address\n"
    )


# -- run and up with real members (cruise/node.py) -------------------------------------------------


def free_config(tmp_path: Path, n: int = 3, **taken: str) -> Path:
    """A config of n members on free loopback ports (``taken`` overrides n1's addresses)."""
    from brokerless.testing import free_tcp_addresses

    lines = ["members:"]
    free = iter(free_tcp_addresses(3 * n))
    for i in range(n):
        addr = {k: next(free) for k in ("raft", "client", "publish")}
        if i == 0:
            addr.update(taken)
        lines.append(
            f'  - {{id: n{i + 1}, raft: "{addr["raft"]}", client: "{addr["client"]}", publish: "{addr["publish"]}"}}'
        )
    lines.append('data_dir: "data/{id}"')
    path = tmp_path / "cluster.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _listen(address: str) -> socket.socket:
    """A plain TCP socket listening at ``address`` (tcp://HOST:PORT): another program's port."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, int(port)))
    s.listen()
    return s


def _members_of(cfg: Path) -> list[dict[str, str]]:
    import yaml

    return yaml.safe_load(cfg.read_text())["members"]


def _in_use_line(cfg: Path, i: int, key: str, address: str, id: str) -> str:
    return (
        f"error: {cfg}: members[{i}].{key}: {address} is in use (another process listens there), "
        f"so {id} cannot start; free it or change the address"
    )


def test_run_address_in_use_names_the_key_and_creates_no_data_dir(tmp_path):
    cfg = free_config(tmp_path)
    address = _members_of(cfg)[1]["client"]
    with _listen(address):
        r = cruise("run", str(cfg), "--id", "n2", "--log-level", "error")
    assert r.returncode == 2, r.stderr
    assert_one_line_no_traceback(r)
    assert r.stderr.strip() == _in_use_line(cfg, 1, "client", address, "n2")
    # The sockets bind before the WAL opens: a member that never started wrote nothing.
    assert not (tmp_path / "data").exists()


@pytest.fixture
def reap():
    """Config files whose processes are SIGKILLed at teardown: should `cruise up` start members
    and be killed at a test's timeout, they would outlive it (a passing test starts none)."""
    configs: list[Path] = []
    yield configs
    for cfg in configs:
        for pid in _processes_naming(str(cfg)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # already gone


def test_up_address_in_use_starts_nothing(tmp_path, reap):
    cfg = free_config(tmp_path)
    reap.append(cfg)
    address = _members_of(cfg)[2]["publish"]
    with _listen(address):
        r = cruise("up", str(cfg), timeout=20)
    assert r.returncode == 2, r.stderr
    assert_one_line_no_traceback(r)
    assert r.stderr.strip() == _in_use_line(cfg, 2, "publish", address, "n3")
    assert r.stdout == ""  # not even "starting": it checked first
    assert not (tmp_path / "data").exists()
    assert _processes_naming(str(cfg)) == set()


def _processes_naming(text: str) -> set[int]:
    """The pids of live processes whose command line contains ``text``."""
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmdline = (d / "cmdline").read_bytes()
            except OSError:
                continue  # ended while we looked
            if text.encode() in cmdline:
                found.add(int(d.name))
    return found


def _wait_cluster_up(p: subprocess.Popen[str]) -> dict[str, int]:
    """Read `cruise up`'s output up to its pid line; the members' pids by id."""
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while not lines or not lines[-1].startswith("cluster up: "):
        assert time.monotonic() < deadline, f"no leader reported within 60s: {lines}"
        lines += read_lines(p, 1, timeout=20)
    words = read_lines(p, 1)[0].split()  # "n1 pid P  n2 pid P  n3 pid P"
    return {id: int(pid) for id, pid in zip(words[0::3], words[2::3], strict=True)}


def test_up_when_the_cluster_already_runs_names_its_pids_and_starts_nothing(tmp_path, procs, reap):
    cfg = free_config(tmp_path)
    reap.append(cfg)
    first = spawn(procs, "up", str(cfg))
    pids = _wait_cluster_up(first)
    before = _processes_naming(str(cfg))
    assert before == {first.pid, *pids.values()}
    r = cruise("up", str(cfg), timeout=20)
    assert r.returncode == 1, r.stderr
    assert_one_line_no_traceback(r)
    running = ", ".join(f"{id} pid {pid}" for id, pid in pids.items())
    assert r.stderr.strip() == (
        f"error: the cluster in {cfg} is already running ({running}); "
        "stop it with Ctrl-C in its terminal or kill those pids"
    )
    assert r.stdout == ""  # no "cluster up" from the members it did not start
    assert _processes_naming(str(cfg)) == before
    # `cruise run` of a member that runs says so too, rather than that its address is taken.
    r = cruise("run", str(cfg), "--id", "n2", "--log-level", "error")
    assert r.returncode == 1, r.stderr
    assert_one_line_no_traceback(r)
    assert (
        r.stderr.strip() == f"error: {cfg}: n2 is already running (pid {pids['n2']}); stop that process first"
    )
    assert cruise("status", "--config", str(cfg)).returncode == 0  # the first cluster is untouched


def test_up_when_members_answer_at_its_addresses_says_so(tmp_path, member, reap):
    cfg = free_config(tmp_path, client=member.client_address)  # a member answers as n1, from elsewhere
    reap.append(cfg)
    r = cruise("up", str(cfg), timeout=20)
    assert r.returncode == 1, r.stderr
    assert_one_line_no_traceback(r)
    assert r.stderr.strip() == (
        f"error: part of the cluster in {cfg} is already running (n1 answering at "
        f"{member.client_address}); stop it with Ctrl-C in its terminal, then run `cruise up` again"
    )
    assert r.stdout == ""
    assert not (tmp_path / "data").exists()


def test_up_starts_members_reports_leader_and_stops_them_on_ctrl_c(tmp_path, procs):
    cfg = free_config(tmp_path)
    p = spawn(procs, "up", str(cfg))
    lines = []
    while not lines or not lines[-1].startswith("cluster up: "):
        lines += read_lines(p, 1, timeout=20)
    assert lines[0] == "starting 3 members: n1 n2 n3 (waiting up to 15s for a leader)"
    assert lines[-1].endswith("members n1 n2 n3; Ctrl-C stops them")
    pids = read_lines(p, 1)[0].split()  # "n1 pid P  n2 pid P  n3 pid P", for the quickstart's kill
    assert pids[0::3] == ["n1", "n2", "n3"] and all(x.isdigit() for x in pids[2::3])
    r = cruise("record", "via-up", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    p.send_signal(signal.SIGINT)
    assert p.wait(15) == 0
    assert read_lines(p, 1) == ["stopping 3 members"]
    r = cruise("status", "--config", str(cfg), "--json", "--timeout", "0.5")
    assert r.returncode == 1  # every member is gone
    assert all(row["error"] == "unreachable" for row in json.loads(r.stdout))


def test_up_runs_a_secured_cluster_and_a_keyed_record_reaches_it(tmp_path, procs):
    """`up` holds every member's secret key: it asks for status as a member would, and the
    cluster it starts admits only keyed clients."""
    import yaml

    from cruise.security import generate, load_secret

    cfg = free_config(tmp_path)
    for i in ("n1", "n2", "n3"):
        generate(tmp_path / "keys", i)
    generate(tmp_path / "clients", "alice")
    data = yaml.safe_load(cfg.read_text())
    for m in data["members"]:
        m["public_key"] = load_secret(tmp_path / "keys" / f"{m['id']}.key_secret")[0].decode()
    data["security"] = {"curve": True, "secret_key_file": "keys/{id}.key_secret"}
    data["clients"] = {"authorized_keys": "clients"}
    cfg.write_text(yaml.safe_dump(data))
    p = spawn(procs, "up", str(cfg))
    _wait_cluster_up(p)
    key = str(tmp_path / "clients" / "alice.key_secret")
    r = cruise("record", "secured-via-up", "--config", str(cfg), "--key", key)
    assert r.returncode == 0 and '"index"' in r.stdout, r.stderr
    plain = cruise("record", "plain", "--config", str(cfg), "--timeout", "1")
    assert plain.returncode == 1, plain.stdout
    again = cruise("up", str(cfg), timeout=20)  # a second `up` sees it running
    assert again.returncode == 1 and "already running" in again.stderr, again.stderr
    p.send_signal(signal.SIGINT)
    assert p.wait(15) == 0
