"""Snapshot transfer: a snapshot's state streamed in chunks over the peer link.

Theory of operation
-------------------
The core decides *that* a follower needs a snapshot (its next entry is compacted)
and emits ``InstallSnapshot(index, snap_term)``. :class:`Streams` sits between the
member and its transport: it takes those messages out of what is sent and streams
the state instead, as ``SnapshotChunk`` messages, with flow control:

- at most ``window`` chunks are unacknowledged; each ``SnapshotAck`` says how many
  bytes the follower holds, and frees room for more (the leader's loop sends a few
  chunks per acknowledgement, so it keeps serving while a large snapshot goes);
- chunks are taken in order; a follower that sees a gap (a chunk lost, or late)
  acknowledges what it holds, marked ``gap``, and the leader goes back to there
  (go-back-N); a repeat is answered with how much the follower holds (the acknowledgement
  for it may have been lost);
- a stream that makes no progress for ``stall_ticks`` ticks is sent again from the
  last acknowledged byte, and after ``max_stalls`` such rounds it is given up;
  so is a stream whose snapshot was replaced by a newer one, or whose term ended.
  Giving up is reported to the core (``report_snapshot(to, False)``), which probes
  the follower and sends the newest snapshot again.

:class:`Incoming` is the follower's side: it assembles the chunks of one snapshot,
checks the whole against the leader's crc32, and only then steps ``InstallSnapshot``
into its core, keeping the bytes until the core's Ready asks to install them. A
snapshot that fails its check is refused (``reject``) and streamed anew.

Nothing here does I/O: the leader reads chunks through the ``Disk`` port and sends
through the ``Transport``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import InstallSnapshot, Message, RawNode
from ..core.messages import SnapshotAck, SnapshotChunk
from ..core.types import SnapshotMeta
from ..fsm import Applied
from ..wire import EntryBlobCache
from .ports import Disk, Transport

CHUNK_BYTES = 1 << 20
WINDOW = 4
STALL_TICKS = 20  # ticks without progress before a stream is sent again from its last ack
MAX_STALLS = 5  # such rounds before the stream is given up


@dataclass(slots=True)
class Stream:
    """One snapshot on its way to one follower. Invariant: ``acked <= sent <= total``."""

    to: str
    term: int
    index: int
    snap_term: int
    total: int
    crc: int
    conf: Any = None  # the configuration at ``index``, for the follower's core
    sent: int = 0  # bytes sent (from the start, or from the last go-back)
    acked: int = 0  # bytes the follower said it holds
    idle: int = 0  # ticks since the last progress
    stalls: int = 0


class Streams:
    """The leader's side, and the transport the member's driver sends through."""

    def __init__(
        self,
        me: str,
        raw: RawNode,
        disk: Disk,
        transport: Transport,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        window: int = WINDOW,
        log: Callable[..., None] = lambda event, **kw: None,
    ) -> None:
        self.me = me
        self.raw = raw
        self.disk = disk
        self.transport = transport
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.log = log
        self.streams: dict[str, Stream] = {}
        self.failed: list[str] = []  # followers whose stream ended badly, for the core
        self.finished: list[str] = []  # followers whose stream completed, for the core

    # -- Transport ------------------------------------------------------------------------------
    def send(self, msgs: list[Message], blobs: EntryBlobCache) -> None:
        if any(type(m) is InstallSnapshot for m in msgs):
            rest = []
            for m in msgs:
                if type(m) is InstallSnapshot:
                    self._start(m)
                else:
                    rest.append(m)
            msgs = rest
        if msgs:
            self.transport.send(msgs, blobs)

    def forward(self, to: str, rid: int, frame: bytes) -> bool:
        return self.transport.forward(to, rid, frame)

    def publishing(self) -> bool:
        return self.transport.publishing()

    def set_members(self, peers: list[dict]) -> None:
        self.transport.set_members(peers)

    def publish(self, entry: Applied) -> None:
        self.transport.publish(entry)

    # -- streaming ------------------------------------------------------------------------------
    def _start(self, m: InstallSnapshot) -> None:
        snap = self.disk.snapshot()
        if snap != SnapshotMeta(m.index, m.snap_term):
            self.failed.append(m.to)  # replaced since the core looked: it will send the newer one
            return
        s = Stream(
            m.to, m.term, m.index, m.snap_term, self.disk.snapshot_size(), self.disk.snapshot_crc(), m.conf
        )
        self.streams[m.to] = s
        self.log("snapshot_stream_started", to=m.to, index=m.index, bytes=s.total)
        self._pump(s)

    def _pump(self, s: Stream) -> None:
        """Send chunks while the window has room (at least one, so an empty state goes too)."""
        if self.disk.snapshot() != SnapshotMeta(s.index, s.snap_term):
            self._end(s, ok=False, why="a newer snapshot replaced it")
            return
        out: list[SnapshotChunk] = []
        while s.sent - s.acked < self.window * self.chunk_bytes and (
            s.sent < s.total or s.sent == 0 == s.total
        ):
            data = self.disk.read_snapshot(s.sent, self.chunk_bytes)
            out.append(
                SnapshotChunk(
                    s.term, self.me, s.to, s.index, s.snap_term, s.sent, s.total, s.crc, data, s.conf
                )
            )
            s.sent += len(data)
            if not data:
                break
        if out:
            self.transport.send(out, EntryBlobCache())  # type: ignore[arg-type]

    def on_ack(self, m: SnapshotAck) -> None:
        s = self.streams.get(m.frm)
        if s is None or m.term != s.term or m.index != s.index:
            return
        if m.reject:
            self._end(s, ok=False, why="the follower found it damaged")
            return
        if m.done:
            self._end(s, ok=True, why="")
            return
        if m.offset > s.acked:
            s.acked = m.offset
            s.idle = s.stalls = 0
        if m.gap and s.acked <= m.offset < s.sent:
            # A chunk went missing: resend from what the follower holds.
            s.sent = m.offset
        self._pump(s)

    def tick(self) -> None:
        """Resend stalled streams; give up on the hopeless and on those of a past term."""
        raft = self.raw.raft
        for s in list(self.streams.values()):
            if raft.role != "leader" or raft.term != s.term:
                self._end(s, ok=False, why="leadership changed")
                continue
            s.idle += 1
            if s.idle < STALL_TICKS:
                continue
            s.idle = 0
            s.stalls += 1
            if s.stalls > MAX_STALLS:
                self._end(s, ok=False, why="no progress")
                continue
            s.sent = s.acked
            self._pump(s)

    def _end(self, s: Stream, ok: bool, why: str) -> None:
        del self.streams[s.to]
        (self.finished if ok else self.failed).append(s.to)
        self.log("snapshot_stream_ended", to=s.to, index=s.index, ok=ok, reason=why or None)

    def report(self) -> None:
        """Tell the core how streams ended (outside a Ready: this feeds it)."""
        raft = self.raw.raft
        if raft.role != "leader":
            self.failed.clear()
            self.finished.clear()
            return
        for to in self.finished:
            self.raw.report_snapshot(to, True)
        for to in self.failed:
            self.raw.report_snapshot(to, False)
        self.finished.clear()
        self.failed.clear()


class Incoming:
    """The follower's side: one snapshot assembled at a time, checked, then stepped in."""

    def __init__(self, me: str, raw: RawNode, transport: Transport) -> None:
        self.me = me
        self.raw = raw
        self.transport = transport
        self._key: tuple[str, int, int, int] | None = None  # (leader, term, index, snap_term)
        self._buf = bytearray()
        self._crc = 0
        # Complete, checked snapshots the core may ask to install, by position.
        self.complete: dict[SnapshotMeta, bytearray] = {}

    def on_chunk(self, m: SnapshotChunk) -> None:
        key = (m.frm, m.term, m.index, m.snap_term)
        if key != self._key:
            if m.offset != 0:
                self._ack(m, 0, gap=True)
                return
            self._key, self._buf, self._crc = key, bytearray(), 0
        if m.offset > len(self._buf):
            self._ack(m, len(self._buf), gap=True)  # one went missing: say what we hold
            return
        if m.offset < len(self._buf):
            # A repeat of what we hold: the leader resends from its last acknowledgement when
            # ours were lost, so say again how much we hold, or it resends the same forever.
            self._ack(m, len(self._buf))
            return
        if len(self._buf) + len(m.data) > m.total:
            self._reset()
            self._ack(m, 0, reject=True)
            return
        self._buf += m.data
        self._crc = zlib.crc32(m.data, self._crc)
        if len(self._buf) < m.total:
            self._ack(m, len(self._buf))
            return
        buf, crc = self._buf, self._crc
        self._reset()
        if crc != m.crc:
            self._ack(m, 0, reject=True)
            return
        meta = SnapshotMeta(m.index, m.snap_term, m.conf)
        log = self.raw.raft.log
        # Keep only what the core is about to install (it asked in a Ready not yet run): a
        # late copy of an old transfer must not replace the snapshot it accepted, and one it
        # refused is never asked for.
        self.complete = {k: v for k, v in self.complete.items() if k == log.pending_snapshot}
        self.complete[meta] = buf
        self.raw.step(InstallSnapshot(m.term, m.frm, self.me, m.index, m.snap_term, m.conf))
        if log.pending_snapshot != meta:
            del self.complete[meta]
        self._ack(m, m.total, done=True)

    def take(self, meta: SnapshotMeta) -> bytearray:
        """The bytes of the snapshot the core asks to install (then forgotten here, with any
        older one)."""
        data = self.complete.pop(meta)
        for k in [k for k in self.complete if k.index <= meta.index]:
            del self.complete[k]
        return data

    def _reset(self) -> None:
        self._key, self._buf, self._crc = None, bytearray(), 0

    def _ack(
        self, m: SnapshotChunk, offset: int, *, done: bool = False, reject: bool = False, gap: bool = False
    ) -> None:
        ack = SnapshotAck(m.term, self.me, m.frm, m.index, offset, done, reject, gap)
        self.transport.send([ack], EntryBlobCache())  # type: ignore[list-item]
