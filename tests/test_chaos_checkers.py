"""The chaos harness's judges (``tools/chaoslib``): good histories pass, bad ones fail, named.

A check that has never been seen failing proves nothing: every property has a bad case that
must be rejected, with an explanation naming the key or the record, and one good random
history is mutated into a bad one. Every kv history here goes through the JSON-lines format
(events out, lines, events in, pairing) before it is checked.
"""

from __future__ import annotations

import functools
import io
import math
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from chaoslib.history import (  # noqa: E402
    Event,
    HistoryError,
    Op,
    Recorder,
    dumps_event,
    events_of,
    load_ops,
    loads_events,
    pair,
    save,
    with_kind,
)
from chaoslib.linearizability import CheckResult, canon, check, fails  # noqa: E402
from chaoslib.logcheck import Ack, acks_from_ops, check_logs  # noqa: E402

# ---------------------------------------------------------------- building histories


def op(
    process: str,
    f: str,
    key: str | None,
    value: Any,
    t0: float,
    t1: float | None,
    kind: str = "ok",
    result: Any = None,
    error: str | None = None,
    index: int | None = None,
) -> Op:
    """An op; ``t1=None`` or ``kind="info"`` for one that never completed."""
    if f == "cas":
        value = tuple(value)
    if kind == "info":
        t1 = None
    return Op(process, f, kind, t0, t1, key, value, result, index, error)  # type: ignore[arg-type]


def put(p: str, key: str, v: Any, t0: float, t1: float | None, kind: str = "ok") -> Op:
    return op(p, "put", key, v, t0, t1, kind)


def get(p: str, key: str, got: Any, t0: float, t1: float) -> Op:
    return op(p, "get", key, None, t0, t1, result=got)


def cas(p: str, key: str, expect: Any, new: Any, t0: float, t1: float | None, kind: str = "ok") -> Op:
    return op(p, "cas", key, (expect, new), t0, t1, kind)


def through_format(ops: list[Op]) -> list[Op]:
    """``ops`` written as JSON lines, read back and paired again."""
    lines = [dumps_event(e) for e in events_of(ops)]
    return pair(loads_events(lines))


def judge(ops: list[Op]) -> CheckResult:
    return check(through_format(ops))


def assert_rejected(ops: list[Op], key: str) -> str:
    res = judge(ops)
    assert res.status == "fail", res.explain()
    assert [r.key for r in res.failures()] == [key]
    text = res.explain()
    assert f"key {key!r} is not linearizable" in text
    (failed,) = res.failures()
    # The window is evidence on its own: it fails when searched alone.
    assert fails(failed.window)
    print(text)
    return text


# ---------------------------------------------------------------- the history format


def test_events_round_trip_through_json_lines(tmp_path: Path) -> None:
    ops = [
        put("c1", "x", {"a": [1, 2]}, 0.0, 1.0),
        get("c2", "x", {"a": [1, 2]}, 0.5, 2.0),
        cas("c1", "x", None, 3, 3.0, 4.0, kind="fail"),
        put("c3", "y", 5, 3.5, None, kind="info"),
        op("c4", "record", None, "c4-1", 4.0, 4.5, index=17),
    ]
    path = tmp_path / "history.jsonl"
    save(path, events_of(ops))
    back = load_ops(path)
    assert back == sorted(ops, key=lambda o: o.invoke_time)
    assert back[2].value == (None, 3)
    text = path.read_text()
    assert '"kind": "invoke"' in text and '"index": 17' in text


def test_pairing_rules() -> None:
    t = 100.0
    evs = [
        Event("c1", "invoke", t, "put", "x", 1),
        Event("c2", "invoke", t + 1, "get", "x"),
        Event("c1", "ok", t + 2),  # f and key may be left out on a completion
        Event("c2", "ok", t + 3, value=1),
        Event("c3", "invoke", t + 4, "cas", "x", [1, 2]),  # never completes: info
    ]
    ops = pair(reversed(evs))  # sorted by time, whatever the file order
    assert [(o.process, o.kind, o.complete_time) for o in ops] == [
        ("c1", "ok", t + 2),
        ("c2", "ok", t + 3),
        ("c3", "info", None),
    ]
    assert ops[1].result == 1
    with pytest.raises(HistoryError, match="no open invoke"):
        pair([Event("c1", "ok", 1.0)])
    with pytest.raises(HistoryError, match="still open"):
        pair([Event("c1", "invoke", 1.0, "get", "x"), Event("c1", "invoke", 2.0, "get", "x")])
    with pytest.raises(HistoryError, match="does not match"):
        pair([Event("c1", "invoke", 1.0, "get", "x"), Event("c1", "ok", 2.0, "get", "y")])
    with pytest.raises(HistoryError, match="cas value"):
        pair([Event("c1", "invoke", 1.0, "cas", "x", 3)])
    with pytest.raises(HistoryError, match="line 2"):
        loads_events(['{"process": "c1", "kind": "invoke", "f": "get", "key": "x", "time": 1}', "{"])


