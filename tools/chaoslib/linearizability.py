"""Is a kv history linearizable? A register per key, checked key by key.

The model
=========

Each key is a register that starts absent (``None``). Operations, from
:mod:`chaoslib.history`:

* ``put v``: sets the register to ``v``;
* ``get`` returning ``v``: the register held ``v`` (``None``: absent);
* ``cas (e, n)`` ``ok``: the register held ``e`` (``None``: absent) and now holds ``n``;
* ``cas (e, n)`` ``fail`` without ``error`` (the server said "not swapped"): a read that saw a
  value other than ``e``; it changed nothing;
* any ``fail`` otherwise (a ``put``, a ``get``, a ``cas`` with ``error``): it did not happen
  and observed nothing, so it is dropped; an ``info`` ``get`` observed nothing: dropped;
* an ``info`` ``put``/``cas`` may have taken effect at any single point after its invoke,
  however late, or never (an ``info`` ``cas`` that took effect found ``e`` and wrote ``n``).

Values compare as msgpack does (and as the ``kv`` machine's ``cas`` does): same types and
contents, so ``1``, ``1.0`` and ``true`` differ and maps compare in any key order; a put of
``None`` is the same as absent.

A history is linearizable when the operations can be put in one order that respects real
time (an op that completed before another was invoked comes first; each op takes effect at
one instant between its invoke and its completion) and in which every result is what the
register gives. Linearizability is local (Herlihy & Wing): the whole kv store is linearizable
iff each key's sub-history is, so each key is searched alone (Lowe's P-compositionality).

The search
==========

Wing & Gong's search with Lowe's memoization (the "WGL" algorithm, as in Porcupine): the
invoke and completion entries of the key's ops form a time-ordered linked list; the search
repeatedly takes a not-yet-linearized op whose invoke comes before every pending completion,
applies it to the register if the result agrees, and lifts it out of the list; when no
candidate is left it backtracks. A configuration (the set of linearized ops as an int bitset,
the register's value) already explored is never explored again, which keeps the search
near-linear for histories with a few concurrent clients. The search succeeds once every op
that completed is linearized.

``info`` writes (optional ops: no completion, so they never force anything) would multiply
the configurations, since each may be taken at any point or never. Three exact reductions
keep them in check:

* an optional op is taken only right before an op that needs it: any linearization can be
  rearranged so that each run of optional ops is followed by a completed op that was invalid
  before the run, so optional ops are tried only when a candidate is invalid, and only those
  that could make one valid (a write of the value it must read, a cas, or, for a "not
  swapped" cas that needs the register changed, any write);
* a value that no op reads or expects is replaced by one stand-in, ``UNREAD``: the register's
  answers cannot tell such values apart. Optional writes of it are interchangeable, so only
  the earliest pending one is tried, and a configuration explored having used fewer of them
  stands for the same configuration having used more;
* such writes are dropped beforehand: all of them when the key has no "not swapped" cas
  (taking effect or not, they change no verdict), else all but the earliest, as many as
  there are "not swapped" cas (each can use one at most).

The search was checked against a brute-force enumeration of every order on small random
histories (see the tests).

Limits
======

* The register starts absent: run on fresh keys (or pass ``initial``).
* Only one clock: ``time`` must be comparable across clients. Equal times count as
  overlapping (the lenient reading).
* Each key's search has a step budget; when it runs out that key's verdict is ``unknown``
  (never a guess). The worst case is exponential in the number of concurrent ops. Proving a
  history *not* linearizable means exhausting every order up to the failure, which costs far
  more than finding one order for a good history, more so with many ``info`` writes and
  "not swapped" cas on one key. So when the budget runs out, weaker histories are tried
  (without the reads that completed well before the point the search reached): if one fails,
  so does the key. Otherwise ``unknown``; spreading the load over more keys keeps each
  search small.
* ``delete`` is not modelled.

When a key is not linearizable, the explanation is a small window of its operations that on
its own cannot be linearized. It is shrunk from the key's history only by changes that cannot
turn a linearizable history into a non-linearizable one, so the window is evidence on its own:
cut the history after the earliest completion at which it already fails (ops still pending then
become ``info``); drop reads (first all those before a point found by binary search, then
in groups, then one by one); drop writes whose values nothing left reads (with no "not
swapped" ``cas`` left); and weaken acknowledged writes to ``info`` (marked ``*`` in the
table). The shrinking runs a bounded number of searches in bounded time, so the window is
small, not necessarily the smallest.
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .history import Op, by_key

Status = Literal["ok", "fail", "unknown"]

DEFAULT_BUDGET = 5_000_000  # search steps per key (about a million a second)
SHRINK_CHECKS = 400  # searches the shrinking may run per failing key
SHRINK_BUDGET = 200_000  # steps per shrinking search, at least (or twice the check's own)
SHRINK_SECONDS = 5.0  # wall time the shrinking may take per failing key

# How a kept op acts on the register.
_W, _R, _CAS, _RN = 0, 1, 2, 3  # write a; read a; cas a->b; read something other than a


@dataclass(frozen=True, slots=True)
class ModelOp:
    """One op as the search sees it: what it does to the register (``code`` with arguments
    ``a``, ``b``: canonical values); ``optional``: it may take effect at any time after its
    invoke, or never (``info``, or an acknowledged write the shrinking weakened)."""

    op: Op
    code: int
    a: str
    b: str
    optional: bool
    weakened: bool = False  # an acknowledged write the shrinking turned into optional

    @property
    def invoke(self) -> float:
        return self.op.invoke_time

    @property
    def complete(self) -> float:
        if self.optional or self.op.complete_time is None:
            return math.inf
        return self.op.complete_time


def canon(v: Any) -> str:
    """A value's identity for comparisons: canonical JSON (``1``, ``1.0``, ``true`` differ)."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=repr)


