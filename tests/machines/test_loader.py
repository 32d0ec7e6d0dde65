"""Loading a state machine from ``state_machine``: built-in names, class references, and refusals
(one line naming ``state_machine`` and the config file, before anything is opened)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cruise import Node
from cruise.config import ConfigError
from cruise.fsm import StateMachine, StreamMachine
from cruise.machines import KVMachine, MachineError, check_machine, load_machine
from tests.integration.cluster import Cluster

from . import sample

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "tests.machines.sample"


def test_builtin_names():
    assert type(load_machine("stream")) is StreamMachine
    assert type(load_machine("kv")) is KVMachine
    assert load_machine("kv") is not load_machine("kv")  # a new machine each time


def test_a_class_reference_makes_an_instance():
    m = load_machine(f"{SAMPLE}:Tally")
    assert type(m) is sample.Tally
    assert m.apply(5, 1) == {"count": 1, "total": 5}


def test_a_nested_class_and_a_duck_typed_class():
    assert type(load_machine(f"{SAMPLE}:Outer.Inner")) is sample.Outer.Inner
    assert type(load_machine(f"{SAMPLE}:Duck")) is sample.Duck


@pytest.fixture
def modules_dir(tmp_path, monkeypatch):
    """A folder on sys.path with a module that fails to import and one whose import of a
    dependency fails."""
    d = tmp_path / "mods"
    d.mkdir()
    (d / "cruise_test_broken.py").write_text('raise RuntimeError("this module refuses to import")\n')
    (d / "cruise_test_needs_dep.py").write_text("import cruise_test_no_such_dependency\n")
    (d / "cruise_test_bad_syntax.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(d))
    yield d
    for name in ("cruise_test_broken", "cruise_test_needs_dep", "cruise_test_bad_syntax"):
        sys.modules.pop(name, None)


REFUSALS = [
    ("sql", "must be stream, kv or package.module:Class, got 'sql'"),
    ("no_such_pkg_x.mod:Class", "no module named 'no_such_pkg_x'"),
    (f"{SAMPLE}_missing:Tally", "no module named 'tests.machines.sample_missing'"),
    (f"{SAMPLE}:Nope", "tests.machines.sample has no Nope"),
    (f"{SAMPLE}:Outer.Nope", "tests.machines.sample has no Outer.Nope"),
    (f"{SAMPLE}:NOT_A_CLASS", "NOT_A_CLASS is not a class (it is a Tally)"),
    (f"{SAMPLE}:NoQuery", "NoQuery is not a state machine: it lacks query"),
    (f"{SAMPLE}:Exploding", "Exploding() failed: RuntimeError: no database at db.example"),
    (f"{SAMPLE}:NeedsArgs", "NeedsArgs() failed: TypeError:"),
    ("cruise_test_broken:X", "importing cruise_test_broken failed: RuntimeError: this module refuses"),
    ("cruise_test_needs_dep:X", "importing cruise_test_needs_dep failed: ModuleNotFoundError:"),
    ("cruise_test_bad_syntax:X", "importing cruise_test_bad_syntax failed: SyntaxError:"),
]


@pytest.mark.parametrize("name,message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_are_one_line(name, message, modules_dir):
    with pytest.raises(MachineError) as e:
        load_machine(name)
    text = str(e.value)
    assert message in text
    assert "\n" not in text


def test_a_missing_module_says_it_must_be_importable():
    with pytest.raises(MachineError, match="installed, or on PYTHONPATH"):
        load_machine("no_such_pkg_x:Class")


def test_check_machine():
    kv = KVMachine()
    assert check_machine(kv) is kv
    duck = sample.Duck()
    assert check_machine(duck) is duck
    with pytest.raises(MachineError, match="got the class KVMachine, not an instance"):
        check_machine(KVMachine)
    with pytest.raises(MachineError, match="it lacks apply, query, snapshot, restore"):
        check_machine(object())


# -- through Node.from_config ------------------------------------------------------------------


def _config(tmp_path: Path, **settings) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return str(Cluster(tmp_path, **settings).config_path)  # writes the file; starts nothing


@pytest.mark.parametrize(
    "setting,expected", [("stream", StreamMachine), ("kv", KVMachine), (f"{SAMPLE}:Tally", sample.Tally)]
)
def test_from_config_makes_the_configured_machine(tmp_path, setting, expected):
    node = Node.from_config(_config(tmp_path, state_machine=setting), id="n1")
    assert type(node.machine) is expected
    assert not (tmp_path / "data").exists()  # nothing opened


def test_from_config_argument_wins_over_the_file(tmp_path):
    path = _config(tmp_path)  # the file says nothing: stream
    assert type(Node.from_config(path, id="n1").machine) is StreamMachine
    node = Node.from_config(path, id="n1", state_machine="kv")
    assert type(node.machine) is KVMachine and node.config.state_machine == "kv"
    assert type(Node.from_config(path, id="n1", state_machine=f"{SAMPLE}:Tally").machine) is sample.Tally
    mine = sample.Tally()
    assert Node.from_config(path, id="n1", state_machine=mine).machine is mine
    duck = sample.Duck()
    assert Node.from_config(path, id="n1", state_machine=duck).machine is duck
    # None means "what the config says".
    kv_path = _config(tmp_path / "other", state_machine="kv")
    assert type(Node.from_config(kv_path, id="n1", state_machine=None).machine) is KVMachine


@pytest.mark.parametrize(
    "setting,message",
    [
        (f"{SAMPLE}:Exploding", "Exploding() failed: RuntimeError: no database at db.example"),
        ("nowhere_x.machines:Counter", "no module named 'nowhere_x'"),
    ],
)
def test_from_config_refusal_is_a_config_error_naming_key_and_file(tmp_path, setting, message):
    path = _config(tmp_path, state_machine=setting)
    with pytest.raises(ConfigError) as e:
        Node.from_config(path, id="n1")
    assert e.value.key == "state_machine"
    assert e.value.file == path
    assert str(e.value).startswith(f"{path}: state_machine: ")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "data").exists()


def test_from_config_refuses_what_is_not_a_machine(tmp_path):
    path = _config(tmp_path)
    with pytest.raises(ConfigError, match="state_machine: got the class KVMachine"):
        Node.from_config(path, id="n1", state_machine=KVMachine)
    with pytest.raises(ConfigError, match="state_machine: .*no module named 'nope_x'"):
        Node.from_config(path, id="n1", state_machine="nope_x:Machine")


# -- through `cruise run` ----------------------------------------------------------------------


def _run(config: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "cruise", "run", config, "--id", "n1"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(Path(config).parent),
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "setting,message",
    [
        (f"{SAMPLE}:NoQuery", "NoQuery is not a state machine: it lacks query"),
        (f"{SAMPLE}:Exploding", "Exploding() failed: RuntimeError: no database at db.example"),
        ("no_such_pkg_x.mod:Class", "no module named 'no_such_pkg_x'"),
    ],
)
def test_cruise_run_refuses_a_bad_machine_with_one_line_exit_2_before_opening(tmp_path, setting, message):
    path = _config(tmp_path, state_machine=setting)
    r = _run(path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {path}: state_machine: ")
    assert message in lines[0]
    assert not (tmp_path / "data").exists()  # no storage opened
    assert "member_started" not in r.stdout


def test_is_a_state_machine_subclass():
    assert issubclass(KVMachine, StateMachine) and issubclass(sample.Tally, StateMachine)