def test_recorder_writes_lines_the_checker_reads() -> None:
    buf = io.StringIO()
    rec = Recorder(buf)
    rec.invoke("c1", "put", key="x", value=1, t=1.0)
    rec.complete("c1", "ok", t=2.0)
    rec.invoke("c1", "get", key="x", t=3.0)
    rec.complete("c1", "ok", value=1, t=4.0)
    rec.invoke("c2", "put", key="x", value=2, t=5.0)  # the harness died here
    ops = pair(loads_events(buf.getvalue().splitlines()))
    assert [o.kind for o in ops] == ["ok", "ok", "info"]
    assert check(ops).status == "ok"


# ---------------------------------------------------------------- linearizability: accepted


def test_sequential_history_is_linearizable() -> None:
    ops = [
        get("c1", "x", None, 0, 1),
        put("c1", "x", 1, 2, 3),
        get("c2", "x", 1, 4, 5),
        cas("c1", "x", 1, 2, 6, 7),
        cas("c2", "x", 1, 3, 8, 9, kind="fail"),  # not swapped: x holds 2
        get("c3", "x", 2, 10, 11),
        cas("c3", "y", None, "a", 12, 13),  # None expect: absent
        cas("c3", "y", None, "b", 14, 15, kind="fail"),
        get("c1", "y", "a", 16, 17),
    ]
    res = judge(ops)
    assert res.status == "ok", res.explain()
    assert set(res.keys) == {"x", "y"}


def test_concurrent_overlapping_ops() -> None:
    ops = [
        put("c1", "x", 1, 0, 10),  # long put: reads inside may or may not see it
        get("c2", "x", None, 1, 2),
        get("c3", "x", 1, 3, 4),
        get("c2", "x", 1, 5, 6),
        # Two concurrent puts; readers after both agree on one order.
        put("c1", "x", 2, 11, 15),
        put("c2", "x", 3, 12, 14),
        get("c3", "x", 2, 13, 16),
        get("c3", "x", 2, 17, 18),
        # A cas racing a put: the cas took effect first.
        cas("c1", "x", 2, 4, 20, 25),
        put("c2", "x", 5, 21, 24),
        get("c3", "x", 5, 26, 27),
    ]
    assert judge(ops).status == "ok"


def test_info_ops_that_did_and_did_not_take_effect() -> None:
    ops = [
        put("c1", "x", 1, 0, 1),
        put("c2", "x", 2, 2, None, kind="info"),  # took effect, late
        get("c3", "x", 1, 3, 4),
        get("c3", "x", 1, 50, 51),
        get("c1", "x", 2, 60, 61),
        put("c6", "y", 7, 0, None, kind="info"),  # never took effect
        get("c3", "y", None, 5, 6),
        get("c3", "y", None, 70, 71),
        cas("c5", "z", None, 1, 0, None, kind="info"),  # took effect
        get("c2", "z", 1, 2, 3),
        cas("c5", "z", 5, 6, 4, None, kind="info"),  # could not have: z never held 5
        get("c2", "z", 1, 9, 10),
        # An unknown get, a put that definitely failed, a cas refused with an error: no effect.
        op("c4", "get", "z", None, 11, None, kind="info"),
        op("c4", "put", "z", 99, 12, 13, kind="fail", error="bad_request"),
        op("c4", "cas", "z", (1, 98), 14, 15, kind="fail", error="too_large"),
        get("c2", "z", 1, 16, 17),
    ]
    res = judge(ops)
    assert res.status == "ok", res.explain()


def test_values_compare_as_msgpack_does() -> None:
    # 1, 1.0 and true are different values; maps compare in any key order.
    ops = [
        put("c1", "x", {"a": 1, "b": 2}, 0, 1),
        cas("c1", "x", {"b": 2, "a": 1}, 1, 2, 3),
        cas("c2", "x", 1.0, 2, 4, 5, kind="fail"),
        cas("c2", "x", True, 2, 6, 7, kind="fail"),
        get("c3", "x", 1, 8, 9),
    ]
    assert judge(ops).status == "ok"
    assert judge([*ops, get("c3", "x", 1.0, 10, 11)]).status == "fail"