ABSENT = canon(None)
UNREAD = "<unread>"  # stands for any value that no op reads or expects (never valid JSON)


def _compile(op: Op) -> ModelOp | None:
    """The search's view of ``op``, or ``None`` when it constrains nothing."""
    if op.f == "get":
        return ModelOp(op, _R, canon(op.result), "", False) if op.kind == "ok" else None
    if op.f == "put":
        if op.kind == "fail":
            return None
        return ModelOp(op, _W, canon(op.value), "", op.kind == "info")
    if op.f == "cas":
        expect, new = op.value
        if op.kind == "ok":
            return ModelOp(op, _CAS, canon(expect), canon(new), False)
        if op.kind == "info":
            return ModelOp(op, _CAS, canon(expect), canon(new), True)
        if op.error is None:
            return ModelOp(op, _RN, canon(expect), "", False)
        return None
    return None


def _observed(kops: Iterable[ModelOp]) -> set[str]:
    """Values some op needs to find in the register (reads' results, cas' expects)."""
    return {k.a for k in kops if k.code in (_R, _CAS)}


def _written(k: ModelOp) -> str:
    return k.a if k.code == _W else k.b


def _is_write(k: ModelOp) -> bool:
    return k.code in (_W, _CAS)


def _prune(kops: list[ModelOp]) -> list[ModelOp]:
    """Drop optional writes that cannot change the verdict (exact).

    With no "not swapped" cas, an optional write of a value nothing reads or expects is
    dropped: wherever it takes effect, only a write can follow it. With some, such a write
    can only serve to make one of them see a change, one write each: of the optional plain
    writes of values nothing compares against, the earliest invoked, as many as there are
    "not swapped" cas, are kept.
    """
    differs = [k.a for k in kops if k.code == _RN]
    seen = _observed(kops)
    if not differs:
        return [k for k in kops if not (k.optional and _is_write(k) and _written(k) not in seen)]
    seen.update(differs)
    spares = sorted(
        (k.invoke, j) for j, k in enumerate(kops) if k.optional and k.code == _W and k.a not in seen
    )
    if len(spares) <= len(differs):
        return kops
    drop = {j for _, j in spares[len(differs) :]}
    return [k for j, k in enumerate(kops) if j not in drop]


