"""A client history: what the chaos harness records and the checkers judge.

The format (agreed with the harness)
====================================

A history is a JSON-lines file, one *event* per line, as in Jepsen. A client operation is
two events from the same ``process``: an ``invoke`` when the request is sent, then one
completion (``ok``, ``fail`` or ``info``) when the client knows the outcome or gives up::

    {"process": "c1", "kind": "invoke", "f": "put", "key": "k3", "value": 7, "time": 812.250113}
    {"process": "c1", "kind": "ok", "f": "put", "key": "k3", "time": 812.254907}
    {"process": "c2", "kind": "invoke", "f": "get", "key": "k3", "time": 812.251001}
    {"process": "c2", "kind": "ok", "f": "get", "key": "k3", "value": 7, "time": 812.256390}
    {"process": "c1", "kind": "invoke", "f": "cas", "key": "k3", "value": [7, 8], "time": 812.26}
    {"process": "c1", "kind": "fail", "f": "cas", "key": "k3", "time": 812.27}
    {"process": "c3", "kind": "invoke", "f": "record", "value": "c3-17", "time": 812.30}
    {"process": "c3", "kind": "ok", "f": "record", "value": "c3-17", "index": 4411, "time": 812.31}

Fields (absent and ``null`` are the same; :func:`dumps_event` leaves out ``null`` fields):

``process``
    The client's id (a string or an int). A process is single-threaded: it has at most one
    operation outstanding, so a completion belongs to its process's last invoke. A real
    client with several requests in flight writes them under several process ids
    (``"c1/0"``, ``"c1/1"``, ...). After an ``info`` completion the process may invoke again:
    the ``info`` op is closed as far as pairing goes, yet may still take effect later.
``kind``
    ``invoke``; or the outcome: ``ok`` (it definitely happened), ``fail`` (it definitely did
    not happen), ``info`` (unknown: the client timed out or lost the connection; the operation
    may take effect at any time after its invoke, however late, or never).
``f``
    ``put`` | ``get`` | ``cas`` (the kv workload) | ``record`` (the log workload). On a
    completion ``f`` and ``key`` may be left out; if given they must match the invoke.
``key``
    The kv key (``put``, ``get``, ``cas``); absent for ``record``.
``value``
    On the invoke: ``put``'s value, ``cas``'s ``[expect, new]`` (``expect`` null: the key is
    absent), ``record``'s value (unique: ``f"{client}-{seq}"``); null for ``get``. On an
    ``ok`` completion of a ``get``: the value read (null: absent). Elsewhere ignored.
``index``
    On an ``ok`` completion of a ``record``: the log index its acknowledgement named. Other
    completions may carry one too (a read's index, a cas's entry); only ``record``'s is checked.
``error``
    Optional, on a completion: the server's error code or the client's reason, for people.
    It changes one meaning: a ``cas`` ``fail`` *without* ``error`` is the server's answer
    "not swapped" (``{"ok": true, "result": false}``), a read that saw ``current != expect``;
    a ``cas`` ``fail`` *with* ``error`` (``bad_request``, ...) only says nothing happened.
``time``
    Monotonic seconds (``time.monotonic()``) on one clock shared by every client: processes
    on one machine share ``CLOCK_MONOTONIC``. Only order matters; events are sorted by time
    (then by file order) before pairing, so several files may be concatenated.

How the harness should map cruise's replies: ``record``/``put`` answered ``ok`` → ``ok``; a
``cas`` answered ``result: true`` → ``ok``, ``result: false`` → ``fail`` (no ``error``); a
``query`` ``get`` → ``ok`` with the value; ``unavailable``, a timeout or a dropped connection
→ ``info`` for writes (the request may still commit), and ``fail`` or ``info`` for a ``get``
(a read that returned nothing constrains nothing); ``bad_request``/``too_large`` → ``fail``
with ``error``. ``stale`` means this copy applied nothing but an earlier copy may have: ``info``.
An invoke with no completion by the end of the history is taken as ``info``.

:func:`pair` turns events into :class:`Op`\\ s: one per invoke, with its invoke and complete
times (``complete_time`` is ``None`` for ``info``: it never completed).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TextIO, cast

Kind = Literal["invoke", "ok", "fail", "info"]
KINDS: tuple[str, ...] = ("invoke", "ok", "fail", "info")
FS: tuple[str, ...] = ("put", "get", "cas", "record")
KV_FS: tuple[str, ...] = ("put", "get", "cas")


class HistoryError(ValueError):
    """The history is malformed (bad field, completion without invoke, two invokes in flight)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history: an invoke or a completion."""

    process: str | int
    kind: Kind
    time: float
    f: str | None = None
    key: str | None = None
    value: Any = None
    index: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this event, without its ``null`` fields."""
        d: dict[str, Any] = {"process": self.process, "kind": self.kind, "f": self.f}
        if self.key is not None:
            d["key"] = self.key
        if self.value is not None:
            d["value"] = list(self.value) if isinstance(self.value, tuple) else self.value
        if self.index is not None:
            d["index"] = self.index
        if self.error is not None:
            d["error"] = self.error
        d["time"] = self.time
        if self.f is None:
            del d["f"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        """Parse and validate one event object."""
        if not isinstance(d, dict):
            raise HistoryError(f"an event must be a JSON object, not {d!r}")
        kind = d.get("kind")
        if kind not in KINDS:
            raise HistoryError(f"bad kind {kind!r} in {d!r}")
        process = d.get("process")
        if not isinstance(process, str | int) or isinstance(process, bool):
            raise HistoryError(f"bad process {process!r} in {d!r}")
        t = d.get("time")
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise HistoryError(f"bad time {t!r} in {d!r}")
        f = d.get("f")
        if f is not None and f not in FS:
            raise HistoryError(f"bad f {f!r} in {d!r}")
        if kind == "invoke" and f is None:
            raise HistoryError(f"an invoke needs f: {d!r}")
        index = d.get("index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise HistoryError(f"bad index {index!r} in {d!r}")
        key = d.get("key")
        if key is not None and not isinstance(key, str):
            raise HistoryError(f"bad key {key!r} in {d!r}")
        error = d.get("error")
        return cls(
            process=process,
            kind=cast(Kind, kind),
            time=float(t),
            f=f,
            key=key,
            value=d.get("value"),
            index=index,
            error=None if error is None else str(error),
        )


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation: an invoke paired with its completion.

    ``value`` is the invoke's argument (``put``'s value, ``cas``'s ``(expect, new)``,
    ``record``'s value, ``None`` for ``get``); ``result`` is what an ``ok`` ``get`` read.
    ``kind`` is the outcome: ``ok``, ``fail`` or ``info``. ``complete_time`` is ``None`` for
    ``info``: such an operation may take effect at any time after ``invoke_time``, or never.
    """

    process: str | int
    f: str
    kind: Kind
    invoke_time: float
    complete_time: float | None
    key: str | None = None
    value: Any = None
    result: Any = None
    index: int | None = None
    error: str | None = None

    def events(self) -> tuple[Event, ...]:
        """The invoke and completion events of this op (``info`` completes at its invoke time).

        ``pair(e for op in ops for e in op.events())`` gives back ``ops``.
        """
        value = list(self.value) if self.f == "cas" and self.value is not None else self.value
        inv = Event(self.process, "invoke", self.invoke_time, self.f, self.key, value)
        done_t = self.complete_time if self.complete_time is not None else self.invoke_time
        done_value = self.result if self.f == "get" else (value if self.f == "record" else None)
        done = Event(self.process, self.kind, done_t, self.f, self.key, done_value, self.index, self.error)
        return (inv, done)

    def describe(self) -> str:
        """The op as people read it: ``put 7``, ``get``, ``cas 7->8``, ``record c1-3``."""
        if self.f == "cas" and self.value is not None:
            expect, new = self.value
            return f"cas {_show(expect)}->{_show(new)}"
        if self.f in ("put", "record"):
            return f"{self.f} {_show(self.value)}"
        return self.f

    def outcome(self) -> str:
        """The result as people read it: ``ok``, ``-> 7``, ``not swapped``, ``info``, ..."""
        tail = f" ({self.error})" if self.error else ""
        if self.kind == "info":
            return "info (unknown)" + tail
        if self.kind == "fail":
            if self.f == "cas" and self.error is None:
                return "fail (not swapped)"
            return "fail" + tail
        if self.f == "get":
            return f"-> {_show(self.result)}"
        if self.f == "cas":
            return "ok (swapped)"
        if self.f == "record":
            return f"ok @ {self.index}"
        return "ok"


def _show(v: Any) -> str:
    if v is None:
        return "nil"
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=repr)


def dumps_event(e: Event) -> str:
    """One JSON line (no newline) for ``e``."""
    return json.dumps(e.to_json(), separators=(", ", ": "), default=repr)


def loads_events(lines: Iterable[str]) -> list[Event]:
    """Parse JSON lines (blank lines skipped); a bad line raises :class:`HistoryError`."""
    out: list[Event] = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"line {n}: not JSON: {exc}") from None
        try:
            out.append(Event.from_json(obj))
        except HistoryError as exc:
            raise HistoryError(f"line {n}: {exc}") from None
    return out


def load(path: str | Path) -> list[Event]:
    """The events of a JSON-lines history file."""
    with open(path, encoding="utf-8") as fh:
        return loads_events(fh)


def save(path: str | Path, events: Iterable[Event]) -> None:
    """Write ``events`` as a JSON-lines history file."""
    with open(path, "w", encoding="utf-8") as fh:
        for e in events:
            fh.write(dumps_event(e) + "\n")


def load_ops(path: str | Path) -> list[Op]:
    """``pair(load(path))``."""
    return pair(load(path))


def pair(events: Iterable[Event]) -> list[Op]:
    """Pair each invoke with its process's next completion; ops in invoke order.

    Events are taken in time order (ties in the given order). An invoke still open at the
    end becomes an ``info`` op. Raises :class:`HistoryError` on a completion with no open
    invoke, a second invoke while one is open, a completion whose ``f``/``key`` differs from
    its invoke, or a ``cas`` whose value is not ``[expect, new]``.
    """
    ordered = sorted(enumerate(events), key=lambda p: (p[1].time, p[0]))
    open_: dict[str | int, tuple[int, Event]] = {}
    done: list[tuple[int, Op]] = []
    for pos, e in ordered:
        if e.kind == "invoke":
            if e.process in open_:
                raise HistoryError(
                    f"process {e.process!r} invokes {e.f} at {e.time} while an op is still open"
                )
            _check_invoke(e)
            open_[e.process] = (pos, e)
            continue
        got = open_.pop(e.process, None)
        if got is None:
            raise HistoryError(f"{e.kind} of process {e.process!r} at {e.time} with no open invoke")
        pos0, inv = got
        if (e.f is not None and e.f != inv.f) or (e.key is not None and e.key != inv.key):
            raise HistoryError(f"completion {e.to_json()} does not match its invoke {inv.to_json()}")
        done.append((pos0, _op(inv, e)))
    for pos0, inv in open_.values():
        done.append((pos0, _op(inv, None)))
    done.sort(key=lambda p: (p[1].invoke_time, p[0]))
    return [op for _, op in done]


def _check_invoke(e: Event) -> None:
    if e.f in KV_FS and e.key is None:
        raise HistoryError(f"a {e.f} needs a key: {e.to_json()}")
    if e.f == "cas" and not (isinstance(e.value, list | tuple) and len(e.value) == 2):
        raise HistoryError(f"a cas value is [expect, new]: {e.to_json()}")


def _op(inv: Event, done: Event | None) -> Op:
    assert inv.f is not None
    value = tuple(inv.value) if inv.f == "cas" else inv.value
    if done is None or done.kind == "info":
        return Op(
            inv.process,
            inv.f,
            "info",
            inv.time,
            None,
            inv.key,
            value,
            error=None if done is None else done.error,
        )
    result = done.value if (inv.f == "get" and done.kind == "ok") else None
    return Op(
        inv.process,
        inv.f,
        done.kind,
        inv.time,
        done.time,
        inv.key,
        value,
        result,
        done.index,
        done.error,
    )


def events_of(ops: Iterable[Op]) -> Iterator[Event]:
    """Every op's invoke and completion, in time order."""
    evs = [e for op in ops for e in op.events()]
    evs.sort(key=lambda e: e.time)
    return iter(evs)


def by_key(ops: Sequence[Op]) -> dict[str, list[Op]]:
    """The kv ops (``put``/``get``/``cas``) grouped by key, each list in invoke order."""
    out: dict[str, list[Op]] = {}
    for op in ops:
        if op.f in KV_FS and op.key is not None:
            out.setdefault(op.key, []).append(op)
    return out


class Recorder:
    """Appends events to a JSON-lines file as they happen (thread-safe; one line per write).

    ``rec.invoke(p, "put", key="k", value=3)`` then ``rec.complete(p, "ok")``; times are
    ``time.monotonic()`` unless given. Each line is flushed so a crashed harness leaves a
    usable history (its open invokes count as ``info``).
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._open: dict[str | int, Event] = {}

    def write(self, e: Event) -> Event:
        line = dumps_event(e) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()
        return e

    def invoke(
        self, process: str | int, f: str, key: str | None = None, value: Any = None, t: float | None = None
    ) -> Event:
        e = Event(process, "invoke", time.monotonic() if t is None else t, f, key, value)
        with self._lock:
            self._open[process] = e
        return self.write(e)

    def complete(
        self,
        process: str | int,
        kind: Kind,
        value: Any = None,
        index: int | None = None,
        error: str | None = None,
        t: float | None = None,
    ) -> Event:
        with self._lock:
            inv = self._open.pop(process, None)
        if inv is None:
            raise HistoryError(f"process {process!r} has no open invoke")
        e = Event(process, kind, time.monotonic() if t is None else t, inv.f, inv.key, value, index, error)
        return self.write(e)


def with_kind(op: Op, kind: Kind) -> Op:
    """``op`` with another outcome (``info`` drops its completion time)."""
    if kind == "info":
        return replace(op, kind="info", complete_time=None, result=None)
    return replace(op, kind=kind)