# ---------------------------------------------------------------- linearizability: rejected


def test_stale_read_is_rejected() -> None:
    ops = [
        put("c1", "x", 1, 0.0, 1.0),
        put("c2", "x", 2, 2.0, 3.0),
        get("c3", "x", 1, 4.0, 5.0),  # put 2 completed before this get began
        put("c4", "y", 1, 0.0, 1.0),
        get("c5", "y", 1, 4.0, 5.0),
    ]
    text = assert_rejected(ops, "x")
    assert "get" in text and "-> 1" in text and "put 2" in text


def test_lost_write_is_rejected() -> None:
    ops = [put("c1", "k", "old", 0.0, 1.0), put("c2", "k", "new", 1.5, 2.5)]
    ops += [get(f"c{3 + i % 3}", "k", "old", 3.0 + i, 3.5 + i) for i in range(6)]
    text = assert_rejected(ops, "k")
    assert 'put "new"' in text


def test_cas_answers_that_contradict_the_register_are_rejected() -> None:
    # "not swapped" though x held exactly the expected value, and nothing else ran.
    assert_rejected([put("c1", "x", 1, 0, 1), cas("c2", "x", 1, 2, 2, 3, kind="fail")], "x")
    # swapped though x never held the expected value.
    assert_rejected([put("c1", "x", 1, 0, 1), cas("c2", "x", 3, 4, 2, 3)], "x")
    # a read of a value no one wrote.
    assert_rejected([put("c1", "x", 1, 0, 1), get("c2", "x", 7, 2, 3)], "x")


def test_info_write_cannot_take_effect_before_its_invoke() -> None:
    ops = [get("c1", "x", 5, 0, 1), put("c2", "x", 5, 2, None, kind="info")]
    assert_rejected(ops, "x")


def test_reads_must_not_go_back() -> None:
    ops = [
        put("c1", "x", 1, 0, 1),
        put("c2", "x", 2, 2, 20),  # in flight for a long while
        get("c3", "x", 2, 3, 4),  # already visible...
        get("c4", "x", 1, 5, 6),  # ...then gone again
    ]
    assert_rejected(ops, "x")


def test_step_budget_gives_unknown_not_a_guess() -> None:
    # Many overlapping writes and no reads until the end: a wide search.
    ops = [put(f"c{i}", "x", i, i * 0.01, 100.0 + i * 0.01) for i in range(12)]
    ops.append(get("c99", "x", -1, 200.0, 201.0))
    res = check(ops, budget=50)
    assert res.status == "unknown"
    assert res.valid is None
    assert "unknown: search budget exceeded" in res.explain()
    assert "'x'" in res.explain()


# ---------------------------------------------------------------- against brute force


def brute_force(ops: list[Op]) -> bool:
    """Linearizable? By trying every order of every subset that keeps the completed ops
    (memoized on what is left and the register's value); the model written out plainly."""
    steps: list[tuple[float, float, str, Any, Any]] = []  # invoke, complete, what, a, b
    for o in ops:
        done = o.kind == "ok" or (o.kind == "fail" and o.f == "cas")
        end = o.complete_time if done and o.complete_time is not None else math.inf
        if o.f == "get" and o.kind == "ok":
            steps.append((o.invoke_time, end, "read", canon(o.result), None))
        elif o.f == "put" and o.kind != "fail":
            steps.append((o.invoke_time, end, "write", canon(o.value), None))
        elif o.f == "cas" and o.kind != "fail":
            steps.append((o.invoke_time, end, "cas", canon(o.value[0]), canon(o.value[1])))
        elif o.f == "cas" and o.error is None:
            steps.append((o.invoke_time, end, "differs", canon(o.value[0]), None))

    @functools.cache
    def go(left: frozenset[int], value: str) -> bool:
        must = [steps[i][1] for i in left if steps[i][1] != math.inf]
        if not must:
            return True
        for i in left:
            t0, _, what, a, b = steps[i]
            if t0 > min(must):  # something that completed before this began is still left
                continue
            if what == "write":
                nxt = a
            elif (what == "read" and value == a) or (what == "differs" and value != a):
                nxt = value
            elif what == "cas" and value == a:
                nxt = b
            else:
                continue
            if go(left - {i}, nxt):
                return True
        return False

    return go(frozenset(range(len(steps))), canon(None))


