"""Smoke test of ``tools/bench``: it starts a real cluster, drives it, reports, cleans up.

No speed is asserted anywhere (a shared 2-core machine is too noisy): only that the JSON
line has the documented shape and that records were acknowledged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench"


def run_bench(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_quick_run_reports_acknowledged_records() -> None:
    p = run_bench("--quick", "--workloads", "external,single", "--json-only")
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, p.stdout  # --json-only: the JSON line and nothing else
    report = json.loads(lines[0])

    assert report["bench"] == "cruise"
    assert report["ok"] is True
    assert {"nproc", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    settings = report["settings"]
    assert settings["runs"] == 1 and settings["seconds"] == 1.0 and settings["fsync"] is True
    assert settings["workloads"] == ["external", "single"]
    assert report["systems"]["cruise"]["status"] == "ok"

    for workload in ("external", "single"):
        fig = report["results"][workload]["cruise"]
        assert {"records_per_s", "p50_ms", "p99_ms", "acknowledged", "errors", "runs"} <= set(fig)
        assert fig["acknowledged"] > 0
        assert fig["records_per_s"] > 0
        assert fig["p50_ms"] is not None and fig["p99_ms"] >= fig["p50_ms"]
        assert len(fig["runs"]) == 1

    names = {t["name"]: t for t in report["targets"]}
    assert {"external_vs_etcd", "single_p50_vs_etcd", "halfload_p99", "memory_rss"} <= set(names)
    assert names["external_vs_etcd"]["verdict"] == "n/a"  # etcd was not asked for
    assert set(report["rss_mb_end"]["cruise"]) == {"n1", "n2", "n3"}


def test_bad_option_is_one_line_and_exit_2() -> None:
    p = run_bench("--runs", "0", timeout=60)
    assert p.returncode == 2
    assert p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert len(err) == 1, p.stderr
    assert "--runs" in err[0]
    assert "Traceback" not in p.stderr
