"""cruise.config: strict YAML -> ClusterConfig (contract section 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cruise.config import (
    ClusterConfig,
    ConfigError,
    MemberSpec,
    check_address,
    check_member_id,
    load_config,
    parse_value,
)
from cruise.timing import CoreTiming, core_timing

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parent.parent

MEMBERS = """\
members:
  - {id: n1, raft: "tcp://127.0.0.1:7101", client: "tcp://127.0.0.1:7201", publish: "tcp://127.0.0.1:7301"}
  - {id: n2, raft: "tcp://127.0.0.1:7102", client: "tcp://127.0.0.1:7202", publish: "tcp://127.0.0.1:7302"}
  - {id: n3, raft: "tcp://127.0.0.1:7103", client: "tcp://127.0.0.1:7203", publish: "tcp://127.0.0.1:7303"}
"""


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- the good config -----------------------------------------------------------------------------


def test_local_yaml_loads_with_defaults():
    cfg = load_config(REPO / "configs" / "local.yaml", id="n1")
    assert [m.id for m in cfg.members] == ["n1", "n2", "n3"]
    assert cfg.me == MemberSpec("n1", "tcp://127.0.0.1:7101", "tcp://127.0.0.1:7201", "tcp://127.0.0.1:7301")
    assert cfg.client_addresses() == ["tcp://127.0.0.1:7201", "tcp://127.0.0.1:7202", "tcp://127.0.0.1:7203"]
    assert cfg.data_dir == REPO / "configs" / "data" / "n1"
    assert (cfg.heartbeat_ms, cfg.election_timeout_ms, cfg.fsync, cfg.state_machine) == (
        50,
        (300, 600),
        True,
        "stream",
    )


def test_minimal_file_gets_every_default(tmp_path):
    cfg = load_config(write(tmp_path, MEMBERS + "id: n2\n"))
    assert isinstance(cfg, ClusterConfig)
    assert cfg.id == "n2"
    assert cfg.heartbeat_ms == 50
    assert cfg.election_timeout_ms == (300, 600)
    assert cfg.fsync is True
    assert cfg.state_machine == "stream"
    assert cfg.snapshot_every == 10000
    assert cfg.retain_entries == 100000
    assert cfg.max_value_bytes == 1048576
    assert cfg.request_timeout_ms == 5000
    assert cfg.join is False
    assert cfg.data_dir == tmp_path / "data" / "n2"
    assert all(m.voter for m in cfg.members)
    assert cfg.member("n3").publish == "tcp://127.0.0.1:7303"
    assert cfg.member("n9") is None


def test_every_key_set(tmp_path):
    text = MEMBERS + (
        "id: n3\ndata_dir: /var/lib/cruise/{id}\nheartbeat_ms: 20\nelection_timeout_ms: [100, 200]\n"
        "fsync: false\nstate_machine: kv\nsnapshot_every: 5\nretain_entries: 0\nmax_value_bytes: 64\n"
        "request_timeout_ms: 250\njoin: false\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.data_dir == Path("/var/lib/cruise/n3")
    assert (cfg.heartbeat_ms, cfg.election_timeout_ms, cfg.fsync) == (20, (100, 200), False)
    assert (cfg.state_machine, cfg.snapshot_every, cfg.retain_entries) == ("kv", 5, 0)
    assert (cfg.max_value_bytes, cfg.request_timeout_ms) == (64, 250)


def test_class_reference_state_machine(tmp_path):
    cfg = load_config(write(tmp_path, MEMBERS + "state_machine: my_pkg.machines:Counter\n"), id="n1")
    assert cfg.state_machine == "my_pkg.machines:Counter"


def test_data_dir_is_relative_to_the_config_folder_not_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "etc"
    sub.mkdir()
    path = write(sub, MEMBERS + 'data_dir: "../state/{id}/raft"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("etc") / "cluster.yaml", id="n2")
    assert cfg.data_dir == tmp_path / "state" / "n2" / "raft"
    assert cfg.data_dir.is_absolute()
    assert cfg.path == Path("etc/cluster.yaml")  # as the user named it, for messages
    assert cfg.data_dir_for("n3") == tmp_path / "state" / "n3" / "raft"
    assert load_config(path, id="n1").data_dir == tmp_path / "state" / "n1" / "raft"


def test_data_dir_without_id_keeps_the_template(tmp_path):
    cfg = load_config(write(tmp_path, MEMBERS), require_id=False)
    assert cfg.id is None
    assert cfg.data_dir == tmp_path / "data" / "{id}"
    assert cfg.data_dir_for("n1") == tmp_path / "data" / "n1"
    with pytest.raises(ConfigError) as e:
        _ = cfg.me
    assert e.value.key == "id"


def test_id_argument_wins_over_the_file(tmp_path):
    path = write(tmp_path, MEMBERS + "id: n1\n")
    assert load_config(path).id == "n1"
    cfg = load_config(path, id="n3")
    assert cfg.id == "n3"
    assert cfg.me.id == "n3"
    assert cfg.data_dir == tmp_path / "data" / "n3"


def test_join_argument_wins_over_the_file(tmp_path):
    path = write(tmp_path, MEMBERS + "id: n1\njoin: false\n")
    assert load_config(path, join=True).join is True
    assert load_config(write(tmp_path, MEMBERS + "join: true\n", "j.yaml"), id="n1", join=False).join is False


def test_joining_member_needs_only_its_entry_and_one_member(tmp_path):
    text = """\