def _merge_unread(kops: list[ModelOp], init: str) -> tuple[list[ModelOp], str]:
    """Write every value no op compares against (reads, cas expects, "not swapped" expects)
    as the one value :data:`UNREAD`: the register's answers cannot tell such values apart,
    so configurations that differ only in them are the same to the search."""
    seen = _observed(kops) | {k.a for k in kops if k.code == _RN}
    out: list[ModelOp] = []
    for k in kops:
        if k.code == _W and k.a not in seen:
            k = replace(k, a=UNREAD)
        elif k.code == _CAS and k.b not in seen:
            k = replace(k, b=UNREAD)
        out.append(k)
    return out, (init if init in seen else UNREAD)


@dataclass(frozen=True, slots=True)
class Search:
    """What a search found: ``linearizable`` (``None``: out of budget), the steps it took (one
    candidate considered or one backtrack), and ``horizon``: the latest completion time it
    reached in any order (when it fails, the failure usually shows by then)."""

    linearizable: bool | None
    steps: int
    horizon: float


def search(kops: Sequence[ModelOp], initial: str = ABSENT, budget: int = DEFAULT_BUDGET) -> Search:
    """WGL search over one key's ops. See the module docstring; how the optional ops are placed
    is explained where they are."""
    n = len(kops)
    required = [not k.optional for k in kops]
    remaining = sum(required)
    if remaining == 0:
        return Search(True, 0, -math.inf)
    codes = [k.code for k in kops]
    arg_a = [k.a for k in kops]
    arg_b = [k.b for k in kops]
    invoked = [k.invoke for k in kops]

    # Linked lists over node ids: the call of op i is node i, the completion of a required op
    # i is node n + i. The list at REQ holds the required ops' calls and completions in time
    # order (a call first at equal times); the optional ops' calls are in lists, each in
    # invoke order: writes of UNREAD (SPARE_L), other writes (W_L), and cas, one list per
    # expected value (its head at ``cas_heads[value]``).
    REQ, SPARE_L, W_L = 2 * n, 2 * n + 1, 2 * n + 2
    expects = sorted({arg_a[i] for i in range(n) if not required[i] and codes[i] == _CAS})
    cas_heads = {v: 2 * n + 3 + j for j, v in enumerate(expects)}
    size = 2 * n + 3 + len(expects)
    nxt = [-1] * size
    prv = [-1] * size
    tails = list(range(size))
    entries = [(k.invoke, 0, i) for i, k in enumerate(kops) if required[i]]
    entries += [(k.complete, 1, i) for i, k in enumerate(kops) if required[i]]
    entries.sort()
    for _, is_ret, i in entries:
        node = i + n * is_ret
        nxt[tails[REQ]], prv[node], tails[REQ] = node, tails[REQ], node
    for _, i in sorted((k.invoke, i) for i, k in enumerate(kops) if not required[i]):
        lst = cas_heads[arg_a[i]] if codes[i] == _CAS else SPARE_L if arg_a[i] == UNREAD else W_L
        nxt[tails[lst]], prv[i], tails[lst] = i, tails[lst], i
    # Which values an optional cas turns into which (to close ``needs`` over cas chains).
    made_from: dict[str, set[str]] = {}
    for i in range(n):
        if not required[i] and codes[i] == _CAS:
            made_from.setdefault(arg_b[i], set()).add(arg_a[i])

    # Optional ops are placed only where needed. Any linearization can be rearranged so that
    # each run of optional ops is followed by a required op that was invalid before the run: a
    # run followed by an op valid without it can move after that op, or is overwritten by it
    # and dropped. So a configuration first tries its required candidates (pass 0: the calls
    # before the first pending completion, whose time is ``limit``), and only if one of them
    # is invalid in the current state does it try runs of the optional ops invoked by then:
    # cas (pass 1), the first write of UNREAD (pass 2: they are interchangeable), then writes
    # of a value some invalid candidate needs (pass 3). A write of another value is tried only
    # for a "not swapped" cas that needs the register changed, and only when no write of
    # UNREAD is there to do it. Inside a run (``run_from``: the state before it) only ops
    # invalid in ``run_from`` may follow, and only cas may extend it.
    empty: frozenset[str] = frozenset()
    run_from: str | None = None
    phase = 0
    limit = math.inf
    needs: frozenset[str] = empty
    need_any = False
    # The memo: configuration -> the fewest writes of UNREAD used when it was explored. Those
    # are used earliest first, so using fewer leaves a superset of options: a configuration
    # explored (and failed) with fewer used subsumes the same one with more. Their bits are
    # left out of the set.
    cache: dict[tuple[int, str, str | None], int] = {}
    stack: list[tuple[int, str, str | None, int, float, frozenset[str], bool]] = []
    bits = [0 if not required[i] and codes[i] == _W and arg_a[i] == UNREAD else 1 << i for i in range(n)]
    spares_used = 0
    horizon = -math.inf
    state = initial
    linearized = 0
    steps = 0
    node = nxt[REQ]
    while remaining:
        steps += 1
        if steps > budget:
            return Search(None, steps, horizon)
        backtrack = False
        if phase == 0:
            if node < 0 or node >= n:  # the first pending completion: the end of pass 0
                if node < 0:
                    backtrack = True
                else:
                    limit = kops[node - n].complete
                    horizon = max(horizon, limit)
                    if run_from is None:
                        needs, need_any = _needs(nxt, REQ, n, codes, arg_a, state, made_from)
                        backtrack = not needs and not need_any
                    if not backtrack:
                        head = cas_heads.get(state)
                        phase, node = 1, (-1 if head is None else nxt[head])
                        continue
        elif node < 0 or invoked[node] > limit:  # the end of this pass
            if phase < 3 and run_from is None:
                phase += 1
                node = nxt[SPARE_L if phase == 2 else W_L]
                continue
            backtrack = True
        if backtrack:
            if not stack:  # nothing left to undo: not linearizable
                return Search(False, steps, horizon)
            i, state, run_from, phase, limit, needs, need_any = stack.pop()
            linearized ^= bits[i]
            if phase == 2:
                spares_used -= 1
            if phase == 0:
                ret = n + i
                p = prv[ret]
                nxt[p] = ret
                if nxt[ret] >= 0:
                    prv[nxt[ret]] = ret
                remaining += 1
            p = prv[i]
            nxt[p] = i
            if nxt[i] >= 0:
                prv[nxt[i]] = i
            node = -1 if phase == 2 else nxt[i]
            continue

        i = node
        node = -1 if phase == 2 else nxt[i]
        code = codes[i]
        a = arg_a[i]
        if run_from is not None:  # only an op the run made valid
            if code == _W or (code == _RN and run_from != a) or (code != _RN and run_from == a):
                continue
        elif phase == 3 and a not in needs:
            first_spare = nxt[SPARE_L]
            if not need_any or (first_spare >= 0 and invoked[first_spare] <= limit):
                continue
        if code == _W:
            new = a
        elif code == _RN:
            if state == a:
                continue
            new = state
        else:
            if state != a:
                continue
            new = state if code == _R else arg_b[i]
        run = None if phase == 0 else (state if run_from is None else run_from)
        lin = linearized | bits[i]
        conf = (lin, new, run)
        used = spares_used + 1 if phase == 2 else spares_used
        if cache.get(conf, used + 1) <= used:
            continue
        cache[conf] = used
        stack.append((i, state, run_from, phase, limit, needs, need_any))
        state, linearized, run_from, spares_used = new, lin, run, used
        p, q = prv[i], nxt[i]
        nxt[p] = q
        if q >= 0:
            prv[q] = p
        if phase == 0:
            ret = n + i
            p, q = prv[ret], nxt[ret]
            nxt[p] = q
            if q >= 0:
                prv[q] = p
            remaining -= 1
        phase, node = 0, nxt[REQ]
    return Search(True, steps, horizon)