def small_random_history(rng: random.Random) -> list[Op]:
    """A few ops on one key, over few values: timing and results at random, often wrong."""
    ops = []
    for j in range(rng.randint(1, 8)):
        t0 = float(rng.randint(0, 10))
        t1 = t0 + rng.randint(0, 4)
        kind = rng.choice(["ok", "ok", "info", "fail"])
        f = rng.choice(["put", "get", "cas"])
        v = rng.choice([None, 1, 2])
        if f == "get":
            ops.append(op(f"c{j}", "get", "x", None, t0, t1, kind="ok" if kind == "info" else kind, result=v))
        elif f == "put":
            ops.append(op(f"c{j}", "put", "x", rng.choice([1, 2, 3]), t0, t1, kind=kind))
        else:
            ops.append(op(f"c{j}", "cas", "x", (v, rng.choice([1, 2, 3])), t0, t1, kind=kind))
    return ops


def test_search_agrees_with_brute_force() -> None:
    rng = random.Random(11)
    seen = {True: 0, False: 0}
    for _ in range(1500):
        if rng.random() < 0.5:
            ops = small_random_history(rng)
        else:  # valid by construction, then maybe one result changed
            ops = random_history(rng.randrange(10**6), rng.randint(2, 9), 1, rng.randint(2, 4), 0.3)
            if rng.random() < 0.5:
                i = rng.randrange(len(ops))
                if ops[i].f == "get":
                    ops[i] = replace(ops[i], result=rng.choice([None, 1, 2, 3]))
        expected = brute_force(ops)
        seen[expected] += 1
        res = check(ops)
        assert res.valid is expected, (expected, res.explain(), ops)
        for failed in res.failures():  # the window alone is not linearizable either
            assert fails(failed.window)
            assert not brute_force([with_kind(k.op, "info") if k.weakened else k.op for k in failed.window])
    assert min(seen.values()) > 300, seen


# ---------------------------------------------------------------- random histories


@dataclass
class _Planned:
    op: Op
    at: float | None  # when it takes effect (None: never)


def random_history(seed: int, n_ops: int, n_keys: int, n_procs: int, info_rate: float = 0.02) -> list[Op]:
    """A linearizable history by construction: each op takes effect at a random instant
    inside its interval (an info write: some time after its invoke, or never), and results
    come from applying the ops to registers in that order."""
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(n_keys)]
    clock = [rng.random() * 1e-3 for _ in range(n_procs)]
    written: dict[str, list[Any]] = {k: [None] for k in keys}
    plan: list[_Planned] = []
    fresh = 0
    for _ in range(n_ops):
        p = min(range(n_procs), key=clock.__getitem__)
        t0 = clock[p] + rng.expovariate(1 / 0.0005)
        t1 = t0 + rng.expovariate(1 / 0.002)
        clock[p] = t1
        key = rng.choice(keys)
        roll = rng.random()
        value: Any
        if roll < 0.5:
            f, value = "get", None
        elif roll < 0.8:
            fresh += 1
            f, value = "put", fresh
            written[key].append(fresh)
        else:
            fresh += 1
            f, value = "cas", (rng.choice(written[key][-3:]), fresh)
            written[key].append(fresh)
        if f != "get" and rng.random() < info_rate:
            at = t0 + rng.expovariate(1 / 0.01) if rng.random() < 0.5 else None
            plan.append(_Planned(Op(f"c{p}", f, "info", t0, None, key, value), at))
        else:
            plan.append(_Planned(Op(f"c{p}", f, "ok", t0, t1, key, value), rng.uniform(t0, t1)))
    state: dict[str, Any] = {}
    out: list[Op] = []
    for item in sorted(plan, key=lambda x: (x.at is None, x.at or 0.0)):
        o = item.op
        happened = item.at is not None
        if o.f == "get":
            o = replace(o, result=state.get(o.key))  # type: ignore[arg-type]
        elif o.f == "put" and happened:
            state[o.key] = o.value  # type: ignore[index]
        elif o.f == "cas":
            swapped = happened and state.get(o.key) == o.value[0]  # type: ignore[arg-type]
            if swapped:
                state[o.key] = o.value[1]  # type: ignore[index]
            elif o.kind == "ok":
                o = replace(o, kind="fail")
        out.append(o)
    out.sort(key=lambda o: o.invoke_time)
    return out


