"""Smoke test of ``tools/bench``: it starts a real cluster, drives it, reports, cleans up.

No speed is asserted anywhere (a shared 2-core machine is too noisy): only that the JSON
line has the documented shape (the floor workload, the members' CPU per record) and that
records were acknowledged. Needs neither etcd nor PySyncObj.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench"
sys.path.insert(0, str(ROOT / "tools"))

from benchlib.cruise_side import RecordBodies  # noqa: E402
from benchlib.kv_cruise import PUT_OK, GetBodies, PutBodies  # noqa: E402
from benchlib.kv_keys import key_index, preload_share  # noqa: E402
from benchlib.procs import cpu_seconds  # noqa: E402


def run_bench(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_record_bodies_are_the_clients() -> None:
    """The load sends what ``cruise.Client.record`` sends: same map, same bytes, seq 1, 2, 3..."""
    from cruise.api import encode_request

    bodies = RecordBodies(100)
    assert isinstance(bodies.client, str) and bodies.client
    for seq in range(1, 300):
        body = bodies.next()
        assert body == encode_request("record", value=b"v" * 100, client=bodies.client, seq=seq)
    assert msgpack.unpackb(body) == {"op": "record", "value": b"v" * 100, "client": bodies.client, "seq": 299}
    assert RecordBodies(100).client != bodies.client  # one id per load process / connection
    plain = RecordBodies(10, client_seq=False)
    assert plain.next() == plain.next() == encode_request("record", value=b"v" * 10)


def test_kv_bodies_are_the_clients() -> None:
    """kv-put sends what ``Client.record({"put": K, "value": V})`` sends, kv-get what
    ``Client.query({"get": K})`` sends; each load process walks its own share of the keys."""
    from cruise.api import encode_request

    puts = PutBodies(100, worker=1, workers=4, nkeys=10)
    for seq in range(1, 30):
        key = f"kv/{(1 + 4 * (seq - 1)) % 10:06d}"
        value = {"put": key, "value": b"v" * 100}
        assert puts.next() == encode_request("record", value=value, client=puts.client, seq=seq)
    plain = PutBodies(5, client_seq=False)
    assert plain.next() == encode_request("record", value={"put": "kv/000000", "value": b"vvvvv"})
    gets = GetBodies(worker=2, workers=4, nkeys=1000)
    assert gets.next() == encode_request("query", query={"get": "kv/000002"})
    assert gets.next() == encode_request("query", query={"get": "kv/000006"})
    assert PUT_OK in msgpack.packb({"ok": True, "index": 7, "term": 2, "result": None})
    # The preload's shares write every key exactly once.
    written = [key_index(w, n, 3, 10) for w in range(3) for n in range(preload_share(w, 3, 10))]
    assert sorted(written) == list(range(10))


def test_cpu_seconds_reads_proc_stat() -> None:
    assert (cpu_seconds(os.getpid()) or 0) > 0
    assert cpu_seconds(2**22 + 12345) is None  # no such process


def test_quick_run_reports_acknowledged_records() -> None:
    p = run_bench("--quick", "--workloads", "external,floor,single", "--json-only")
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, p.stdout  # --json-only: the JSON line and nothing else
    report = json.loads(lines[0])

    assert report["bench"] == "cruise"
    assert report["ok"] is True
    assert {"nproc", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    settings = report["settings"]
    assert settings["runs"] == 1 and settings["seconds"] == 1.0 and settings["fsync"] is True
    assert settings["workloads"] == ["external", "floor", "single"]
    assert settings["client_seq"] is True
    assert report["systems"]["cruise"]["status"] == "ok"
    assert report["systems"]["floor"]["status"] == "ok"

    figs = {w: report["results"][w]["cruise"] for w in ("external", "single")}
    figs["floor"] = report["results"]["floor"]["floor"]
    for workload, fig in figs.items():
        assert {"records_per_s", "p50_ms", "p99_ms", "acknowledged", "errors", "runs"} <= set(fig), workload
        assert fig["acknowledged"] > 0
        assert fig["errors"] == 0, (workload, fig["error_kinds"])
        assert fig["records_per_s"] > 0
        assert fig["p50_ms"] is not None and fig["p99_ms"] >= fig["p50_ms"]
        assert len(fig["runs"]) == 1
        # The members' CPU (server processes only) per record in the window, beside the rate.
        assert fig["cpu_us_per_rec"] is not None and fig["cpu_us_per_rec"] >= 0, workload
        assert fig["member_cpu_cores"] is not None
        members = {"n1", "n2", "n3"} if workload != "floor" else {"leader", "follower"}
        assert set(fig["runs"][0]["member_cpu_s"]) == members
    assert figs["external"]["cpu_us_per_rec"] > 0  # 3 members committing records for a second
    assert "client+seq" in figs["external"]["how"]

    floor = report["vs_floor"]
    assert floor["floor_p50_ms"] == figs["floor"]["p50_ms"]
    ratio = floor["single_p50_x_floor"]["cruise"]
    assert ratio == pytest.approx(figs["single"]["p50_ms"] / figs["floor"]["p50_ms"])
    assert figs["single"]["p50_x_floor"] == ratio

    names = {t["name"]: t for t in report["targets"]}
    assert {"external_vs_etcd", "single_p50_vs_etcd", "halfload_p99", "memory_rss"} <= set(names)
    assert names["external_vs_etcd"]["verdict"] == "n/a"  # etcd was not asked for
    assert set(report["rss_mb_end"]["cruise"]) == {"n1", "n2", "n3"}


def test_quick_kv_run_reports_puts_and_gets() -> None:
    p = run_bench("--quick", "--workloads", "kv-put,kv-get", "--kv-keys", "50", "--json-only")
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)
    assert report["ok"] is True
    assert report["settings"]["kv_keys"] == 50
    for workload in ("kv-put", "kv-get"):
        fig = report["results"][workload]["cruise"]
        assert fig["acknowledged"] > 0, workload
        assert fig["errors"] == 0, (workload, fig["error_kinds"])  # puts applied, gets found the values
        assert fig["p50_ms"] is not None and fig["p99_ms"] >= fig["p50_ms"]
        assert fig["cpu_us_per_rec"] is not None and fig["cpu_us_per_rec"] > 0, workload
        assert set(fig["runs"][0]["member_cpu_s"]) == {"n1", "n2", "n3"}
    assert report["kv_get_vs_put"]["cruise"] > 0
    assert set(report["rss_mb_end"]["cruise_kv"]) == {"n1", "n2", "n3"}


def test_quick_secure_run_reports_plain_and_secured_cruise() -> None:
    p = run_bench("--quick", "--workloads", "secure", "--json-only")
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)
    assert report["ok"] is True
    assert report["systems"]["cruise_secure"]["status"] == "ok"
    rows = report["results"]["secure"]
    for system in ("cruise", "cruise_secure"):
        fig = rows[system]
        assert fig["acknowledged"] > 0, system  # the secured cluster let the bench's key in
        assert fig["errors"] == 0, (system, fig["error_kinds"])
        assert fig["cpu_us_per_rec"] is not None and fig["cpu_us_per_rec"] > 0, system
    assert "CURVE" in rows["cruise_secure"]["how"]
    assert report["secure_ratios"]["cruise_secure_vs_cruise"]["records_per_s"] > 0
    target = {t["name"]: t for t in report["targets"]}["secure_vs_etcd_tls"]
    assert target["verdict"] == "n/a"  # etcd was not asked for
    assert set(report["rss_mb_end"]["cruise_secure"]) == {"n1", "n2", "n3"}


def test_quick_flood_run_reports_the_polite_client_and_the_flooder() -> None:
    # 2 s windows: under flood a polite record may take a few hundred ms on this machine.
    p = run_bench("--quick", "--seconds", "2", "--workloads", "flood", "--json-only")
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)
    assert report["ok"] is True
    assert report["settings"]["flood_member_cap"] > 0
    fig = report["results"]["flood"]["cruise"]
    assert "DEALER flood" in fig["how"]
    progress = p.stderr[-2000:]  # the run's figures, should an assertion fail
    # The polite client, under flood (the row's own figures) and alone in the same round.
    for prefix in ("", "alone_"):
        assert fig[f"{prefix}records_per_s"] > 0, (prefix, progress)
        assert fig[f"{prefix}p50_ms"] is not None and fig[f"{prefix}p50_ms"] > 0, (prefix, progress)
        assert fig[f"{prefix}p99_ms"] >= fig[f"{prefix}p50_ms"], (prefix, progress)
    # Alone, no record fails; under flood one may time out on a busy machine (it is counted).
    assert fig["alone_errors"] == 0, progress
    # The flooder: it flooded, and every request it sent was answered or counted as not.
    assert fig["flood_sent_per_s"] > 0 and fig["flood_acked_per_s"] > 0
    assert fig["flood_p50_ms"] > 0 and fig["flood_p99_ms"] >= fig["flood_p50_ms"]
    assert fig["flood_sent"] > 1000
    assert fig["flood_sent"] == fig["flood_acked"] + fig["flood_refused"] + fig["flood_unanswered"]
    assert fig["flood_refused"] == sum(fig["flood_refused_kinds"].values())
    assert fig["cpu_us_per_rec"] is not None and fig["cpu_us_per_rec"] > 0
    ratios = report["flood_ratios"]["cruise"]
    assert ratios["records_per_s"] == pytest.approx(fig["records_per_s"] / fig["alone_records_per_s"])
    assert ratios["p50_ms"] > 0 and ratios["p99_ms"] > 0


def test_help_names_the_peers_install() -> None:
    p = run_bench("--help", timeout=60)
    assert p.returncode == 0
    assert "apt-get install -y etcd-server" in p.stdout
    assert "pip install -e '.[bench]'" in p.stdout
    assert "floor" in p.stdout


def test_bad_option_is_one_line_and_exit_2() -> None:
    p = run_bench("--runs", "0", timeout=60)
    assert p.returncode == 2
    assert p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert len(err) == 1, p.stderr
    assert "--runs" in err[0]
    assert "Traceback" not in p.stderr