members:
  - {id: n1, raft: "tcp://127.0.0.1:7101", client: "tcp://127.0.0.1:7201", publish: "tcp://127.0.0.1:7301"}
  - {id: n4, raft: "tcp://127.0.0.1:7104", client: "tcp://127.0.0.1:7204", publish: "tcp://127.0.0.1:7304"}
id: n4
join: true
"""
    cfg = load_config(write(tmp_path, text))
    assert cfg.join is True
    assert cfg.me.id == "n4"
    assert cfg.client_addresses() == ["tcp://127.0.0.1:7201", "tcp://127.0.0.1:7204"]


def test_client_side_load_needs_no_id(tmp_path):
    cfg = load_config(write(tmp_path, MEMBERS), require_id=False)
    assert cfg.client_addresses()[0] == "tcp://127.0.0.1:7201"


def test_ipc_and_inproc_addresses(tmp_path):
    text = """\
members:
  - {id: a, raft: "ipc:///tmp/cruise-a-raft", client: "inproc://a-client", publish: "tcp://[::1]:7301"}
id: a
"""
    cfg = load_config(write(tmp_path, text))
    assert cfg.me.raft == "ipc:///tmp/cruise-a-raft"


def test_member_voter_flag_and_to_dict(tmp_path):
    text = (
        MEMBERS + '  - {id: n4, raft: "tcp://h:1", client: "tcp://h:2", publish: "tcp://h:3", voter: false}\n'
    )
    cfg = load_config(write(tmp_path, text), id="n4")
    assert cfg.me.voter is False
    assert cfg.me.to_dict() == {
        "id": "n4",
        "raft": "tcp://h:1",
        "client": "tcp://h:2",
        "publish": "tcp://h:3",
        "voter": False,
    }
    assert MemberSpec.from_dict(cfg.me.to_dict()) == cfg.me


# -- bad configs: each names the right key and the file -----------------------------------------

M1 = '{id: n1, raft: "tcp://127.0.0.1:7101", client: "tcp://127.0.0.1:7201", publish: "tcp://127.0.0.1:7301"}'
M2 = '{id: n2, raft: "tcp://127.0.0.1:7102", client: "tcp://127.0.0.1:7202", publish: "tcp://127.0.0.1:7302"}'


def two(second: str = M2, extra: str = "id: n1\n") -> str:
    return f"members:\n  - {M1}\n  - {second}\n{extra}"


BAD = [
    # (name, file text, key in the error, words in the message)
    ("empty file", "", None, "empty file"),
    ("invalid yaml", "members: [\n", None, "invalid YAML"),
    ("tab indentation", "members:\n\t- x\n", None, "invalid YAML"),
    ("top level a list", "- 1\n- 2\n", None, "top level must be a map"),
    ("top level a scalar", "hello\n", None, "top level must be a map"),
    ("unknown top key", two(extra="id: n1\nheartbeat: 50\n"), "heartbeat", "did you mean heartbeat_ms"),
    ("duplicate top key", two(extra="id: n1\nfsync: true\nfsync: false\n"), "fsync", "duplicate key"),
    ("missing members", "id: n1\n", "members", "missing"),
    ("members not a list", "members: {id: n1}\nid: n1\n", "members", "non-empty list"),
    ("members empty", "members: []\nid: n1\n", "members", "non-empty list"),
    ("member not a map", "members:\n  - n1\nid: n1\n", "members[0]", "must be a map"),
    ("unknown member key", two(M2[:-1] + ", raf: x}"), "members[1].raf", "unknown key"),
    (
        "missing member field",
        two('{id: n2, raft: "tcp://h:1", client: "tcp://h:2"}'),
        "members[1].publish",
        "missing",
    ),
    (
        "member id an int",
        two('{id: 2, raft: "tcp://h:1", client: "tcp://h:2", publish: "tcp://h:3"}'),
        "members[1].id",
        "string",
    ),
    (
        "member id with a slash",
        two('{id: a/b, raft: "tcp://h:1", client: "tcp://h:2", publish: "tcp://h:3"}'),
        "members[1].id",
        "letters",
    ),
    ("member voter not bool", two(M2[:-1] + ", voter: 1}"), "members[1].voter", "true or false"),
    (
        "duplicate id",
        two(M1.replace("710", "810").replace("720", "820").replace("730", "830")),
        "members[1].id",
        "duplicate id n1",
    ),
    (
        "duplicate address",
        two(M2.replace("7102", "7101")),
        "members[1].raft",
        "duplicate address tcp://127.0.0.1:7101 (also members[0].raft)",
    ),
    (
        "duplicate address across fields",
        two(M2.replace("7302", "7201")),
        "members[1].publish",
        "also members[0].client",
    ),
    (
        "same address twice in a member",
        two(M2.replace("7202", "7102")),
        "members[1].client",
        "also members[1].raft",
    ),
    (
        "address without scheme",
        two(M2.replace("tcp://127.0.0.1:7102", "127.0.0.1:7102")),
        "members[1].raft",
        "not a ZeroMQ address",
    ),
    (
        "address http",
        two(M2.replace("tcp://127.0.0.1:7102", "http://127.0.0.1:7102")),
        "members[1].raft",
        "not a ZeroMQ address",
    ),
    (
        "tcp without port",
        two(M2.replace("tcp://127.0.0.1:7102", "tcp://127.0.0.1")),
        "members[1].raft",
        "tcp://host:port",
    ),
    ("tcp port too big", two(M2.replace("7102", "71020")), "members[1].raft", "out of range"),
    (
        "tcp wildcard host",
        two(M2.replace("tcp://127.0.0.1:7102", "tcp://*:7102")),
        "members[1].raft",
        "wildcard",
    ),
    ("empty ipc", two(M2.replace("tcp://127.0.0.1:7102", "ipc://")), "members[1].raft", "empty"),
    (
        "address not a string",
        two(M2.replace('"tcp://127.0.0.1:7102"', "7102")),
        "members[1].raft",
        "must be a string",
    ),
    ("id not in members", two(extra="id: n9\n"), "id", "n9 is not in members (n1, n2)"),
    ("no id at all", two(extra=""), "id", "pass --id"),
    ("id an int", two(extra="id: 1\n"), "id", "must be a string"),
    ("heartbeat zero", two(extra="id: n1\nheartbeat_ms: 0\n"), "heartbeat_ms", "positive int"),
    ("heartbeat a bool", two(extra="id: n1\nheartbeat_ms: true\n"), "heartbeat_ms", "got true"),
    ("heartbeat a float", two(extra="id: n1\nheartbeat_ms: 50.0\n"), "heartbeat_ms", "positive int"),
    ("heartbeat a string", two(extra="id: n1\nheartbeat_ms: '50'\n"), "heartbeat_ms", "positive int"),
    (
        "election one number",
        two(extra="id: n1\nelection_timeout_ms: 300\n"),
        "election_timeout_ms",
        "two ints",
    ),
    (
        "election three numbers",
        two(extra="id: n1\nelection_timeout_ms: [1, 2, 3]\n"),
        "election_timeout_ms",
        "two ints",
    ),
    (
        "election bools",
        two(extra="id: n1\nelection_timeout_ms: [true, 600]\n"),
        "election_timeout_ms",
        "two ints",
    ),
    (
        "election lo > hi",
        two(extra="id: n1\nelection_timeout_ms: [600, 300]\n"),
        "election_timeout_ms",
        "lo <= hi",
    ),
    (
        "election lo zero",
        two(extra="id: n1\nelection_timeout_ms: [0, 300]\n"),
        "election_timeout_ms",
        "0 < lo",
    ),
    (
        "election not above heartbeat",
        two(extra="id: n1\nheartbeat_ms: 100\nelection_timeout_ms: [100, 200]\n"),
        "election_timeout_ms",
        "larger than heartbeat_ms (100)",
    ),
    (
        # Above the heartbeat in milliseconds, but both are 2 ticks of 10 ms for the core.
        "election not above heartbeat in ticks",
        two(extra="id: n1\nheartbeat_ms: 25\nelection_timeout_ms: [26, 40]\n"),
        "election_timeout_ms",
        "it must be at least 30 ms",
    ),
    ("fsync a string", two(extra="id: n1\nfsync: 'no'\n"), "fsync", "true or false"),
    ("fsync an int", two(extra="id: n1\nfsync: 0\n"), "fsync", "true or false"),
    ("join an int", two(extra="id: n1\njoin: 1\n"), "join", "true or false"),
    (
        "state machine unknown",
        two(extra="id: n1\nstate_machine: sql\n"),
        "state_machine",
        "package.module:Class",
    ),
    (
        "state machine bad ref",
        two(extra="id: n1\nstate_machine: 'pkg.mod:'\n"),
        "state_machine",
        "package.module:Class",
    ),
    ("snapshot_every negative", two(extra="id: n1\nsnapshot_every: -1\n"), "snapshot_every", "positive int"),
    ("retain_entries negative", two(extra="id: n1\nretain_entries: -1\n"), "retain_entries", "int >= 0"),
    (
        "max_value_bytes a bool",
        two(extra="id: n1\nmax_value_bytes: false\n"),
        "max_value_bytes",
        "positive int",
    ),
    (
        "request_timeout_ms null",
        two(extra="id: n1\nrequest_timeout_ms: null\n"),
        "request_timeout_ms",
        "got null",
    ),
    ("data_dir a list", two(extra="id: n1\ndata_dir: [a]\n"), "data_dir", "non-empty string"),
    ("data_dir other field", two(extra="id: n1\ndata_dir: 'data/{name}'\n"), "data_dir", "only {id}"),
    ("data_dir broken braces", two(extra="id: n1\ndata_dir: 'data/{id'\n"), "data_dir", "bad template"),
    ("no voter", f"members:\n  - {M1[:-1]}, voter: false}}\nid: n1\n", "members", "voter"),
    ("joiner alone", f"members:\n  - {M1}\nid: n1\njoin: true\n", "members", "at least one existing member"),
]


@pytest.mark.parametrize(("text", "key", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_names_key_and_file(tmp_path, text, key, words):
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    err = e.value
    assert err.key == key
    assert err.file == str(path)
    line = str(err)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    if key is not None:
        assert line.startswith(f"{path}: {key}: ")
    assert words in line


def test_duplicate_address_message_is_exact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs", two(M2.replace("7102", "7101")), "x.yaml")
    with pytest.raises(ConfigError) as e:
        load_config("configs/x.yaml")
    assert str(e.value) == (
        "configs/x.yaml: members[1].raft: duplicate address tcp://127.0.0.1:7101 (also members[0].raft)"
    )


def test_id_argument_not_a_member(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, MEMBERS + "id: n1\n"), id="n7")
    assert e.value.key == "id"
    assert "n7 (from --id) is not in members" in str(e.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.file == str(path)
    assert e.value.key is None
    assert str(e.value) == f"{path}: no such file"


def test_directory_and_binary_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_unreadable_file(tmp_path, monkeypatch):
    p = write(tmp_path, MEMBERS + "id: n1\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)  # chmod 0 does not stop root
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: cannot read: Permission denied"


def test_yaml_error_is_one_line_with_position(tmp_path):
    path = write(tmp_path, "members:\n  - {id: n1\n  bad: [\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "\n" not in str(e.value)
    assert "line " in str(e.value)


# -- timing: the election bound is checked in the core's ticks, as the core checks it ------------


def test_election_bound_is_checked_in_core_ticks(tmp_path):
    """The core needs the election timeout's lower bound above the heartbeat in ticks (10 ms
    each here); load_config refuses what the core would refuse, before anything opens."""
    bad = write(tmp_path, two(extra="id: n1\nheartbeat_ms: 25\nelection_timeout_ms: [26, 40]\n"))
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert e.value.key == "election_timeout_ms" and e.value.file == str(bad)
    assert str(e.value) == (
        f"{bad}: election_timeout_ms: election timeout lower bound 26 ms is 2 ticks of 10 ms,"
        " not more than the 2 ticks of the 25 ms heartbeat: it must be at least 30 ms"
    )
    good = write(tmp_path, two(extra="id: n1\nheartbeat_ms: 25\nelection_timeout_ms: [30, 40]\n"), "ok.yaml")
    cfg = load_config(good)
    assert core_timing(cfg.heartbeat_ms, cfg.election_timeout_ms) == CoreTiming(10, 2, (3, 4))


@pytest.mark.parametrize(
    ("heartbeat_ms", "election_ms", "timing"),
    [
        (50, (300, 600), CoreTiming(10, 5, (30, 60))),  # the defaults
        (20, (100, 200), CoreTiming(10, 2, (10, 20))),
        (25, (30, 40), CoreTiming(10, 2, (3, 4))),  # rounded down to whole ticks
        (10, (15, 35), CoreTiming(10, 1, (2, 3))),
        (50, (60, 70), CoreTiming(10, 5, (6, 7))),  # the smallest lower bound for 50 ms
        (5, (6, 20), CoreTiming(5, 1, (2, 4))),  # a heartbeat under 10 ms is the tick
        (1, (2, 3), CoreTiming(1, 1, (2, 3))),
    ],
)
def test_core_timing(heartbeat_ms, election_ms, timing):
    assert core_timing(heartbeat_ms, election_ms) == timing


@pytest.mark.parametrize(
    ("heartbeat_ms", "election_ms", "words"),
    [
        (25, (26, 40), "26 ms is 2 ticks of 10 ms, not more than the 2 ticks of the 25 ms heartbeat"),
        (50, (59, 600), "it must be at least 60 ms"),
        (100, (100, 200), "it must be at least 110 ms"),
        (0, (300, 600), "at least 1 ms"),
        (50, (600, 300), "0 < lo <= hi"),
        (50, (0, 300), "0 < lo <= hi"),
        # No randomization left once rounded (§5.2): every member would time out together.
        (20, (100, 100), "10 ticks of 10 ms at both ends"),
        (50, (225, 229), "22 ticks of 10 ms at both ends: it must be randomized"),
    ],
)
def test_core_timing_refuses(heartbeat_ms, election_ms, words):
    with pytest.raises(ValueError) as e:
        core_timing(heartbeat_ms, election_ms)
    assert "\n" not in str(e.value)
    assert words in str(e.value)


def test_run_refuses_election_bound_too_close_in_ticks(tmp_path):
    """`cruise run` on such a file: exit 2 and one line naming the key, before the data
    directory is created (the core used to refuse it only after storage was opened)."""
    from brokerless.testing import free_tcp_addresses

    free = iter(free_tcp_addresses(6))
    lines = ["members:"]
    for i in (1, 2):
        raft, client, publish = next(free), next(free), next(free)
        lines.append(f'  - {{id: n{i}, raft: "{raft}", client: "{client}", publish: "{publish}"}}')
    lines += ['data_dir: "data/{id}"', "heartbeat_ms: 25", "election_timeout_ms: [26, 40]"]
    cfg = write(tmp_path, "\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(
        [sys.executable, "-m", "cruise", "run", str(cfg), "--id", "n1", "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: {cfg}: election_timeout_ms: "), r.stderr
    assert not (tmp_path / "data").exists()


# -- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("-2.5", -2.5),
        ('"x"', "x"),
        ("hello", "hello"),
        ('{"a":1}', {"a": 1}),
        ("[1, null, true]", [1, None, True]),
        ("null", None),
        ("true", True),
        ("", ""),
        ("  ", "  "),
        ("NaN", "NaN"),
        ("{a:1}", "{a:1}"),
        ("3 apples", "3 apples"),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


@pytest.mark.parametrize(
    "address",
    [
        "tcp://127.0.0.1:7101",
        "tcp://example.com:1",
        "tcp://[::1]:65535",
        "ipc:///tmp/x",
        "ipc://@abstract",
        "inproc://x",
    ],
)
def test_good_addresses(address):
    assert check_address(address) is None


@pytest.mark.parametrize(
    "address",
    ["", "tcp://", "tcp://h", "tcp://h:0", "tcp://h:65536", "tcp://*:1", "tcp://h:*", "tcp://h :1", "udp://h:1",
     "ipc://", "inproc://", "h:1", None, 7101],
)  # fmt: skip
def test_bad_addresses(address):
    assert check_address(address) is not None


def test_member_id_rule():
    assert check_member_id("n1") is None
    assert check_member_id("node-1.a_b") is None
    for bad in ("", "-x", ".", "..", "a/b", "a b", 1, None):
        assert check_member_id(bad) is not None


def test_config_error_pickles_and_keeps_its_line():
    import pickle

    err = ConfigError("members[0].raft", "bad\naddress", "configs/x.yaml")
    assert str(err) == "configs/x.yaml: members[0].raft: bad address"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.key, copy.file, str(copy)) == (err.key, err.file, str(err))
    assert str(ConfigError(None, "no such file", "c.yaml")) == "c.yaml: no such file"
