"""What a chaos run prints: the verdict, the seed, the schedule, and what clients saw of it.

The verdict is PASS only when nothing went wrong: no checker violation and no problem of the
run itself (a cluster that elected no leader, did not answer after healing, did not settle, a
member that exited by itself). Both are failures of cruise as far as a user can tell.

Unavailability, per fault, is what a retrying client saw: the time from the fault's start to
the first acknowledgement of an operation invoked at or after that start. An operation
invoked before the fault and answered after it would flatter a fault that stops everything
new; one invoked after it cannot. Writes are ``record``, ``put`` and ``cas`` (a cas answered
"not swapped" is an answer from a leader, so it counts); reads (``kv``) are linearizable
``get`` queries. ``-`` means no acknowledgement before the run ended.

Rejoined, per fault, is the time from its heal until every member answered, named the same
leader, and had applied what that leader had committed at the heal: how long the cluster
stayed short of a member after the fault itself was gone. ``>T``: not within the T seconds
before the next fault (or the end of the workload).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chaoslib.faults import Applied
from chaoslib.history import Op

__all__ = ["Result", "render", "summary", "unavailability"]

WRITES = frozenset({"record", "put", "cas"})
READS = frozenset({"get"})
SHOWN_VIOLATIONS = 30  # the rest are in the run's directory, which a failure keeps


@dataclass
class Result:
    """Everything the report needs, filled in by the harness as the run goes."""

    seed: int
    members: int
    workload: str
    duration: float
    kinds: list[str]
    run_dir: Path
    member_logs: list[Path]
    network: str = ""
    t0: float = 0.0
    applied: list[Applied] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    history: Path | None = None
    entry_logs: list[Path] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    keep: bool = False  # --keep: the run's directory stays on a pass too

    @property
    def passed(self) -> bool:
        return not self.violations and not self.problems


def acknowledged(op: Op) -> bool:
    """The cluster answered this op (a "not swapped" cas too: a leader decided it)."""
    return op.kind == "ok" or (op.f == "cas" and op.kind == "fail" and op.error is None)


def unavailability(start: float, ops: Sequence[Op], fs: frozenset[str]) -> float | None:
    """Seconds from ``start`` to the first acknowledgement of an op in ``fs`` invoked since."""
    done = [
        op.complete_time
        for op in ops
        if op.f in fs and op.invoke_time >= start and op.complete_time is not None and acknowledged(op)
    ]
    return min(done) - start if done else None


def render(r: Result) -> str:
    lines = [
        f"{'PASS' if r.passed else 'FAIL'}: seed {r.seed}, {r.members} members, workload {r.workload}, "
        f"{r.duration:g}s, faults {','.join(r.kinds) or 'none'}",
        f"reproduce: tools/chaos --seed {r.seed} --duration {r.duration:g} --members {r.members} "
        f"--faults {','.join(r.kinds)} --workload {r.workload}",
    ]
    if r.network:
        lines.append(f"network: {r.network}")
    lines.append(_ops_line(r.ops))
    lines.append("")
    lines.append(
        f"schedule ({len(r.applied)} faults; t from the workload's start; * the leader when it began;"
        " unavailability as clients saw it):"
    )
    lines += _schedule(r)
    if r.problems:
        lines += ["", "problems:"] + [f"  - {p}" for p in r.problems]
    if r.violations:
        lines += ["", f"violations ({len(r.violations)}):"]
        lines += [f"  - {_indent(v)}" for v in r.violations[:SHOWN_VIOLATIONS]]
        if len(r.violations) > SHOWN_VIOLATIONS:
            lines.append(f"  ... and {len(r.violations) - SHOWN_VIOLATIONS} more")
    if r.notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in r.notes]
    lines += ["", _files(r)]
    return "\n".join(lines)


def _ops_line(ops: Sequence[Op]) -> str:
    """Per f: how many were acknowledged (ok), not swapped (cas), failed, or left unknown."""
    counts = Counter((op.f, _outcome(op)) for op in ops)
    parts = []
    for f in sorted({f for f, _ in counts}):
        shown = [f"{counts[(f, k)]} {k}" for k in ("ok", "not swapped", "fail", "info") if counts[(f, k)]]
        parts.append(f"{f}: {', '.join(shown)}")
    return "operations: " + ("; ".join(parts) if parts else "none")


def _outcome(op: Op) -> str:
    if op.f == "cas" and op.kind == "fail" and op.error is None:
        return "not swapped"
    return op.kind


def _schedule(r: Result) -> list[str]:
    if not r.applied:
        return ["  (none)"]
    kv = r.workload == "kv"
    out = []
    for a in r.applied:
        p = a.planned
        start = a.started - r.t0
        end = f"ends {a.healed - r.t0:6.2f}s" if a.healed is not None else "not healed"
        back = _rejoined(a)
        name = f"{p.kind}/{p.variant}" if p.variant else p.kind
        unavail = f"writes {_secs(unavailability(a.started, r.ops, WRITES))}"
        if kv:
            unavail += f", reads {_secs(unavailability(a.started, r.ops, READS))}"
        out.append(
            f"  {start:6.2f}s {name:<26} {a.detail:<40} {end}  rejoined {back:<7} unavailable: {unavail}"
        )
        out += [f"          error: {e}" for e in a.errors]
    return out


def _rejoined(a: Applied) -> str:
    if a.healed is None:
        return "-"
    if a.rejoined is not None:
        return f"{a.rejoined - a.healed:.2f}s"
    return "-" if a.watched is None else f">{max(0.0, a.watched - a.healed):.2f}s"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def _files(r: Result) -> str:
    kept = "kept" if r.keep or not r.passed else "removed: the run passed (--keep keeps it)"
    lines = [f"run directory ({kept}): {r.run_dir}"]
    lines += [f"  member log: {p}" for p in r.member_logs]
    lines += [f"  committed log: {p}" for p in r.entry_logs]
    if r.history is not None:
        lines.append(f"  history: {r.history}")
    return "\n".join(lines)


# -- a campaign of runs ---------------------------------------------------------------------------

# The faults whose unavailability a user asks about first, by what they did to the leader.
LEADER_FAULTS = (
    ("leader SIGKILL", lambda a: a.planned.kind == "kill"),
    ("leader SIGSTOP", lambda a: a.planned.kind == "pause"),
    ("leader cut off by a partition", lambda a: a.planned.kind == "partition"),
    ("leader's disk full", lambda a: a.planned.kind == "diskfull" and "stood still" in a.detail),
    ("leader removed and replaced", lambda a: a.planned.kind == "membership"),
)


def _median(xs: Sequence[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def summary(results: Sequence[Result], election_timeout_ms: Sequence[int]) -> str:
    """The verdicts of a campaign, then the median unavailability of each leader fault."""
    passed = sum(r.passed for r in results)
    lines = [f"{passed} of {len(results)} runs passed"]
    lines += [f"  FAIL: seed {r.seed}, {r.members} members, {r.workload}" for r in results if not r.passed]
    lo, hi = election_timeout_ms
    lines += [
        "",
        f"unavailability as a retrying client saw it, median over the runs (election timeout {lo}-{hi} ms):",
        f"  {'fault':<32} {'faults':>6} {'writes':>8} {'reads':>8}",
    ]
    for name, is_kind in LEADER_FAULTS:
        hits = [(r, a) for r in results for a in r.applied if a.targets == [a.leader] and is_kind(a)]
        writes = [w for r, a in hits if (w := unavailability(a.started, r.ops, WRITES)) is not None]
        kv = [(r, a) for r, a in hits if r.workload == "kv"]
        reads = [x for r, a in kv if (x := unavailability(a.started, r.ops, READS)) is not None]
        w = f"{_median(writes):.2f}s" if writes else "-"
        rd = f"{_median(reads):.2f}s" if reads else "-"
        lines.append(f"  {name:<32} {len(hits):>6} {w:>8} {rd:>8}")
    return "\n".join(lines)
