"""The human table, the targets, and the one JSON line.

Ratios are always cruise / peer, on the medians: for records/s higher is better, for
latencies lower is better. A target is judged only when cruise ran with fsync on and the
peer ran in the same invocation; otherwise its verdict is ``n/a`` with the reason.

Beside each rate: ``cpu_us_per_rec``, the member processes' CPU per record acknowledged in
the window (median of the runs), and ``client_cpu_us_per_record``, the load processes' CPU
per completed request. The single writer is also put against the *floor* (this machine's
limit for one writer, :mod:`benchlib.floor_side`): ``vs_floor`` in the JSON line,
``p50_x_floor`` / ``p99_x_floor`` in each single-writer figure. For ``kv-put`` and ``kv-get`` a
"record" is one operation (a put, a get), and ``kv_get_vs_put`` in the JSON line is each system's
get rate over its put rate.

The ``secure`` workload's rows are cruise plain, cruise secured (``cruise_secure``), etcd plain
and etcd with TLS (``etcd_tls``); its ratio columns put each etcd row against the cruise row
of the same security, and ``secure_ratios`` in the JSON line (and a line under the table) holds
secured cruise / TLS etcd, secured / plain for each system and plain cruise / plain etcd, for
records/s, p50, p99 and the members' CPU per record. Its target compares ``cruise_secure``, not
``cruise``, with ``etcd_tls``.

The ``flood`` workload's row per system is its polite client *under flood* (records/s, p50,
p99; the ratio columns: cruise's polite client / etcd's), with two lines under it: the polite
client alone in the same rounds and under flood / alone, and the flooder's requests sent,
acknowledged and refused per second in the window and its totals per run (medians).
``flood_ratios`` in the JSON line holds, per system, the polite client's records/s, p50 and p99
under flood / alone (:data:`FLOOD_METRICS`). ``cpu us/rec`` there is per record acknowledged in
the flood window, the flooder's included.
"""

from __future__ import annotations

import json
from typing import Any

# (key, workload, metric, peer, comparison, threshold, description)
TARGETS: list[tuple[str, str, str, str | None, str, float, str]] = [
    ("external_vs_etcd", "external", "records_per_s", "etcd", ">=", 4.0, "external records/s >= 4x etcd"),
    (
        "embedded_vs_pysyncobj",
        "embedded",
        "records_per_s",
        "pysyncobj",
        ">=",
        1.0,
        "embedded records/s >= 1.0x PySyncObj (no fsync)",
    ),
    (
        "secure_vs_etcd_tls",
        "secure",
        "records_per_s",
        "etcd_tls",
        ">=",
        4.0,
        "secured records/s >= 4x etcd with TLS",
    ),
    ("single_p50_vs_etcd", "single", "p50_ms", "etcd", "<=", 0.5, "single writer p50 <= 0.5x etcd"),
    ("single_p99_vs_etcd", "single", "p99_ms", "etcd", "<=", 0.6, "single writer p99 <= 0.6x etcd"),
    ("halfload_p99", "halfload", "p99_ms", None, "<", 5.0, "p99 at half the max load < 5 ms"),
    ("memory_rss", "memory", "rss_mb_max", None, "<", 150.0, "member RSS after the memory run < 150 MB"),
]

# The cruise figure a target judges, where it is not the plain cluster's.
SUBJECT = {"secure_vs_etcd_tls": "cruise_secure"}

# The secure workload's ratios: (name, numerator, denominator).
SECURE_PAIRS = (
    ("cruise_secure_vs_etcd_tls", "cruise_secure", "etcd_tls"),
    ("cruise_secure_vs_cruise", "cruise_secure", "cruise"),
    ("etcd_tls_vs_etcd", "etcd_tls", "etcd"),
    ("cruise_vs_etcd", "cruise", "etcd"),
)
SECURE_METRICS = ("records_per_s", "p50_ms", "p99_ms", "cpu_us_per_rec")

