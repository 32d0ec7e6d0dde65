"""Smoke test of ``tools/chaos``: one short seeded run against real members in namespaces.

It runs the tool as a user would and holds it to its contract: exit 0, and a report that
names the seed and at least one fault it applied. Where the machine cannot build the network
(not root, no ``ip`` or ``nft``) the tool exits 77 and the test is skipped with its one line.
The checkers themselves have their own tests; this one shows the harness wires them to a
real cluster and cleans up after itself (no namespace of its run is left behind).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED = 1

pytestmark = pytest.mark.timeout(150)


def test_chaos_run_passes_and_reports_its_seed_and_faults():
    argv = [sys.executable, str(ROOT / "tools" / "chaos"), "--seed", str(SEED), "--duration", "20"]
    argv += ["--members", "3", "--workload", "log"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=140, cwd=ROOT)
    if run.returncode == 77:
        pytest.skip(run.stdout.strip() or run.stderr.strip())
    out = run.stdout
    assert run.returncode == 0, f"exit {run.returncode}\n{out}\n{run.stderr[-3000:]}"
    assert out.startswith("PASS: "), out
    assert f"seed {SEED}," in out and f"--seed {SEED} " in out, out
    applied = re.findall(r"^\s+\d+\.\d+s (kill|pause|partition|oneway|bridge|transfer)\b", out, re.M)
    assert applied, f"no fault in the schedule:\n{out}"
    hub = re.search(r"hub (chaos-\d+-hub)", out)
    assert hub, out
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert hub.group(1) not in left, f"the run left its namespaces behind:\n{left}"
