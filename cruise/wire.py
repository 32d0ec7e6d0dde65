"""Peer RPC encoding: core messages <-> msgpack frames.

Theory of operation
-------------------
Each message is one msgpack array, ``[type, term, frm, to, cluster, incarnation,
to_incarnation, ...fields]``, with a small integer type tag (hashicorp/raft's ``rpcType``
byte plus a body) and the sender's identity (:class:`Stamp`, ``cruise.member.identity``). Arrays
instead of maps keep the frames small and the encoding cheap; the field order
per type is fixed below and versioned by ``VERSION`` (the first byte of the
frame), so a member refuses frames of a version it does not speak.

An ``AppendEntries`` carries its entries as one pre-packed msgpack blob
(``bin``). The leader packs the entries of a batch once and reuses the blob for
every follower it sends the same range to (:class:`EntryBlobCache`): encoding
work is per batch, not per follower.

Everything from the network is untrusted: :func:`decode` raises
:class:`WireError` for any frame that is not a well-formed message, and the
member logs and drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from .core.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    SnapshotAck,
    SnapshotChunk,
    TimeoutNow,
    VoteResponse,
)
from .core.types import ENTRY_KINDS, Entry

VERSION = 2
_HEAD = bytes([VERSION])
_HEADER = 7  # type, term, frm, to, cluster, incarnation, to_incarnation


@dataclass(frozen=True, slots=True)
class Stamp:
    """The sender's identity, carried by every peer message (``cruise.member.identity``)."""

    cluster: int  # the sender's committed cluster id; 0: not known yet
    incarnation: int  # the sender's data directory
    to_incarnation: int  # what the sender's configuration binds the receiver to; 0: nothing


UNSTAMPED = Stamp(0, 0, 0)

_TAGS: dict[type, int] = {
    RequestVote: 1,
    VoteResponse: 2,
    AppendEntries: 3,
    AppendResponse: 4,
    Heartbeat: 5,
    HeartbeatResponse: 6,
    ReadIndex: 7,
    ReadIndexResponse: 8,
    TimeoutNow: 9,
    InstallSnapshot: 10,
    SnapshotChunk: 11,
    SnapshotAck: 12,
}
_TYPES = {v: k for k, v in _TAGS.items()}
# Per type: the fields after the header, and a type check for each.
_INT, _BOOL, _ANY, _BYTES = int, bool, object, bytes
_FIELDS: dict[type, tuple[tuple[str, type], ...]] = {
    RequestVote: (("last_index", _INT), ("last_term", _INT), ("pre", _BOOL), ("transfer", _BOOL)),
    VoteResponse: (("granted", _BOOL), ("pre", _BOOL)),
    AppendEntries: (("prev_index", _INT), ("prev_term", _INT), ("commit", _INT)),  # + entries blob
    AppendResponse: (("index", _INT), ("reject", _BOOL), ("hint_index", _INT), ("hint_term", _INT)),
    Heartbeat: (("commit", _INT), ("ctx", _ANY), ("quiet", _BOOL)),
    HeartbeatResponse: (("ctx", _ANY),),
    ReadIndex: (("ctx", _ANY),),
    ReadIndexResponse: (("index", _INT), ("ctx", _ANY), ("reject", _BOOL)),
    TimeoutNow: (),
    InstallSnapshot: (("index", _INT), ("snap_term", _INT), ("conf", _ANY)),
    SnapshotChunk: (
        ("index", _INT),
        ("snap_term", _INT),
        ("offset", _INT),
        ("total", _INT),
        ("crc", _INT),
        ("data", _BYTES),
        ("conf", _ANY),
    ),
    SnapshotAck: (("index", _INT), ("offset", _INT), ("done", _BOOL), ("reject", _BOOL), ("gap", _BOOL)),
}


class WireError(ValueError):
    """A peer frame that is not a valid message of this version."""


def pack_entries(entries: tuple[Entry, ...] | list[Entry]) -> bytes:
    """Entries as one msgpack array of ``[index, term, kind, value, origin]`` rows."""
    return msgpack.packb([(e.index, e.term, e.kind, e.value, e.origin) for e in entries], use_bin_type=True)


