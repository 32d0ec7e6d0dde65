"""The Raft log as the core sees it: stable storage plus an unstable tail.

Theory of operation
-------------------
``RaftLog`` joins two parts (etcd-raft ``log.go`` + ``log_unstable.go``):

- ``storage``: entries the runtime has persisted (read through ``Storage``);
- ``unstable``: entries the core has accepted but the runtime has not yet
  persisted. They start at ``unstable_offset``. A ``Ready`` hands them out; once
  the runtime has written and synced them it calls ``stable_to`` and they are
  dropped from memory.

A conflict may reach into the stable part (a follower learns that entries it
persisted in an old term are wrong, §5.3). Then ``unstable_offset`` moves back
and the next ``Ready`` carries entries whose first index is at or below
storage's last index; ``WritableStorage.append`` replaces from there.

A snapshot from the leader (``restore``) replaces the whole log: it becomes
``pending_snapshot`` until the runtime has saved it and restored its state machine
from it (it travels in a ``Ready``), and the log restarts after it. Meanwhile
indexes up to the snapshot's are compacted and nothing below it is applied.

Indexes: ``committed`` and ``applied`` are volatile. Invariant:
``applied <= committed <= last_index()``. On start, ``committed`` is at least the
index of the storage's snapshot: the runtime restores its state machine from it,
and a snapshot only ever holds committed entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import Compacted, Unavailable
from .storage import Storage, limit_size
from .types import CONFIG, Entry, SnapshotMeta


class RaftLog:
    def __init__(self, storage: Storage, applied: int = 0) -> None:
        self.storage = storage
        # Entries not yet persisted; unstable[0].index == unstable_offset when non-empty.
        self.unstable: list[Entry] = []
        # Index the first unstable entry has (or would have). Invariant: equals the
        # index after the last persisted entry that is still part of this log.
        self.unstable_offset = storage.last_index() + 1
        # A snapshot from the leader not yet saved by the runtime (see ``restore``).
        self.pending_snapshot: SnapshotMeta | None = None
        # Configuration entries past the snapshot, as (index, value), in index order; the
        # configuration in force is the last one's, else the snapshot's (``base_conf``; None:
        # the runtime's initial one). ``conf_version`` moves on every change.
        snap = storage.snapshot()
        self.base_conf: Any = snap.conf
        self.confs: list[tuple[int, Any]] = []
        self.conf_version = 0
        lo, hi = max(storage.first_index(), snap.index + 1), storage.last_index()
        while lo <= hi:
            batch = storage.entries(lo, min(hi, lo + 4095) + 1)
            self.confs.extend((e.index, e.value) for e in batch if e.kind == CONFIG)
            lo = batch[-1].index + 1
        hs = storage.initial_state()
        # Highest index known committed. Invariant: committed <= last_index().
        self.committed = max(min(hs.commit, storage.last_index()), storage.snapshot().index)
        # Highest index handed to the application. Invariant: applied <= committed.
        first = storage.first_index()
        self.applied = max(min(applied, self.committed), first - 1)

    # -- reading ----------------------------------------------------------------
    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable[-1].index
        return self.unstable_offset - 1

    def stable_last_index(self) -> int:
        """The last index persisted (as far as the core was told)."""
        return self.unstable_offset - 1

    def term(self, index: int) -> int:
        """Term at ``index``; 0 for indexes past the end. Raises ``Compacted`` below the first index - 1."""
        if index >= self.unstable_offset:
            off = index - self.unstable_offset
            if off < len(self.unstable):
                return self.unstable[off].term
            return 0
        snap = self.pending_snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            raise Compacted(f"index {index} is compacted into a snapshot at {snap.index}")
        try:
            return self.storage.term(index)
        except Unavailable:
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        if index > self.last_index():
            return False
        try:
            return self.term(index) == term
        except Compacted:
            # Below our first index everything is committed, so it matches (§5.4.3).
            return True

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours.

        Compare the last terms first; only with equal last terms does the longer log win.
        """
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``lo <= index < hi`` from storage and the unstable tail."""
        if lo >= hi:
            return []
        out: list[Entry] = []
        if lo < self.unstable_offset:
            if self.pending_snapshot is not None:
                raise Compacted(f"index {lo} is compacted into a snapshot at {self.pending_snapshot.index}")
            out = self.storage.entries(lo, min(hi, self.unstable_offset), max_bytes)
            if len(out) < min(hi, self.unstable_offset) - lo:
                return out  # size limit reached inside storage
        if hi > self.unstable_offset:
            start = max(lo, self.unstable_offset) - self.unstable_offset
            out = out + self.unstable[start : hi - self.unstable_offset]
        return limit_size(out, max_bytes) if max_bytes is not None else out

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or conflicts in term; 0 if all match."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index ``<= index`` whose term is ``<= term`` (conflict hints, §5.3)."""
        index = min(index, self.last_index())
        while index > 0:
            try:
                t = self.term(index)
            except Compacted:
                return index
            if t <= term:
                return index
            index -= 1
        return 0

    # -- writing ----------------------------------------------------------------
    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """§5.3 receiver rules 2-5. Returns the index of the last entry of this
        message (``prev_index + len(entries)``) on success, None on a mismatch.

        Entries already present with the same term are left alone: only a real
        term conflict truncates (PySyncObj truncated on every append and briefly
        dropped acknowledged entries).
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        ci = self.find_conflict(entries)
        if ci:
            assert ci > self.committed, f"entry {ci} conflicts with committed index {self.committed}"
            self.append(entries[ci - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new

    def conf(self) -> Any:
        """The configuration in force: the last ``config`` entry's value in the log, else the
        snapshot's (None: the runtime's initial configuration)."""
        return self.confs[-1][1] if self.confs else self.base_conf

    def conf_at(self, index: int) -> Any:
        """The configuration in force at ``index`` (at or past the snapshot's index)."""
        for i, value in reversed(self.confs):
            if i <= index:
                return value
        return self.base_conf

    def _track_confs(self, entries: Sequence[Entry], records: bool) -> None:
        first = entries[0].index
        if self.confs and self.confs[-1][0] >= first:
            self.confs = [c for c in self.confs if c[0] < first]  # truncated with its entry
            self.conf_version += 1
        if records:
            return  # the leader's batch of records: no entry to look at
        for e in entries:
            if e.kind == CONFIG:
                self.confs.append((e.index, e.value))
                self.conf_version += 1

    def append(self, entries: Sequence[Entry], records: bool = False) -> int:
        """Put ``entries`` in the unstable tail, replacing anything from ``entries[0].index`` on.
        ``records``: the caller knows every entry is a record (the hot path skips the scan for
        configuration entries)."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        assert first > self.committed, f"appending at {first} would overwrite committed {self.committed}"
        self._track_confs(entries, records)
        if first == self.last_index() + 1:
            self.unstable.extend(entries)
        elif first <= self.unstable_offset:
            # Conflict reaches the stable part: the runtime's append replaces from here.
            self.unstable_offset = first
            self.unstable = list(entries)
        else:
            del self.unstable[first - self.unstable_offset :]
            self.unstable.extend(entries)
        return self.last_index()

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} is past the last index {self.last_index()}"
            self.committed = index
            return True
        return False

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, (self.applied, index, self.committed)
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        """The runtime persisted everything up to ``index`` (last entry term ``term``)."""
        if index < self.unstable_offset:
            return
        off = index - self.unstable_offset
        if off >= len(self.unstable) or self.unstable[off].term != term:
            return  # replaced meanwhile; the newer entries are still unstable
        del self.unstable[: off + 1]
        self.unstable_offset = index + 1

    def restore(self, snap: SnapshotMeta) -> None:
        """Replace the log with the leader's snapshot (§7): everything up to ``snap.index``
        is committed and its state is the snapshot's; the log restarts after it."""
        assert snap.index > self.committed, f"snapshot {snap.index} is not past commit {self.committed}"
        self.pending_snapshot = snap
        self.unstable = []
        self.unstable_offset = snap.index + 1
        self.committed = snap.index
        self.base_conf, self.confs = snap.conf, []
        self.conf_version += 1

    def snapshot_saved(self, snap: SnapshotMeta) -> None:
        """The runtime saved the pending snapshot and restored its state from it."""
        if self.pending_snapshot == snap:
            self.pending_snapshot = None
        if snap.index > self.applied:
            self.applied = snap.index

    def next_committed(self, max_entries: int) -> list[Entry]:
        """Committed entries not yet applied, at most ``max_entries`` (none while a
        snapshot is pending: the entries it covers are not in the log)."""
        if self.pending_snapshot is not None:
            return []
        hi = min(self.committed, self.applied + max_entries) + 1
        return self.slice(self.applied + 1, hi)

    def has_next_committed(self) -> bool:
        return self.committed > self.applied and self.pending_snapshot is None
