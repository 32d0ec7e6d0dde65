"""The stable-storage seam under the core, and an in-memory implementation.

Theory of operation
-------------------
The core reads its durable log through the small :class:`Storage` protocol
(etcd-raft ``storage.go``; hashicorp/raft ``LogStore`` + ``StableStore``). It
never writes through it: writes belong to the runtime, which persists what a
``Ready`` hands it (``append`` then ``set_hard_state`` then ``sync``) before it
calls ``RawNode.advance``. :class:`WritableStorage` names that write side, so
``MemoryStorage`` (tests, the simulator) and ``cruise.wal.DiskStorage`` (members)
are interchangeable.

Indexes follow the Raft paper: the first entry is index 1. ``first_index()`` is
the first index still held (1 for a log never compacted); ``last_index()`` is
``first_index() - 1`` for an empty log. ``term(first_index() - 1)`` is always
answerable (the "dummy" entry; 0 for index 0; after compaction, the term of the
entry compacted last).

Snapshots: ``snapshot()`` names the newest snapshot the runtime saved (index 0 when
there is none). Compaction only discards entries a snapshot covers, so a leader
that finds a follower's next entry compacted sends that snapshot instead
(``InstallSnapshot``). The runtime keeps ``retain_entries`` behind the snapshot for
late readers, so ``first_index() - 1`` may be below the snapshot's index; it is
never above it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .errors import Compacted, Unavailable
from .types import Entry, HardState, SnapshotMeta


@runtime_checkable
class Storage(Protocol):
    """What the core reads. Every method is cheap or cached; the core calls them often."""

    def initial_state(self) -> HardState:
        """The hard state last saved (``HardState()`` for a new node)."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with ``lo <= index < hi``.

        At least one entry is returned when ``lo < hi``, even if it alone exceeds
        ``max_bytes``. Raises ``Compacted`` if ``lo < first_index()`` and
        ``Unavailable`` if ``hi > last_index() + 1``.
        """
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; ``first_index() - 1`` is allowed.

        Raises ``Compacted`` below that and ``Unavailable`` above ``last_index()``.
        """
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> SnapshotMeta:
        """The newest snapshot saved (``SnapshotMeta()`` when there is none)."""
        ...


class WritableStorage(Storage, Protocol):
    """The write side the runtime uses to persist a ``Ready``."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` (consecutive indexes).

        If ``entries[0].index <= last_index()``, everything from that index on is
        replaced first (the core only asks for that at a real term conflict,
        §5.3 receiver rule 3). A gap (``entries[0].index > last_index() + 1``) is a
        caller bug and raises ``ValueError``.
        """
        ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def sync(self) -> None:
        """Make every append and hard state so far durable (fsync)."""
        ...


# Values whose length is their payload's size. A tuple: isinstance on a `X | Y` union builds
# the union on every call, and this runs for every entry of every append, per follower.
_SIZED = (bytes, bytearray, str)


def entry_size(entry: Entry) -> int:
    """A cheap estimate of an entry's encoded size, for batching limits.

    The core may not import an encoder, so this counts the payload when it is
    bytes or str and a fixed overhead otherwise. Good enough to bound a message.
    """
    v = entry.value
    if isinstance(v, _SIZED):
        return 24 + len(v)
    return 64