def test_random_valid_history_is_accepted_quickly() -> None:
    ops = random_history(seed=7, n_ops=5000, n_keys=10, n_procs=5)
    kinds = {(o.f, o.kind) for o in ops}
    assert {("cas", "ok"), ("cas", "fail"), ("put", "info"), ("get", "ok")} <= kinds
    ops = through_format(ops)
    start = time.perf_counter()
    res = check(ops)
    took = time.perf_counter() - start
    print(f"linearizability: {len(ops)} ops, 10 keys, 5 processes: {took:.3f} s")
    assert res.status == "ok", res.explain()


def test_a_failure_too_deep_for_the_budget_is_still_proven() -> None:
    # One busy key: exhausting every order up to a late stale read takes millions of steps.
    ops = random_history(seed=5, n_ops=3000, n_keys=1, n_procs=5, info_rate=0.05)
    g_i = [i for i, o in enumerate(ops) if o.f == "get" and o.kind == "ok"][-20]
    g = ops[g_i]
    old = [o for o in ops if o.f == "put" and o.kind == "ok" and o.complete_time < g.invoke_time - 0.05]  # type: ignore[operator]
    ops[g_i] = replace(g, result=old[-1].value)
    res = check(ops, budget=200_000)
    (failed,) = res.failures()
    assert failed.steps > 200_000  # the full search ran out; a weaker history was shown to fail
    assert len(failed.window) <= 6 and fails(failed.window)
    assert any(k.op is ops[g_i] for k in failed.window)
    # With too small a budget even for that: unknown, never a guess.
    assert check(ops, budget=20_000).status == "unknown"


def test_mutating_a_good_history_into_a_stale_read_is_caught() -> None:
    ops = random_history(seed=3, n_ops=600, n_keys=3, n_procs=4)
    assert check(ops).status == "ok"
    # Find a get g of key k and acknowledged puts p1 < p2 < g in real time: reading p1's
    # (unique) value at g is then impossible.
    target: tuple[int, Any] | None = None
    for gi, g in enumerate(ops):
        if g.f != "get" or g.kind != "ok":
            continue
        puts = [
            o
            for o in ops
            if o.f == "put" and o.kind == "ok" and o.key == g.key and o.complete_time < g.invoke_time  # type: ignore[operator]
        ]
        for p1 in puts:
            later = [p2 for p2 in puts if p2.invoke_time > p1.complete_time]  # type: ignore[operator]
            if later and g.result != p1.value:
                target = (gi, p1.value)
                break
        if target and gi > len(ops) // 2:
            break
    assert target is not None
    gi, stale = target
    bad = list(ops)
    bad[gi] = replace(ops[gi], result=stale)
    text = assert_rejected(bad, ops[gi].key)  # type: ignore[arg-type]
    (failed,) = check(bad).failures()
    assert len(failed.window) <= 6, text
    assert any(k.op is bad[gi] or k.op == bad[gi] for k in failed.window)


# ---------------------------------------------------------------- the log checks


def entry(index: int, value: Any = None, term: int = 1, kind: str = "record") -> dict[str, Any]:
    return {"index": index, "term": term, "kind": kind, "value": value}


def good_logs() -> tuple[dict[str, list[dict[str, Any]]], list[Ack]]:
    log = [
        entry(1, kind="noop"),
        entry(2, "c1-1"),
        entry(3, "c2-1"),
        entry(4, kind="noop", term=2),  # a new leader's entry
        entry(5, kind="noop", term=2),  # a duplicate copy of c1-2 shows as a noop
        entry(6, "c1-2", term=2),
        entry(7, "c3-1", term=2),  # c3-1 timed out (info) but committed: allowed
        entry(8, "c2-2", term=2),
    ]
    logs = {"m1": log, "m2": list(log), "m3": log[3:]}  # m3 was compacted up to 3
    acks = [
        Ack("c1-1", 2, 0.0, 1.0, "c1"),
        Ack("c2-1", 3, 0.5, 1.5, "c2"),
        Ack("c1-2", 6, 2.0, 3.0, "c1"),
        Ack("c2-2", 8, 2.5, 4.0, "c2"),
    ]
    return logs, acks


def test_good_logs_pass() -> None:
    logs, acks = good_logs()
    assert check_logs(logs, acks) == []
    # acks_from_ops takes them from a history.
    ops = [
        op(str(a.process), "record", None, a.value, a.invoke_time, a.complete_time, index=a.index)
        for a in acks
    ]
    ops.append(op("c3", "record", None, "c3-1", 2.2, None, kind="info"))
    assert acks_from_ops(through_format(ops)) == acks