# The flood workload's ratios, per system: the polite client under flood / alone.
FLOOD_METRICS = ("records_per_s", "p50_ms", "p99_ms")

# Which cruise row each peer row of a workload is put against (default: "cruise").
COMPARED_WITH = {"secure": {"etcd_tls": "cruise_secure", "cruise_secure": None}}

SYSTEM_LABEL = {
    "cruise": "cruise",
    "cruise_secure": "cruise+sec",
    "etcd_tls": "etcd+tls",
    "pysyncobj": "pysyncobj",
    "pysyncobj_batched": "pysyncobj",
    "etcd": "etcd",
    "floor": "machine",
}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def apply_floor(results: dict[str, Any]) -> dict[str, Any] | None:
    """Each single-writer p50/p99 as a multiple of the floor's (also written into the single
    figures as ``p50_x_floor`` / ``p99_x_floor``); None when the floor has no figure."""
    floor = results.get("floor", {}).get("floor")
    if not isinstance(floor, dict) or floor.get("p50_ms") is None:
        return None
    out: dict[str, Any] = {
        "floor_p50_ms": floor["p50_ms"],
        "floor_p99_ms": floor.get("p99_ms"),
        "single_p50_x_floor": {},
        "single_p99_x_floor": {},
    }
    for system, fig in results.get("single", {}).items():
        if not isinstance(fig, dict) or fig.get("p50_ms") is None:
            continue
        fig["p50_x_floor"] = ratio(fig["p50_ms"], floor["p50_ms"])
        fig["p99_x_floor"] = ratio(fig.get("p99_ms"), floor.get("p99_ms"))
        out["single_p50_x_floor"][system] = fig["p50_x_floor"]
        out["single_p99_x_floor"][system] = fig["p99_x_floor"]
    return out


def kv_get_vs_put(results: dict[str, Any]) -> dict[str, float | None] | None:
    """Each system's kv-get rate / its kv-put rate (medians); None unless both workloads ran."""
    puts, gets = results.get("kv-put"), results.get("kv-get")
    if not puts or not gets:
        return None
    out: dict[str, float | None] = {}
    for system, g in gets.items():
        p = puts.get(system)
        if isinstance(g, dict) and isinstance(p, dict):
            out[system] = ratio(g.get("records_per_s"), p.get("records_per_s"))
    return out


def secure_ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]] | None:
    """The secure workload's ratios of medians (:data:`SECURE_PAIRS` x :data:`SECURE_METRICS`);
    None unless it ran. A pair whose two systems did not both run is left out."""
    rows = results.get("secure")
    if not rows:
        return None
    out: dict[str, dict[str, float | None]] = {}
    for name, a, b in SECURE_PAIRS:
        fa, fb = rows.get(a), rows.get(b)
        if isinstance(fa, dict) and isinstance(fb, dict) and "failed" not in fa and "failed" not in fb:
            out[name] = {m: ratio(fa.get(m), fb.get(m)) for m in SECURE_METRICS}
    return out


def flood_ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]] | None:
    """Each system's polite client under flood / alone (ratios of the medians of
    :data:`FLOOD_METRICS`); None unless the flood workload ran."""
    rows = results.get("flood")
    if not rows:
        return None
    return {
        system: {m: ratio(fig.get(m), fig.get(f"alone_{m}")) for m in FLOOD_METRICS}
        for system, fig in rows.items()
        if isinstance(fig, dict) and "failed" not in fig
    }