class MemoryStorage:
    """Storage held in lists; what the simulator and the core tests run on.

    ``persisted`` is the only thing that survives a simulated crash: a restarted
    node gets a new ``RawNode`` over the same ``MemoryStorage``.
    """

    def __init__(self) -> None:
        self._hard = HardState()
        # _ents[0] is the dummy entry at first_index() - 1 (index 0, term 0 until compaction).
        self._ents: list[Entry] = [Entry(0, 0, "noop")]
        self._snap = SnapshotMeta()
        self.snapshot_data: bytes = b""
        self.syncs = 0

    # -- read side -------------------------------------------------------------
    def initial_state(self) -> HardState:
        return self._hard

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> SnapshotMeta:
        return self._snap

    def term(self, index: int) -> int:
        off = self._ents[0].index
        if index < off:
            raise Compacted(f"index {index} is compacted (first is {off + 1})")
        if index - off >= len(self._ents):
            raise Unavailable(f"index {index} is past the last index {self.last_index()}")
        return self._ents[index - off].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        off = self._ents[0].index
        if lo <= off:
            raise Compacted(f"index {lo} is compacted (first is {off + 1})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"index {hi - 1} is past the last index {self.last_index()}")
        ents = self._ents[lo - off : hi - off]
        return limit_size(ents, max_bytes)

    # -- write side ------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        off = self._ents[0].index
        if first > self.last_index() + 1:
            raise ValueError(f"gap: appending index {first} after last index {self.last_index()}")
        if first <= off:
            raise ValueError(f"appending index {first} at or below the compacted index {off}")
        del self._ents[first - off :]
        self._ents.extend(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._hard = hs

    def sync(self) -> None:
        self.syncs += 1

    def save_snapshot(self, index: int, term: int, data: bytes | bytearray, meta: dict | None = None) -> None:
        """Keep ``data`` as the snapshot at ``index`` (durable at once, like a file that was
        written, synced and renamed into place)."""
        if index < self._snap.index:
            raise ValueError(f"snapshot at {index} is older than the saved one at {self._snap.index}")
        conf = (meta or {}).get("conf")
        self._snap, self.snapshot_data = SnapshotMeta(index, term, conf), bytes(data)

    def load_snapshot(self) -> tuple[int, int, bytes, dict | None] | None:
        if self._snap.index == 0:
            return None
        return self._snap.index, self._snap.term, self.snapshot_data, {"conf": self._snap.conf}

    def snapshot_size(self) -> int:
        return len(self.snapshot_data)

    def snapshot_crc(self) -> int:
        return zlib.crc32(self.snapshot_data)

    def read_snapshot(self, offset: int, n: int) -> bytes:
        return self.snapshot_data[offset : offset + n]

    def compact(self, index: int) -> None:
        """Discard entries up to ``index`` (``first_index()`` becomes ``index + 1``).

        Past the last index, or at an index whose term differs from the snapshot's there,
        only a snapshot at exactly ``index`` allows it: the log is emptied and restarts
        after the snapshot (a follower installing one)."""
        off = self._ents[0].index
        if index <= off:
            return
        snap = self._snap
        if snap.index == index and (index > self.last_index() or self.term(index) != snap.term):
            self._ents = [Entry(index, snap.term, "noop")]
            return
        if index > self.last_index():
            raise ValueError(f"cannot compact to {index}: past the last index {self.last_index()}")
        self._ents = [Entry(index, self._ents[index - off].term, "noop"), *self._ents[index - off + 1 :]]

    def checkpoint(self) -> tuple[list[Entry], HardState, SnapshotMeta, bytes]:
        """What is "on disk" now, for a simulated crash that loses later, unsynced writes."""
        return list(self._ents), self._hard, self._snap, self.snapshot_data

    def restore(self, cp: tuple[list[Entry], HardState, SnapshotMeta, bytes]) -> None:
        """Go back to a checkpoint; a snapshot saved since then survives (it was durable
        when saved), and a log that ends before it restarts after it, as a WAL does."""
        snap, data = self._snap, self.snapshot_data
        self._ents, self._hard = list(cp[0]), cp[1]
        self._snap, self.snapshot_data = (snap, data) if snap.index >= cp[2].index else (cp[2], cp[3])
        if self._snap.index > self._ents[0].index and (
            self._snap.index > self.last_index() or self.term(self._snap.index) != self._snap.term
        ):
            self.compact(self._snap.index)


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes`` (never fewer than one entry)."""
    if max_bytes is None or len(ents) <= 1:
        return ents
    total = 0
    for i, e in enumerate(ents):
        total += entry_size(e)
        if total > max_bytes and i > 0:
            return ents[:i]
    return ents