def _needs(
    nxt: list[int],
    req_head: int,
    n: int,
    codes: list[int],
    arg_a: list[str],
    state: str,
    made_from: dict[str, set[str]],
) -> tuple[frozenset[str], bool]:
    """What the invalid required candidates need: the values some must read (closed under the
    optional cas that could write them), and whether a "not swapped" cas needs any change."""
    needs: set[str] = set()
    need_any = False
    node = nxt[req_head]
    while 0 <= node < n:
        code, a = codes[node], arg_a[node]
        if code == _RN:
            need_any = need_any or state == a
        elif code != _W and state != a:
            needs.add(a)
        node = nxt[node]
    todo = [v for v in needs if v in made_from]
    while todo:
        for v in made_from.get(todo.pop(), ()):
            if v not in needs:
                needs.add(v)
                todo.append(v)
    return frozenset(needs), need_any


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key; for ``fail``, ``window`` and ``explanation`` say why."""

    key: str
    status: Status
    ops: int  # ops the search considered (after dropping those that constrain nothing)
    steps: int
    window: tuple[ModelOp, ...] = ()
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for a history: ``fail`` if any key fails, else ``unknown`` if any key ran
    out of budget, else ``ok``."""

    status: Status
    keys: dict[str, KeyResult] = field(default_factory=dict)

    @property
    def valid(self) -> bool | None:
        return {"ok": True, "fail": False}.get(self.status)

    def failures(self) -> list[KeyResult]:
        return [r for r in self.keys.values() if r.status == "fail"]

    def explain(self) -> str:
        """A readable report: every failing or unknown key, or one line when all is well."""
        if self.status == "ok":
            return f"linearizable: {len(self.keys)} keys, {sum(r.ops for r in self.keys.values())} ops"
        return "\n\n".join(r.explanation for r in self.keys.values() if r.status != "ok")


