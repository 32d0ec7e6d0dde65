"""When a member snapshots its state, and how far it compacts its log behind it.

Theory of operation
-------------------
Every ``every`` applied entries the member takes a snapshot of the applier's state
(state machine, session table, hidden indexes) at the applied index: frozen on the
loop (a state machine with ``snapshot_later`` is copied cheaply and encoded later),
so the loop goes on serving while a ``SnapshotWriter`` encodes, writes and syncs it
elsewhere; when it reports back, the
snapshot becomes the disk's and the log is compacted behind it, keeping ``retain``
entries before the snapshot's index for late readers (``entries`` below what is
kept answers ``compacted``). Compaction never passes what the log has written, so
it never drops an entry the core still holds only in memory.

One snapshot is written at a time. A failed write is logged and tried again once
``every`` more entries were applied (on a full disk, not at every entry). A compaction
that a full disk refuses is logged and left to the next snapshot: the log keeps more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core import RawNode
from ..core.types import SnapshotMeta
from .applier import Applier
from .diskfull import is_disk_full
from .ports import Disk, SnapshotWriter


class Snapshots:
    def __init__(
        self,
        raw: RawNode,
        disk: Disk,
        applier: Applier,
        writer: SnapshotWriter | None,
        *,
        every: int,
        retain: int,
        log: Callable[..., None],
    ) -> None:
        self.raw = raw
        self.disk = disk
        self.applier = applier
        self.writer = writer
        self.every = every
        self.retain = retain
        self.log = log
        self.last = disk.snapshot().index  # index of the newest snapshot saved
        self.writing = 0  # index of the snapshot being written, 0 when none
        self.failed_at = 0  # applied index of the last snapshot that failed to be written
        self._installing: tuple[SnapshotMeta, bytearray] | None = None  # a leader's, until saved

    def maybe_take(self) -> None:
        """Take a snapshot if ``every`` entries were applied since the last one."""
        applied = self.applier.applied
        since = applied - max(self.last, self.failed_at)
        if self.writing or since < self.every or self.raw.raft.log.pending_snapshot:
            return
        log = self.raw.raft.log
        term = log.term(applied)
        meta = {"conf": log.conf_at(applied)}  # the membership travels with the state
        pieces = self.applier.snapshot()
        self.writing = applied
        self.log("snapshot_started", index=applied)
        if self.writer is None:
            try:
                self.disk.save_snapshot(applied, term, b"".join(pieces()), meta)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self.on_written(applied, None, exc)
                return
            self.saved(applied)
        else:
            self.writer.write(applied, term, pieces, meta)

    def on_written(self, index: int, handle: Any, error: BaseException | None) -> None:
        """The writer finished the snapshot at ``index`` (``handle`` names it to the disk)."""
        self.writing = 0
        if error is not None:
            self.failed_at = index
            self.log("snapshot_failed", index=index, error=str(error), action="trying again later")
            return
        if index <= self.disk.snapshot().index:
            return  # a newer one arrived from the leader meanwhile
        self.disk.adopt_snapshot(handle)
        self.saved(index)

    def saved(self, index: int) -> None:
        self.writing = 0
        self.last = index
        self.compact()
        self.log("snapshot_saved", index=index, first_index=self.disk.first_index())

    def install(self, meta: SnapshotMeta, take: Callable[[SnapshotMeta], bytearray]) -> None:
        """Inside a Ready: save the leader's snapshot, restart the log after it and restore
        the state from it, before anything of that Ready is written or answered. ``take``
        hands over the bytes the follower assembled (``transfer.Incoming``)."""
        # Kept until saved: a full disk stops the Ready here, and the retry installs it again.
        if self._installing is None or self._installing[0] != meta:
            self._installing = (meta, take(meta))
        data = self._installing[1]
        if self.disk.snapshot().index != meta.index:
            self.disk.save_snapshot(meta.index, meta.term, data, {"conf": meta.conf})
        self.disk.compact(meta.index)
        self._installing = None
        self.applier.restore(data, meta.index)
        self.last = meta.index
        self.applier.forget_below(self.disk.first_index())
        self.log("snapshot_installed", index=meta.index, term=meta.term, bytes=len(data))

    def compact(self) -> None:
        log = self.raw.raft.log
        target = min(self.last - self.retain, log.stable_last_index())
        if target > self.disk.first_index() - 1:
            try:
                self.disk.compact(target)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self.log("compaction_deferred", index=target, error=str(exc))
                return
            self.applier.forget_below(target + 1)