def unpack_entries(blob: bytes) -> tuple[Entry, ...]:
    try:
        # Lists, not tuples: a value must look the same on every member (the leader got it as a list).
        rows = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise WireError(f"bad entries blob: {e}") from None
    if not isinstance(rows, list):
        raise WireError("entries blob is not an array")
    out = []
    prev = None
    for r in rows:
        if not (isinstance(r, list) and len(r) == 5):
            raise WireError("bad entry row")
        index, term, kind, value, origin = r
        if (
            type(index) is not int
            or type(term) is not int
            or kind not in ENTRY_KINDS
            or index < 1
            or term < 1
        ):
            raise WireError("bad entry fields")
        if prev is not None and index != prev + 1:
            raise WireError("entries are not consecutive")
        prev = index
        if origin is not None:
            if not (isinstance(origin, list) and len(origin) == 2):
                raise WireError("bad entry origin")
            origin = (origin[0], origin[1])
        out.append(Entry(index, term, kind, value, origin))
    return tuple(out)


class EntryBlobCache:
    """Packs the entries of an AppendEntries once per distinct range within one batch of sends."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, int], bytes] = {}

    @staticmethod
    def _key(entries: tuple[Entry, ...] | list[Entry]) -> tuple[int, int, int]:
        # By log matching, equal (first, last, last term) means equal entries.
        return (entries[0].index, entries[-1].index, entries[-1].term)

    def remember(self, entries: tuple[Entry, ...], blob: bytes) -> None:
        """Keep a blob received from the leader, so the WAL can write it as it came."""
        if entries:
            self._cache[self._key(entries)] = blob

    def blob(self, entries: tuple[Entry, ...] | list[Entry]) -> bytes:
        if not entries:
            return b"\x90"  # empty array
        key = self._key(entries)
        b = self._cache.get(key)
        if b is None:
            b = self._cache[key] = pack_entries(entries)
        return b

    def clear(self) -> None:
        self._cache.clear()


def encode(msg: Any, blobs: EntryBlobCache | None = None, stamp: Stamp = UNSTAMPED) -> bytes:
    """One peer frame for ``msg``, sent with ``stamp``."""
    t = type(msg)
    row: list[Any] = [
        _TAGS[t],
        msg.term,
        msg.frm,
        msg.to,
        stamp.cluster,
        stamp.incarnation,
        stamp.to_incarnation,
    ]
    row.extend(getattr(msg, name) for name, _ in _FIELDS[t])
    if t is AppendEntries:
        row.append((blobs or EntryBlobCache()).blob(msg.entries))
    return _HEAD + msgpack.packb(row, use_bin_type=True)


def decode(
    frame: bytes, max_bytes: int | None = None, blobs: EntryBlobCache | None = None
) -> tuple[Any, Stamp]:
    """Parse one peer frame into its message and stamp. Raises ``WireError`` for anything
    malformed.

    With ``blobs``, an AppendEntries' packed entries are remembered there for reuse.
    """
    if max_bytes is not None and len(frame) > max_bytes:
        raise WireError(f"frame of {len(frame)} bytes is over the limit")
    if not frame or frame[0] != VERSION:
        raise WireError(f"unknown wire version {frame[:1]!r}")
    try:
        row = msgpack.unpackb(memoryview(frame)[1:], raw=False, strict_map_key=False, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise WireError(f"not msgpack: {e}") from None
    if not isinstance(row, tuple) or len(row) < _HEADER:
        raise WireError("not a message array")
    t = _TYPES.get(row[0]) if type(row[0]) is int else None
    if t is None:
        raise WireError(f"unknown message type {row[0]!r}")
    fields = _FIELDS[t]
    want = _HEADER + len(fields) + (1 if t is AppendEntries else 0)
    if len(row) != want:
        raise WireError(f"{t.__name__}: expected {want} fields, got {len(row)}")
    term, frm, to, cluster, inc, to_inc = row[1:_HEADER]
    if type(term) is not int or term < 0 or type(frm) is not str or type(to) is not str:
        raise WireError(f"{t.__name__}: bad header")
    if type(cluster) is not int or type(inc) is not int or type(to_inc) is not int:
        raise WireError(f"{t.__name__}: bad identity")
    kw: dict[str, Any] = {}
    for (name, typ), v in zip(fields, row[_HEADER : _HEADER + len(fields)], strict=True):
        if typ is not _ANY and type(v) is not typ:
            raise WireError(f"{t.__name__}.{name}: expected {typ.__name__}")
        kw[name] = v
    if t is AppendEntries:
        blob = row[-1]
        if type(blob) is not bytes:
            raise WireError("AppendEntries.entries: expected bytes")
        kw["entries"] = unpack_entries(blob)
        if blobs is not None:
            blobs.remember(kw["entries"], blob)
    return t(term, frm, to, **kw), Stamp(cluster, inc, to_inc)