def check(
    ops: Sequence[Op],
    *,
    initial: Any = None,
    budget: int = DEFAULT_BUDGET,
    shrink_checks: int = SHRINK_CHECKS,
) -> CheckResult:
    """Check the kv ops of a history (``record`` ops are ignored), key by key."""
    t0 = min((op.invoke_time for op in ops), default=0.0)
    results: dict[str, KeyResult] = {}
    for key, kops in sorted(by_key(ops).items()):
        results[key] = check_key(
            key, kops, initial=initial, budget=budget, shrink_checks=shrink_checks, t0=t0
        )
    statuses = {r.status for r in results.values()}
    status: Status = "fail" if "fail" in statuses else "unknown" if "unknown" in statuses else "ok"
    return CheckResult(status, results)


def check_key(
    key: str,
    ops: Sequence[Op],
    *,
    initial: Any = None,
    budget: int = DEFAULT_BUDGET,
    shrink_checks: int = SHRINK_CHECKS,
    t0: float | None = None,
) -> KeyResult:
    """Check one key's ops; on failure shrink to a window and explain it."""
    kops = _prune([k for k in (_compile(op) for op in ops) if k is not None])
    merged, init = _merge_unread(kops, canon(initial))
    found = search(merged, init, budget)
    steps = found.steps
    if found.linearizable:
        return KeyResult(key, "ok", len(kops), steps)
    failing: list[ModelOp] | None = kops
    step_budget = max(SHRINK_BUDGET, 2 * steps)
    if found.linearizable is None:
        failing = _rescue(kops, canon(initial), found.horizon, budget // 4)
        step_budget = budget // 4
    if failing is None:
        msg = (
            f"key {key!r}: unknown: search budget exceeded ({budget} steps over {len(kops)} ops); "
            "raise the budget or check a shorter history"
        )
        return KeyResult(key, "unknown", len(kops), steps, explanation=msg)
    window = shrink(failing, canon(initial), shrink_checks, hint=found.horizon, step_budget=step_budget)
    if t0 is None:
        t0 = min((k.invoke for k in kops), default=0.0)
    text = explain(key, window, len(kops), t0, initial)
    return KeyResult(key, "fail", len(kops), steps, tuple(window), text)


def _rescue(kops: list[ModelOp], init: str, horizon: float, budget: int) -> list[ModelOp] | None:
    """When the search ran out of budget: a weaker history that is shown to fail, or None.

    Proving failure means exhausting every order up to it; without the reads that completed
    well before the point the search reached (its horizon, where the failure usually is),
    there are far fewer orders, and a weaker history that fails proves the whole one does.
    """
    cuts = sorted(k.complete for k in kops if not k.optional and k.complete <= horizon)
    for frac in (0.99, 0.9, 0.5):
        if not cuts:
            break
        weaker = _prune(_reads_since(kops, cuts[int(frac * (len(cuts) - 1))]))
        if fails(weaker, init, budget):
            return weaker
    return None


def fails(kops: Sequence[ModelOp], initial: str = ABSENT, budget: int = SHRINK_BUDGET) -> bool:
    """Whether ``kops`` (as :func:`check_key` prepares them) are shown not linearizable."""
    merged, init = _merge_unread(_prune(list(kops)), initial)
    return search(merged, init, budget).linearizable is False


def _reads_since(kops: Sequence[ModelOp], t: float) -> list[ModelOp]:
    """The history without the reads that completed before ``t``."""
    return [k for k in kops if _is_write(k) or k.complete >= t]


def _prefix(kops: Sequence[ModelOp], t: float) -> list[ModelOp]:
    """The history cut at time ``t``: ops invoked by then; those still pending become optional
    (writes) or are dropped (reads)."""
    out: list[ModelOp] = []
    for k in kops:
        if k.invoke > t:
            continue
        if k.complete <= t:
            out.append(k)
        elif _is_write(k):
            out.append(k if k.optional else replace(k, optional=True, weakened=True))
    return out


class _Budget:
    """The searches the shrinking may still run: a number, and a deadline."""

    def __init__(self, n: int, seconds: float, init: str, steps: int) -> None:
        self.left = n
        self.deadline = time.monotonic() + seconds
        self.init = init
        self.steps = steps

    def fails(self, kops: Sequence[ModelOp]) -> bool:
        if self.left <= 0 or time.monotonic() > self.deadline:
            self.left = 0
            return False
        self.left -= 1
        return fails(kops, self.init, self.steps)


def shrink(
    kops: Sequence[ModelOp],
    init: str = ABSENT,
    max_checks: int = SHRINK_CHECKS,
    seconds: float = SHRINK_SECONDS,
    hint: float = math.inf,
    step_budget: int = SHRINK_BUDGET,
) -> list[ModelOp]:
    """A small non-linearizable window of a non-linearizable key history (see module doc);
    ``hint``: a time by which it probably fails already (:attr:`Search.horizon`)."""
    budget = _Budget(max_checks, seconds, init, step_budget)
    cur = _prune(list(kops))
    # Cut after the earliest completion where the history already fails. A prefix that fails
    # makes every longer one fail, so: from the hint, probe earlier cuts 1, 2, 4, ... back
    # (failing searches are the slow ones, and the failure is usually just before the hint),
    # then a binary search between the last that passed (lo) and the first that fails (hi).
    cuts = sorted({k.complete for k in cur if not k.optional})
    lo, hi = -1, len(cuts) - 1  # the whole history (the last cut) fails
    probe = min(max(bisect.bisect_right(cuts, hint) - 1, 0), hi)
    if probe < hi:
        if budget.fails(_prefix(cur, cuts[probe])):
            hi = probe
            step = 1
            while hi - step > lo:
                if not budget.fails(_prefix(cur, cuts[hi - step])):
                    lo = hi - step
                    break
                hi -= step
                step *= 2
        else:
            lo = probe
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if budget.fails(_prefix(cur, cuts[mid])):
            hi = mid
        else:
            lo = mid
    if cuts:
        cur = _prune(_prefix(cur, cuts[hi]))
    # Drop the reads that completed before the latest time it still fails without them (the
    # later that time, the more reads go and the weaker the history: a binary search).
    starts = sorted({k.complete for k in cur if not _is_write(k)})
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if budget.fails(_reads_since(cur, starts[mid])):
            lo = mid
        else:
            hi = mid - 1
    if lo > 0:
        cur = _prune(_reads_since(cur, starts[lo]))

    changed = True
    while changed and budget.left > 0:
        changed = False
        # Drop reads.
        reads = [k for k in cur if not _is_write(k)]
        cur, did = _ddmin(cur, reads, _without, budget)
        changed |= did
        # Drop writes whose value nothing left reads (sound only with no "not swapped" cas).
        if not any(k.code == _RN for k in cur):
            seen = _observed(cur)
            unread = [k for k in cur if _is_write(k) and _written(k) not in seen]
            cur, did = _ddmin(cur, unread, _without, budget)
            changed |= did
        # Weaken acknowledged writes to "may have happened any time after invoke".
        acked = [k for k in cur if _is_write(k) and not k.optional]
        cur, did = _ddmin(cur, acked, _weaken, budget)
        changed |= did
        cur = _prune(cur)
    return sorted(cur, key=lambda k: (k.invoke, k.complete))


def _without(group: list[ModelOp], cur: list[ModelOp]) -> list[ModelOp]:
    ids = {id(k) for k in group}
    return [k for k in cur if id(k) not in ids]


def _weaken(group: list[ModelOp], cur: list[ModelOp]) -> list[ModelOp]:
    ids = {id(k) for k in group}
    return [replace(k, optional=True, weakened=True) if id(k) in ids else k for k in cur]


def _ddmin(
    cur: list[ModelOp],
    candidates: Sequence[ModelOp],
    apply: Callable[[list[ModelOp], list[ModelOp]], list[ModelOp]],
    budget: _Budget,
) -> tuple[list[ModelOp], bool]:
    """Apply ``apply`` to groups of ``candidates`` (all, then halves, quarters, ... then single
    ops), keeping each change under which ``cur`` still fails. Returns (cur, changed)."""
    cands = list(candidates)
    changed = False
    size = max(1, len(cands))
    while cands and budget.left > 0:
        i = 0
        while i < len(cands) and budget.left > 0:
            group = cands[i : i + size]
            trial = apply(group, cur)
            if budget.fails(trial):
                cur = trial
                del cands[i : i + size]
                changed = True
            else:
                i += size
        if size == 1:
            break
        size = max(1, size // 2)
    return cur, changed


def explain(key: str, window: Sequence[ModelOp], total: int, t0: float, initial: Any = None) -> str:
    """The failing window as a small table; times in seconds since ``t0``."""
    start = "absent" if initial is None else f"holding {canon(initial)}"
    if len(window) == 1:
        what = f"this operation alone (shrunk from {total}) contradicts a register that starts {start}"
    else:
        what = (
            f"no order of these {len(window)} operations (shrunk from {total}) respects both "
            f"real time and a register that starts {start}"
        )
    head = f"key {key!r} is not linearizable: {what}"
    rows = [("process", "op", "invoke t", "complete t", "result")]
    for k in window:
        op = k.op
        done = "-" if op.complete_time is None else f"{op.complete_time - t0:.6f}"
        result = op.outcome() + ("*" if k.weakened else "")
        rows.append((str(op.process), op.describe(), f"{op.invoke_time - t0:.6f}", done, result))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = [head]
    for r in rows:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    lines.append(f"  (times: seconds since the history's first invoke, monotonic {t0:.6f})")
    if any(k.weakened for k in window):
        lines.append("  * only needed as 'may have taken effect at any time after its invoke'")
    return "\n".join(lines)