def _checks(violations: list[Any]) -> set[str]:
    for v in violations:
        print(v)
    return {v.check for v in violations}


def test_duplicated_record_is_rejected() -> None:
    logs, acks = good_logs()
    for m in logs.values():
        m.append(entry(9, "c1-2", term=2))  # applied twice, not shown as a noop
    vs = check_logs(logs, acks)
    assert _checks(vs) == {"duplicate", "ack"}
    assert any("c1-2" in v.message and "2 times" in v.message for v in vs)


def test_record_acknowledged_at_an_index_holding_another_value() -> None:
    logs, acks = good_logs()
    acks.append(Ack("c3-9", 7, 2.2, 6.0, "c3"))
    vs = check_logs(logs, acks)
    assert _checks(vs) == {"ack"}
    assert any('"c3-9"' in v.message and '"c3-1"' in v.message and "index 7" in v.message for v in vs)


def test_acknowledged_record_missing_from_a_member() -> None:
    logs, acks = good_logs()
    logs["m2"] = logs["m2"][:6]  # lost c3-1 and c2-2
    vs = check_logs(logs, acks)
    assert _checks(vs) == {"ack"}
    assert any("m2's log ends at index 6" in v.message for v in vs)


def test_members_disagreeing_is_rejected() -> None:
    logs, acks = good_logs()
    logs["m3"] = [dict(e) for e in logs["m3"]]
    logs["m3"][3]["value"] = "c9-9"  # index 7
    vs = check_logs(logs, acks)
    assert "agree" in _checks(vs)
    assert any("disagree at index 7" in v.message for v in vs)


def test_realtime_order_violation_is_rejected() -> None:
    logs, acks = good_logs()
    # c2-1 was invoked after c1-2's acknowledgement yet sits at a lower index.
    acks[1] = Ack("c2-1", 3, 3.5, 3.8, "c2")
    vs = check_logs(logs, acks)
    assert _checks(vs) == {"realtime"}
    assert '"c1-2"' in vs[0].message and '"c2-1"' in vs[0].message


def test_gap_in_a_log_is_rejected() -> None:
    logs, acks = good_logs()
    del logs["m1"][4]
    assert "gap" in _checks(check_logs(logs, acks))


def test_mutating_good_logs_is_caught() -> None:
    logs, acks = good_logs()
    assert check_logs(logs, acks) == []
    m1 = [dict(e) for e in logs["m1"]]
    m1[1]["value"], m1[2]["value"] = m1[2]["value"], m1[1]["value"]  # swap two records
    logs["m1"] = m1
    assert _checks(check_logs(logs, acks)) == {"ack", "agree"}


# -- the campaign summary ---------------------------------------------------------------------------
def test_campaign_summary_gives_the_median_unavailability_of_faults_on_the_leader():
    from chaoslib.faults import Applied, Planned
    from chaoslib.report import Result, summary

    def fault(kind: str, at: float, target: str, leader: str) -> Applied:
        p = Planned(at, kind, "", 2.0, "leader", 0.0, ("n1", "n2", "n3"))
        return Applied(p, at, [target], kind, leader=leader)

    def run(seed: int, waits: list[float], passed: bool = True) -> Result:
        r = Result(seed, 3, "log", 60.0, ["kill"], Path("/tmp"), [])
        for i, w in enumerate(waits):
            at = 10.0 * (i + 1)
            r.applied.append(fault("kill", at, "n1", "n1"))
            r.ops.append(op("c", "record", None, f"r{i}", at + w / 2, at + w, index=i + 1))
        r.applied.append(fault("kill", 100.0, "n2", "n1"))  # a follower killed: not counted
        r.ops.append(op("c", "record", None, "late", 100.0, 109.0, index=99))
        if not passed:
            r.problems.append("did not settle")
        return r

    text = summary([run(1, [0.3, 0.5]), run(2, [0.4], passed=False)], (300, 600))
    assert text.startswith("1 of 2 runs passed\n  FAIL: seed 2, 3 members, log"), text
    row = next(line for line in text.splitlines() if "leader SIGKILL" in line)
    assert row.split()[-3:] == ["3", "0.40s", "-"], row  # three leader kills; the median of 0.3, 0.5, 0.4
    assert next(line for line in text.splitlines() if "SIGSTOP" in line).split()[-3:] == ["0", "-", "-"]