def _flood_lines(fig: dict[str, Any], ratios: dict[str, float | None] | None) -> list[str]:
    """The two lines under a flood row: the polite client alone, and the flooder."""
    r = ratios or {}
    kinds = ", ".join(f"{k} {v:,}" for k, v in (fig.get("flood_refused_kinds") or {}).items())
    cores = fig.get("flood_client_cpu_cores")
    return [
        f"{'':<9} {'':<10} polite client alone: {_rate(fig.get('alone_records_per_s'))} rec/s,"
        f" p50 {_num(fig.get('alone_p50_ms'))} ms, p99 {_num(fig.get('alone_p99_ms'))} ms;"
        f" under flood / alone: rec/s {_ratio_txt(r.get('records_per_s'))},"
        f" p50 {_ratio_txt(r.get('p50_ms'))}, p99 {_ratio_txt(r.get('p99_ms'))}",
        f"{'':<9} {'':<10} flooder: sent {_rate(fig.get('flood_sent_per_s'))}/s, acknowledged"
        f" {_rate(fig.get('flood_acked_per_s'))}/s (p50 {_num(fig.get('flood_p50_ms'))} ms,"
        f" p99 {_num(fig.get('flood_p99_ms'))} ms), refused {_rate(fig.get('flood_refused_per_s'))}/s;"
        f" per run {_rate(fig.get('flood_sent'))} sent, {_rate(fig.get('flood_acked'))} acknowledged,"
        f" {_rate(fig.get('flood_refused'))} refused{f' ({kinds})' if kinds else ''},"
        f" {_rate(fig.get('flood_unanswered'))} unanswered; at most"
        f" {_rate(fig.get('flood_max_outstanding'))} outstanding; its CPU"
        f" {'-' if cores is None else f'{cores:.2f}'} cores",
    ]


