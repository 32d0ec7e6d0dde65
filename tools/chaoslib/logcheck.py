"""The log workload's checks: the members' committed logs against the clients' acknowledgements.

Input: each member's committed log, as the ``entries`` request or the publish stream gives it
(``{"index", "term", "kind", "value"}``; ``kind`` is ``record``, ``noop`` or ``config``; a
duplicate copy of a record shows as a ``noop``), and the records the clients saw acknowledged
(value, the index the acknowledgement named, invoke and complete times: :func:`acks_from_ops`
takes them from a history's ``ok`` ``record`` ops).

The checks (each violation says which, and where):

``ack``
    (a) every acknowledged record is in every member's log exactly once, at the index its
    acknowledgement named.
``agree``
    (b) members agree entry by entry (term, kind, value) on the indexes they all hold.
``realtime``
    (c) if record A was acknowledged before record B was invoked, A's index < B's index.
``duplicate``
    (d) no value appears twice among a log's ``record`` entries (the values are unique by
    construction: ``f"{client}-{seq}"``).
``gap``
    A member's log must be contiguous (indexes ascending, one apart): the other checks read
    a log by index.

Limits: a member's log may start after index 1 (it was compacted by a snapshot); an
acknowledged index before a member's first entry cannot be checked on that member and is
skipped there, as is the "exactly once" count for that member. A log that ends before an
acknowledged index is a violation: collect the logs once every member has caught up.
Records that were never acknowledged (``info``) may or may not be in the logs; they are not
checked. Values compare as canonical JSON (types matter: ``1`` is not ``"1"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .history import Op
from .linearizability import canon

RECORD = "record"
_Add = Callable[[str, str], None]  # (check, message)


@dataclass(frozen=True, slots=True)
class Entry:
    """One committed log entry."""

    index: int
    term: int
    kind: str
    value: Any = None

    @classmethod
    def of(cls, e: Entry | Mapping[str, Any]) -> Entry:
        if isinstance(e, Entry):
            return e
        return cls(int(e["index"]), int(e["term"]), str(e["kind"]), e.get("value"))


@dataclass(frozen=True, slots=True)
class Ack:
    """A record a client saw acknowledged at ``index``."""

    value: Any
    index: int
    invoke_time: float
    complete_time: float
    process: str | int = ""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken property: ``check`` is ``ack``, ``agree``, ``realtime``, ``duplicate`` or ``gap``."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


def acks_from_ops(ops: Iterable[Op]) -> list[Ack]:
    """The acknowledged records of a history: its ``ok`` ``record`` ops with an index."""
    out: list[Ack] = []
    for op in ops:
        if op.f == "record" and op.kind == "ok" and op.index is not None and op.complete_time is not None:
            out.append(Ack(op.value, op.index, op.invoke_time, op.complete_time, op.process))
    return out


def _show(v: Any) -> str:
    return "nil" if v is None else canon(v)


def _desc(e: Entry) -> str:
    return f"{e.kind} {_show(e.value)} (term {e.term})" if e.kind == RECORD else f"{e.kind} (term {e.term})"


class _Log:
    """One member's log, by index."""

    def __init__(self, member: str, entries: Iterable[Entry | Mapping[str, Any]]) -> None:
        self.member = member
        self.entries = [Entry.of(e) for e in entries]
        self.by_index: dict[int, Entry] = {}
        self.first = self.entries[0].index if self.entries else 1
        self.last = self.entries[-1].index if self.entries else 0
        self.where: dict[str, list[int]] = {}  # record value -> indexes holding it
        for e in self.entries:
            self.by_index.setdefault(e.index, e)
            if e.kind == RECORD:
                self.where.setdefault(canon(e.value), []).append(e.index)


def check_logs(
    logs: Mapping[str, Sequence[Entry | Mapping[str, Any]]],
    acks: Sequence[Ack],
    *,
    limit: int = 20,
) -> list[Violation]:
    """Every violation of the checks above (at most ``limit`` per check, then a count)."""
    members = [_Log(m, es) for m, es in sorted(logs.items())]
    found: dict[str, list[Violation]] = {}

    def add(check: str, msg: str) -> None:
        found.setdefault(check, []).append(Violation(check, msg))

    for log in members:
        _check_gaps(log, add)
        _check_duplicates(log, add)
    for ack in acks:
        for log in members:
            _check_ack(ack, log, add)
    _check_agreement(members, add)
    _check_realtime(acks, add)

    out: list[Violation] = []
    for check in ("ack", "agree", "realtime", "duplicate", "gap"):
        vs = found.get(check, [])
        out += vs[:limit]
        if len(vs) > limit:
            out.append(Violation(check, f"... and {len(vs) - limit} more {check} violations"))
    return out


def _check_gaps(log: _Log, add: _Add) -> None:
    prev: int | None = None
    for e in log.entries:
        if prev is not None and e.index != prev + 1:
            add("gap", f"member {log.member}: its log goes from index {prev} to {e.index}")
        prev = e.index


def _check_duplicates(log: _Log, add: _Add) -> None:
    for indexes in log.where.values():
        if len(indexes) > 1:
            e = log.by_index[indexes[0]]
            add(
                "duplicate",
                f"member {log.member}: record {_show(e.value)} appears {len(indexes)} times, at indexes "
                + ", ".join(map(str, indexes)),
            )


def _check_ack(ack: Ack, log: _Log, add: _Add) -> None:
    who = f"record {_show(ack.value)} acknowledged to {ack.process} at index {ack.index}"
    if ack.index < log.first:
        return  # compacted on this member: cannot be checked here
    at = log.by_index.get(ack.index)
    if at is None:
        add("ack", f"{who}: member {log.member}'s log ends at index {log.last}")
    elif at.kind != RECORD or canon(at.value) != canon(ack.value):
        add("ack", f"{who}: member {log.member} holds {_desc(at)} there")
    elsewhere = [i for i in log.where.get(canon(ack.value), []) if i != ack.index]
    if elsewhere:
        add("ack", f"{who}: member {log.member} also has it at index " + ", ".join(map(str, elsewhere)))


def _check_agreement(members: Sequence[_Log], add: _Add) -> None:
    for i, a in enumerate(members):
        for b in members[i + 1 :]:
            lo, hi = max(a.first, b.first), min(a.last, b.last)
            for index in range(lo, hi + 1):
                ea, eb = a.by_index.get(index), b.by_index.get(index)
                if ea is None or eb is None:
                    continue  # a gap, reported apart
                if (ea.term, ea.kind, canon(ea.value)) != (eb.term, eb.kind, canon(eb.value)):
                    add(
                        "agree",
                        f"members {a.member} and {b.member} disagree at index {index}: "
                        f"{_desc(ea)} vs {_desc(eb)}",
                    )
                    break  # the first difference per pair; the rest usually follows from it


def _check_realtime(acks: Sequence[Ack], add: _Add) -> None:
    """For each B, the highest index among acks completed before B's invoke must be < B's."""
    by_complete = sorted(acks, key=lambda a: a.complete_time)
    best: Ack | None = None
    j = 0
    for b in sorted(acks, key=lambda a: a.invoke_time):
        while j < len(by_complete) and by_complete[j].complete_time < b.invoke_time:
            a = by_complete[j]
            if best is None or a.index > best.index:
                best = a
            j += 1
        if best is not None and best.index >= b.index:
            add(
                "realtime",
                f"record {_show(best.value)} ({best.process}) was acknowledged at index {best.index} "
                f"at t={best.complete_time:.6f}, before record {_show(b.value)} ({b.process}) was invoked "
                f"at t={b.invoke_time:.6f}, yet the later one has the lower index {b.index}",
            )
