"""The built-in ``kv`` state machine: a map of string keys to msgpack values.

Records (the ``value`` of a ``record`` request) and what ``apply`` returns for them:

- ``{"put": KEY, "value": V}``: sets KEY to V; result nil.
- ``{"delete": KEY}``: removes KEY; result true when KEY existed, else false.
- ``{"cas": KEY, "expect": E, "value": V}``: sets KEY to V only when KEY's value equals E
  (E nil: KEY is absent, or holds nil); result true when it set it, else false.

Queries (``query`` requests), answered against the applied state:

- ``{"get": KEY}``: KEY's value, or nil when absent.
- ``{"keys": PREFIX}``: the keys starting with PREFIX (nil: every key), sorted.

Keys are strings; values any msgpack value. Values are stored as msgpack decodes them
(arrays as lists, binary as bytes), so an embedded ``Node.record`` of a tuple stores the
same list that a follower decodes from the wire, and a caller's later change to the object it
recorded changes nothing here. ``cas`` compares values as msgpack values: equal types and
contents (``1`` is not ``1.0`` nor ``true``), maps regardless of key order.

A record this machine does not understand (not a map, no or several commands, a key that is not
a string, a missing or unknown field) changes nothing; ``apply`` returns ``{"error": TEXT}``,
the same on every member. A query it does not understand raises :class:`~cruise.fsm.BadQuery`,
which the member answers ``bad_request``.

``snapshot()`` is a msgpack array of maps that together hold every key, in the map's order
(the order keys were first put, the same on every member); ``restore(data)`` replaces the map
with a snapshot's. ``snapshot_later()`` copies the map (one C-level copy of its slots: values
are never changed in place, only replaced) and encodes the copy elsewhere, a few thousand keys
per piece, so a member's loop pauses only for the copy and a large map never holds the GIL
for long.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import msgpack

from ..fsm import BadQuery, StateMachine

__all__ = ["KVMachine"]

# The fields each command may carry (its own name first).
_FIELDS = {
    "put": ("put", "value"),
    "delete": ("delete",),
    "cas": ("cas", "expect", "value"),
}
_QUERY_HELP = 'a kv query is {"get": KEY} or {"keys": PREFIX}'


class KVMachine(StateMachine):
    """The ``kv`` state machine (see the module docstring)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def apply(self, value: Any, index: int) -> Any:
        if not isinstance(value, dict):
            return _error(f"a kv record must be a map, got {_kind(value)}")
        ops = [op for op in _FIELDS if op in value]
        if len(ops) != 1:
            return _error(
                "a kv record names one command: put, delete or cas"
                + ("" if not ops else f" (got {', '.join(ops)})")
            )
        op = ops[0]
        fields = _FIELDS[op]
        extra = sorted(str(k) for k in value if k not in fields)
        if extra:
            return _error(f"{op}: unknown field {extra[0]!r} (a {op} has {', '.join(fields)})")
        missing = [f for f in fields if f not in value]
        if missing:
            return _error(f"{op}: missing field {missing[0]!r}")
        key = value[op]
        if type(key) is not str:
            return _error(f"{op}: the key must be a string, got {_kind(key)}")
        data = self.data
        if op == "put":
            data[key] = _canonical(value["value"])
            return None
        if op == "delete":
            return data.pop(key, _ABSENT) is not _ABSENT
        # cas
        if not _equal(data.get(key), _canonical(value["expect"])):
            return False
        data[key] = _canonical(value["value"])
        return True

    def query(self, q: Any) -> Any:
        if not isinstance(q, dict):
            raise BadQuery(f"{_QUERY_HELP}, got {_kind(q)}")
        if len(q) != 1:
            raise BadQuery(f"{_QUERY_HELP}, got a map of {len(q)} fields")
        if "get" in q:
            key = q["get"]
            if type(key) is not str:
                raise BadQuery(f"get: the key must be a string, got {_kind(key)}")
            return self.data.get(key)
        if "keys" in q:
            prefix = q["keys"]
            if prefix is None:
                prefix = ""
            if type(prefix) is not str:
                raise BadQuery(f"keys: the prefix must be a string or nil, got {_kind(prefix)}")
            return sorted(k for k in self.data if k.startswith(prefix))
        raise BadQuery(_QUERY_HELP)

    def snapshot(self) -> bytes:
        return b"".join(_encode(dict(self.data)))

    def snapshot_later(self) -> Callable[[], Iterator[bytes]]:
        frozen = dict(self.data)
        return lambda: _encode(frozen)

    def restore(self, data: bytes) -> None:
        parts = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise ValueError("a kv snapshot is an array of maps")
        state: dict[str, Any] = {}
        for p in parts:
            state.update(p)
        if any(type(k) is not str for k in state):
            raise ValueError("a kv snapshot has string keys only")
        self.data = state


_PIECE = 4096  # keys per encoded piece of a snapshot


def _encode(state: dict[str, Any]) -> Iterator[bytes]:
    """``state`` as a msgpack array of maps of at most ``_PIECE`` keys each."""
    yield msgpack.Packer().pack_array_header(-(-len(state) // _PIECE))
    items = iter(state.items())
    while piece := dict(islice(items, _PIECE)):
        yield msgpack.packb(piece, use_bin_type=True)


_ABSENT = object()


def _error(message: str) -> dict[str, str]:
    return {"error": message}


def _canonical(value: Any) -> Any:
    """``value`` as msgpack decodes it: a fresh copy, lists for arrays, bytes for binary."""
    if value is None or type(value) in (str, int, float, bool, bytes):
        return value  # immutable and already in decoded form
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)


def _equal(a: Any, b: Any) -> bool:
    """Equal as msgpack values (both already canonical): same types, same contents."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        if len(a) != len(b):
            return False
        keyed = {(type(k), k): v for k, v in b.items()}
        return all((type(k), k) in keyed and _equal(v, keyed[(type(k), k)]) for k, v in a.items())
    return bool(a == b)


def _kind(value: Any) -> str:
    """The msgpack type of ``value`` (the same name on every member, whatever Python type
    decoding produced)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray | memoryview):
        return "binary"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "map"
    return "ext"