def _compare(value: float, op: str, threshold: float) -> bool:
    return {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[op]


def judge(results: dict[str, Any], systems: dict[str, Any], fsync: bool) -> list[dict[str, Any]]:
    """Every target with its value and verdict (PASS, MISS or n/a plus why)."""
    out = []
    for key, workload, metric, peer, op, threshold, desc in TARGETS:
        t: dict[str, Any] = {
            "name": key,
            "description": desc,
            "target": f"{op} {threshold:g}" + ("x" if peer else (" ms" if metric.endswith("_ms") else " MB")),
            "value": None,
            "verdict": "n/a",
        }
        w = results.get(workload, {})
        subject = SUBJECT.get(key, "cruise")
        mine = w.get(subject, {})
        if workload not in results:
            t["why"] = f"workload {workload} not run"
        elif not isinstance(mine, dict) or mine.get(metric) is None:
            t["why"] = f"no {subject} figure"
        elif peer is not None and not isinstance(w.get(peer), dict):
            t["why"] = f"{peer} not run ({systems.get(peer, {}).get('status', 'not requested')})"
        elif peer is not None and w[peer].get(metric) is None:
            t["why"] = f"no {peer} figure"
        else:
            value = ratio(mine[metric], w[peer][metric]) if peer else mine[metric]
            t["value"] = value
            if not fsync:
                t["why"] = "cruise ran with fsync off: targets never count"
            elif value is not None:
                t["verdict"] = "PASS" if _compare(value, op, threshold) else "MISS"
        out.append(t)
    return out


def _num(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _ratio_txt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table(report: dict[str, Any]) -> str:
    """The human-readable report (several lines)."""
    m = report["machine"]
    s = report["settings"]
    systems = report["systems"]
    lines = []
    la0 = " ".join(f"{x:.2f}" for x in m["loadavg_start"])
    la1 = " ".join(f"{x:.2f}" for x in m.get("loadavg_end", []))
    lines.append(
        f"machine: nproc {m['nproc']} ({m.get('cpu_model') or 'cpu ?'}), load average {la0} at start,"
        f" {la1} at end; Python {m['python']}; {m['kernel']}; temp dir on {m.get('tmp_fs') or '?'}"
    )
    lines.append(
        f"settings: {s['runs']} run(s) x {s['seconds']:g} s (+{s['warmup']:g} s warm-up) per figure, medians;"
        f" values {s['value_bytes']} B; external {s['clients']} processes x {s['inflight']} in flight;"
        f" embedded {s['embedded_inflight']} in flight"
    )
    notes = []
    notes.append("cruise fsync ON" if s["fsync"] else "cruise fsync OFF (!! targets do not count !!)")
    notes.append(
        "cruise records carry client+seq (as cruise.Client sends them)"
        if s.get("client_seq", True)
        else "cruise records WITHOUT client/seq (--no-client-seq)"
    )
    for name in ("pysyncobj", "etcd", "floor", "cruise_secure", "etcd_tls"):
        st = systems.get(name, {})
        if st.get("status") == "ok":
            label = f"{name} {st['version']}" if st.get("version") else name
            notes.append(f"{label}: {st.get('note', '')}")
        elif st.get("status") in ("skipped", "failed"):
            notes.append(f"{name}: {st['status']} ({st.get('reason', '')})")
    lines.append("systems: " + "; ".join(notes))
    if not s["fsync"]:
        lines.append(
            "!!! cruise ran with fsync OFF: acknowledged records were not on disk; no target counts !!!"
        )
    lines.append("")

    head = (
        f"{'workload':<9} {'system':<10} {'how':<34} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'errors':>6} {'cpu us/rec':>10} {'load us':>7}  {'cruise/peer: rec/s':>18} {'p50':>6} {'p99':>6}"
        "  target"
    )
    lines.append(head)
    lines.append("-" * len(head))
    targets = {t["name"]: t for t in report["targets"]}
    by_row: dict[tuple[str, str], list[str]] = {}
    for key, workload, _metric, peer, *_ in TARGETS:
        t = targets.get(key)
        if t is None:
            continue
        row = (workload, peer or "cruise")
        if t["value"] is None and t["verdict"] == "n/a" and "not run" in t.get("why", ""):
            continue
        shown = _ratio_txt(t["value"]) if peer else _num(t["value"])
        verdict = t["verdict"] if t["verdict"] != "n/a" else f"n/a: {t.get('why', '')}"
        by_row.setdefault(row, []).append(f"{t['target']} {verdict} ({shown})")

    for workload, rows in report["results"].items():
        for system, fig in rows.items():
            label = SYSTEM_LABEL.get(system, system)
            if not isinstance(fig, dict):
                lines.append(f"{workload:<9} {label:<10} {fig}")
                continue
            if "failed" in fig:
                lines.append(f"{workload:<9} {label:<10} failed: {fig['failed']}")
                continue
            how = fig.get("how", "")
            r_rate = r50 = r99 = ""
            ref = COMPARED_WITH.get(workload, {}).get(system, "cruise")
            if system != "cruise" and ref and isinstance(rows.get(ref), dict) and "failed" not in rows[ref]:
                c = rows[ref]
                r_rate = _ratio_txt(ratio(c.get("records_per_s"), fig.get("records_per_s")))
                r50 = _ratio_txt(ratio(c.get("p50_ms"), fig.get("p50_ms")))
                r99 = _ratio_txt(ratio(c.get("p99_ms"), fig.get("p99_ms")))
            target = "; ".join(by_row.get((workload, system), []))
            if workload == "memory":
                lines.append(
                    f"{workload:<9} {label:<10} {how:<34} {_rate(fig.get('records_per_s')):>10}"
                    f" {'':>8} {'':>8} {fig.get('errors', 0):>6} {'':>10} {'':>7}  {'':>18} {'':>6} {'':>6}"
                    f"  {target}"
                )
                for k, label in (
                    ("rss_mb_after_start", "RSS after start-up"),
                    ("rss_mb_before", "RSS before this workload"),
                    ("rss_mb_after", f"RSS after {fig.get('acknowledged', 0):,} records"),
                ):
                    rss = fig.get(k) or {}
                    txt = ", ".join(f"{i} {_num(v, 1)} MB" for i, v in rss.items())
                    lines.append(f"{'':<9} {'':<10} {label}: {txt}")
                continue
            lines.append(
                f"{workload:<9} {label:<10} {how:<34} {_rate(fig.get('records_per_s')):>10}"
                f" {_num(fig.get('p50_ms')):>8} {_num(fig.get('p99_ms')):>8} {fig.get('errors', 0):>6}"
                f" {_rate(fig.get('cpu_us_per_rec')):>10} {_rate(fig.get('client_cpu_us_per_record')):>7}"
                f"  {r_rate:>18} {r50:>6} {r99:>6}  {target}"
            )
            if workload == "flood":
                lines.extend(_flood_lines(fig, (report.get("flood_ratios") or {}).get(system)))
    lines.append("")
    lines.append(
        "cpu us/rec: CPU (user+system) of the member processes only, over the window, per record"
        " acknowledged in it (embedded and PySyncObj: the load runs inside a member and counts);"
        " load us: the load processes' CPU per request."
    )
    if set(report["results"]) & {"kv-put", "kv-get"}:
        kv = report.get("kv_get_vs_put") or {}
        shown = "; ".join(f"{SYSTEM_LABEL.get(k, k)} {_ratio_txt(v)}" for k, v in kv.items())
        lines.append(
            f"kv-put, kv-get: state_machine kv, {s.get('kv_keys')} keys preloaded; records/s and cpu us/rec"
            " are per operation (one put, one get); gets are linearizable on both systems."
            + (f" get rate / put rate: {shown}" if shown else "")
        )
    sr = report.get("secure_ratios")
    if sr:
        parts = []
        for name, a, b in SECURE_PAIRS:
            r = sr.get(name)
            if r:
                parts.append(
                    f"{SYSTEM_LABEL[a]} / {SYSTEM_LABEL[b]}: rec/s {_ratio_txt(r['records_per_s'])},"
                    f" p50 {_ratio_txt(r['p50_ms'])}, p99 {_ratio_txt(r['p99_ms'])},"
                    f" cpu/rec {_ratio_txt(r['cpu_us_per_rec'])}"
                )
        lines.append(
            "secure: cruise+sec = CURVE on every socket, clients admitted by key; etcd+tls = https"
            " client and peer URLs, certificates required of both. " + ("; ".join(parts) or "no pair ran")
        )
    if "flood" in report["results"]:
        lines.append(
            "flood: records/s, p50, p99 are the polite client's (sequential records: cruise.Client;"
            " etcd: blocking Puts) while one flooder sends to the same leader without waiting"
            f" (cruise: one DEALER, which the member caps at {s.get('flood_member_cap')} in flight;"
            f" etcd: {s.get('flood_inflight')}"
            " Puts in flight); cpu us/rec counts the flooder's records too. The ratio columns are cruise's"
            " polite client / etcd's."
        )
    vf = report.get("vs_floor")
    if vf:
        mult = [
            f"{SYSTEM_LABEL.get(k, k)}{' (batched)' if k == 'pysyncobj_batched' else ''}"
            f" p50 {_ratio_txt(v)}, p99 {_ratio_txt(vf['single_p99_x_floor'].get(k))}"
            for k, v in vf["single_p50_x_floor"].items()
        ]
        lines.append(
            f"single writer vs the floor (this machine: 4 ZeroMQ hops + 1 fdatasync, p50"
            f" {_num(vf['floor_p50_ms'])} ms, p99 {_num(vf['floor_p99_ms'])} ms): "
            + ("; ".join(mult) or "no single-writer figure (add --workloads single)")
        )
    lines.append("targets (cruise with fsync on, peers measured in the same run):")
    for t in report["targets"]:
        shown = "-" if t["value"] is None else (f"{t['value']:.2f}")
        why = f"  ({t['why']})" if t.get("why") else ""
        lines.append(f"  {t['verdict']:<4}  {t['description']:<50} {shown:>8}  target {t['target']}{why}")
    return "\n".join(line.rstrip() for line in lines)


def json_line(report: dict[str, Any]) -> str:
    """Every figure as one JSON object on one line."""
    return json.dumps(report, separators=(",", ":"), default=str)
