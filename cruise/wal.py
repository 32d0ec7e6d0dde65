"""DiskStorage: the durable Raft log of a member, a segmented write-ahead log.

Theory of operation
-------------------
A member's ``data_dir`` holds three kinds of files::

    LOCK                                          flock()ed while a DiskStorage has the dir open
    0000000000000001-00000000000000000001.wal     segments: <seq, 16 digits>-<first new index, 20 digits>
    0000000000000002-00000000000000081923.wal
    snapshot-00000000000000081000.snap            at most one snapshot (two briefly, during a save)

Every ``.wal`` segment is a sequence of *records*, each framed as::

    +----------------+----------------+------------------------------+
    | length (u32le) | crc32 (u32le)  | payload: `length` bytes      |
    +----------------+----------------+------------------------------+

where ``crc32 = zlib.crc32(payload)`` and the payload is one msgpack array
(``use_bin_type=True``; read with ``raw=False, strict_map_key=False``) whose first
item is the record type:

=========  =====================================================================
type       payload
=========  =====================================================================
0 HEADER   ``[0, "cruise-wal", 1, seq, base_index, base_term, last_index,
           hs_term, hs_vote, hs_commit]``: the first record of every segment and
           nowhere else. It restates everything recovery needs from the segments
           before it: the compaction point (``base``: the "dummy" entry
           ``first_index() - 1`` and its term), the last index of the log when the
           segment was started, and the hard state. So the oldest segments can be
           deleted once compaction has passed them.
1 BATCH    ``[1, [[index, term, kind, value, origin], ...]]``: the entries of one
           ``append()`` call, consecutive indexes. A batch whose first index is
           ``<= last_index`` *replaces* everything from that index on (a Raft
           conflict, §5.3): the truncation and the new entries are one record, so
           they reach the disk together or not at all and a crash can never leave
           truncated entries mixed with new ones. No separate TRUNCATE record.
2 HARD     ``[2, term, vote, commit]``: the hard state; the last one read wins.
           Written only when it differs from the last one written. It lives in
           the same file as the entries, so one fdatasync makes both durable
           (etcd's design).
3 BASE     ``[3, index, term, reset]``: the log now starts after ``index``, whose
           term is ``term`` (``compact()``, or a snapshot newer than the log).
           ``reset`` true means every entry is dropped too and ``last_index``
           becomes ``index`` (a snapshot that does not match the log, etcd's
           ApplySnapshot); false keeps the entries after ``index``.
=========  =====================================================================

An entry's ``origin`` tuple is stored as an array and comes back as a tuple.
Values round-trip through msgpack, so a tuple *inside a value* comes back as a list.

Snapshots are one file, ``snapshot-<index, 20 digits>.snap``, holding two records
with the same framing: ``[10, "cruise-snap", 1, index, term, meta]`` and then the
raw snapshot bytes. :func:`write_snapshot_file` writes ``<name>.tmp``, fsyncs it,
renames it into place and fsyncs the directory; it touches no ``DiskStorage`` state,
so a member runs it on another thread while its loop keeps serving.
``adopt_snapshot`` then makes it the storage's snapshot and deletes older ones
(``save_snapshot`` does both, inline). The data's checksum is verified when the
snapshot is loaded; a damaged file is ``CorruptLog`` naming it.

Writing
-------
``append`` packs the whole batch with one msgpack call, computes one crc and
issues one ``pwrite`` at the end of the active (last) segment; the bytes are in the
kernel when it returns, so a killed *process* loses nothing, but nothing is durable
until ``sync()`` (``fdatasync``; group commit: many appends and hard states, one
sync). When the active segment would grow past ``segment_bytes`` it is fdatasync'ed
and *sealed*, and a new one is created as ``<name>.tmp``: header written and
synced, renamed into place, directory fsynced. Hence the invariant that recovery
relies on: **every segment but the last is complete and durable**, and every
segment starts with an intact header. With ``fsync=False`` no fsync of any kind
is issued (benchmarks only: the log survives a killed process but not a power cut).

A failed write is cut back with ``ftruncate`` so no half record is left in front of
later ones; if even that fails, or an fsync fails (the kernel may have dropped the
dirty pages: "fsyncgate"), the storage refuses every further write.

Recovery (on open)
------------------
Segments are read in order (their sequence numbers must be contiguous), every
record's crc verified, and the records replayed into the in-memory index. The
first remaining segment's header seeds the state; the entries its header says
existed before it (in segments deleted by compaction) are placeholders that the
BASE records replayed later must cover, or the log is corrupt. A later segment's
header must agree with the replayed state (last index, base), which catches a
missing or foreign segment.

A record fails if its header is short, its length is 0 or runs past the end of the
file, or its crc does not match. Tail versus middle is decided so:

* in a sealed (non-last) segment, any failure is *middle* corruption: sealed
  segments were synced before the next one was created;
* in the last segment, after a failing record at offset ``o`` we scan forward from
  ``o + 1``, byte by byte (skipping runs of zero bytes), for any position holding
  a complete record with a matching crc whose payload decodes to a known record
  type. If there is one, the damage has valid data after it: *middle* corruption.
  If there is none, everything from ``o`` on is a torn or garbage *tail*: the file
  is truncated at ``o`` and fsynced, ``recovery_report`` says how many bytes went,
  and ``logger.warning("wal_tail_truncated", ...)`` is called when a logger was
  given.

Middle corruption raises :class:`~cruise.core.errors.CorruptLog` with the segment
path and the offset of the failing record; the member must refuse to start. A
record whose crc matches but whose content is not a valid record (unknown type,
a gap in the indexes) is also ``CorruptLog``: it was written like that, no crash
explains it. Known limits: if the writes after the last sync reach the platter
out of order (power loss, not a killed process), a lost record followed by a
persisted one reads as middle corruption and needs an operator; and a value that
itself contains a framed, crc-valid WAL record could make a torn tail look like
middle corruption. Both err on the side of refusing to start.

Finally, a snapshot whose last entry the log does not hold (a crash after a
follower saved the leader's snapshot and before it compacted) empties the log, which
restarts after the snapshot (a BASE record is written, so the next open agrees). A log
that holds it keeps its entries, those behind the snapshot included.

Memory
------
Entries are not kept in memory. Per batch record the index holds its first index,
its segment and its file offset (three ``array``s, 20 bytes a batch), and per entry
its term (``array('q')``, 8 bytes an entry), so ``term(i)`` is O(1). The last
``cache_entries`` to ``2 * cache_entries`` entries appended are cached as
``Entry`` objects (the leader replicates from there); older ones are read back
with ``os.pread`` and decoded a batch at a time (the last decoded batch is kept).
Only the active segment and up to 8 recently read sealed segments are open.
Recovery maps each segment read-only while replaying it.

A DiskStorage is not thread-safe: one thread (the member's Ready loop) uses it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import re
import struct
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from cruise.core.errors import Compacted, CorruptLog, StorageError, Unavailable
from cruise.core.storage import entry_size, limit_size
from cruise.core.types import Entry, HardState, SnapshotMeta

__all__ = ["DiskStorage", "RecoveryReport", "WalLocked", "SEGMENT_BYTES"]

SEGMENT_BYTES = 64 * 1024 * 1024
# Zeros written ahead of the last record of a preallocated segment (see ``_write``).
ZERO_AHEAD = 64 * 1024
_ZEROS = bytes(4096 + ZERO_AHEAD)
CACHE_ENTRIES = 8192
_MAX_READERS = 8  # read-only fds kept open on sealed segments

# Record types (first item of every payload).
_HEADER = 0
_BATCH = 1
_BATCH_HEAD = b"\x92" + msgpack.packb(_BATCH)  # a 2-array whose first item is _BATCH
_HARD = 2
_BASE = 3
_SNAP_HEAD = 10
_WAL_RECORD_TYPES = (_HEADER, _BATCH, _HARD, _BASE)

_WAL_MAGIC = "cruise-wal"
_SNAP_MAGIC = "cruise-snap"
_VERSION = 1

_FRAME = struct.Struct("<II")  # length, crc32 of the payload
_FRAME_SIZE = _FRAME.size
_MAX_RECORD = 0xFFFFFFFF

_SEGMENT_RE = re.compile(r"^([0-9]{16})-([0-9]{20})\.wal$")
_SNAPSHOT_RE = re.compile(r"^snapshot-([0-9]{20})\.snap$")
_NONZERO = re.compile(rb"[^\x00]")

_crc32 = zlib.crc32
_pack_frame = _FRAME.pack
_fdatasync = getattr(os, "fdatasync", os.fsync)


def _unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True)


def _row_entry(r: list) -> Entry:
    o = r[4]
    return Entry(r[0], r[1], r[2], r[3], None if o is None else tuple(o))


def _segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016d}-{first_index:020d}.wal"


def _snapshot_name(index: int) -> str:
    return f"snapshot-{index:020d}.snap"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _call_logger(logger: Any, event: str, **fields: Any) -> None:
    """Report ``event`` to a structlog-ish logger (``.warning``) or a plain callable."""
    if logger is None:
        return
    warn = getattr(logger, "warning", None)
    if warn is not None:
        warn(event, **fields)
    else:
        logger(event, **fields)


class _SyncJob:
    """One background fdatasync handed out by :meth:`DiskStorage.begin_sync`."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def run(self) -> None:
        try:
            _fdatasync(self._fd)
        finally:
            self.discard()

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    __call__ = run


class WalLocked(StorageError):
    """Another DiskStorage (in this or another process) has the directory open."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What ``open`` found; the member logs it.

    ``path``/``offset`` name where a torn tail was cut (None when nothing was cut).
    """

    path: str | None
    offset: int | None
    bytes_cut: int
    records_kept: int  # valid records read, over all segments (headers included)
    segments: int  # segments present after recovery


@dataclass(frozen=True, slots=True)
class _SnapInfo:
    index: int
    term: int
    path: str
    data_offset: int  # where the snapshot bytes start in the file
    size: int  # how many there are
    crc: int  # their crc32, as the file's frame states it
    meta: dict | None  # what the writer stored beside the state (the configuration, for members)


def write_snapshot_file(
    directory: str,
    index: int,
    term: int,
    data: bytes | bytearray | Iterable[bytes],
    meta: dict | None = None,
    fsync: bool = True,
) -> str:
    """Write a snapshot file durably (temp file, fsync, rename, directory fsync); returns
    its path. ``data`` is the state, whole or in pieces (streamed to the file, the frame's
    length and crc written once the last piece is in). Thread-safe: it changes no
    ``DiskStorage``; ``adopt_snapshot`` does."""
    if index < 0 or term < 0:
        raise ValueError("snapshot index and term must be >= 0")
    head = msgpack.packb([_SNAP_HEAD, _SNAP_MAGIC, _VERSION, index, term, meta], use_bin_type=True)
    final = os.path.join(directory, _snapshot_name(index))
    tmp = final + ".tmp"
    pieces = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    try:
        with open(tmp, "wb") as f:
            f.write(_pack_frame(len(head), _crc32(head)))
            f.write(head)
            at = f.tell()
            f.write(_pack_frame(0, 0))  # rewritten below, when the length and crc are known
            length = crc = 0
            for piece in pieces:
                f.write(piece)
                length += len(piece)
                crc = _crc32(piece, crc)
            f.seek(at)
            f.write(_pack_frame(length, crc))
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except BaseException:
        # A full disk must not keep the half file: the space is what the member waits for.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.replace(tmp, final)
    if fsync:
        _fsync_dir(directory)
    return final


def _snap_info(path: str) -> _SnapInfo:
    """Read a snapshot file's head and the frame of its data (not the data)."""
    with open(path, "rb") as f:
        head, off = _read_snapshot_head(f.read(65536 + _FRAME_SIZE), path, whole=False, f=f)
        f.seek(off)
        frame = f.read(_FRAME_SIZE)
    if len(frame) < _FRAME_SIZE:
        raise CorruptLog("snapshot data is missing", path=path, offset=off)
    length, crc = _FRAME.unpack(frame)
    return _SnapInfo(head[3], head[4], path, off + _FRAME_SIZE, length, crc, head[5])


class DiskStorage:
    """A ``Storage`` + ``WritableStorage`` on disk; see the module docstring.

    Build one with :meth:`open`. Same semantics as ``MemoryStorage``, plus
    ``sync``/``close``, snapshots and ``compact``.
    """

    # -- opening -----------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        segment_bytes: int = SEGMENT_BYTES,
        cache_entries: int = CACHE_ENTRIES,
        logger: Any = None,
        preallocate: bool = False,
    ) -> DiskStorage:
        """Open (creating if needed) the WAL in directory ``path`` and recover it.

        Args:
            path: the member's data directory; created if missing.
            fsync: False makes ``sync`` and every other flush skip fsync (benchmarks only).
            segment_bytes: a segment is sealed and a new one started past this size.
            cache_entries: how many recent entries to keep decoded in memory (at least this many).
            logger: a structlog-style logger (``.warning(event, **kv)``) or a callable
                ``(event, **kv)``, told when a torn tail is cut.
            preallocate: reserve each segment's full size when it is created (members do;
                see ``_preallocate``). The file then ends in zeros past the last record.

        Returns:
            The storage; ``recovery_report`` says what recovery found.

        Raises:
            CorruptLog: damage before the tail, a missing segment, or a corrupt snapshot header.
            WalLocked: another DiskStorage has the directory open.
        """
        return cls(
            path,
            fsync=fsync,
            segment_bytes=segment_bytes,
            cache_entries=cache_entries,
            logger=logger,
            preallocate=preallocate,
        )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        segment_bytes: int = SEGMENT_BYTES,
        cache_entries: int = CACHE_ENTRIES,
        logger: Any = None,
        preallocate: bool = False,
    ) -> None:
        if segment_bytes < 1024:
            raise ValueError("segment_bytes must be at least 1024")
        self.path = os.fspath(path)
        self._fsync = fsync
        self._preallocate_segments = preallocate
        self._zero_ahead = preallocate and fsync
        self._segment_bytes = segment_bytes
        self._cache_min = max(1, cache_entries)
        self._logger = logger
        self._packer = msgpack.Packer(use_bin_type=True)
        self._pack: Callable[[Any], bytes] = self._packer.pack

        # -- log shape. Invariant: base <= last; entries base+1..last exist.
        self._base = 0  # index of the "dummy" entry: first_index() - 1 (compaction point)
        self._base_term = 0  # term of entry `base` (0 for index 0; the snapshot's term later)
        self._last = 0  # last index; == base for an empty log
        # Invariant: len(_terms) == last - base; _terms[i - base - 1] is the term of entry i.
        self._terms = array("q")
        # The batch index: one slot per batch record still (partly) live, in index and
        # write order. Invariant: _bfirst strictly increasing; _bfirst[0] <= base + 1 when
        # any entry exists; batch j holds indexes _bfirst[j] .. _bfirst[j+1]-1 (the last
        # batch up to `last`), the rest of its record having been truncated or compacted.
        # _bseg is non-decreasing (later batches are written to later segments); -1 marks
        # a placeholder for entries in deleted segments (recovery only, never after open).
        self._bfirst = array("q")
        self._bseg = array("q")
        self._boff = array("q")  # file offset of the record's frame
        # Recent entries. Invariant: _cache holds exactly the entries _cache_lo .. last,
        # base < _cache_lo <= last + 1, and len(_cache) <= 2 * _cache_min after append.
        self._cache: list[Entry] = []
        self._cache_lo = 1
        # The last batch decoded from disk: ((seq, offset), rows).
        self._dkey: tuple[int, int] | None = None
        self._drows: list = []

        # -- durable state
        self._hs = HardState()  # the hard state last written (what initial_state returns)
        self._snap: _SnapInfo | None = None  # the snapshot on disk, if any

        # -- files. Invariant: _paths names every segment on disk, keyed by seq, and the
        # seqs are contiguous; _seq is the active (last) one, the only one written to.
        self._paths: dict[int, str] = {}
        self._seq = 0
        self._fd = -1  # the active segment, open read-write; -1 once closed
        # Read-only fds of sealed segments, least recently used first; at most
        # _MAX_READERS, so a long log never runs the process out of descriptors.
        self._readers: OrderedDict[int, int] = OrderedDict()
        self._size = 0  # bytes in the active segment; the next record goes here
        self._header_end = 0  # size of the active segment's header record (never rotate an empty segment)
        self._zeroed_to = 0  # the active segment's bytes below this are written (records or zeros)
        self._dirty = False  # written since the last sync
        # Set when a write or sync failed beyond repair, or on close: writes refuse.
        self._dead: BaseException | None = None
        self._lock_fd = -1
        self.recovery_report = RecoveryReport(None, None, 0, 0, 0)
        # Deletes a snapshot file a newer one replaced. Unlinking a large file takes long, so a
        # member hands it to a thread; a crash before it is done leaves a file that recovery
        # deletes (the newest snapshot wins).
        self.discard: Callable[[str], None] = os.unlink

        os.makedirs(self.path, exist_ok=True)
        self._lock()
        try:
            self._recover()
        except BaseException:
            self._close_fds()
            raise

    def _lock(self) -> None:
        fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):  # best effort: a name for the message
                holder = f" (pid {int(os.pread(fd, 32, 0))})"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise WalLocked(f"{self.path} is in use by another DiskStorage{holder}") from exc
            raise
        # The holder's pid, so whoever finds the directory locked can name the process (`cruise
        # up` does). Best effort: the flock, not this text, is what keeps others out.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    # -- Storage: read side ----------------------------------------------------------
    def initial_state(self) -> HardState:
        return self._hs

    def first_index(self) -> int:
        return self._base + 1

    def last_index(self) -> int:
        return self._last

    def term(self, index: int) -> int:
        base = self._base
        if index <= base:
            if index == base:
                return self._base_term
            raise Compacted(f"index {index} is compacted (first is {base + 1})")
        if index > self._last:
            raise Unavailable(f"index {index} is past the last index {self._last}")
        return self._terms[index - base - 1]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        base = self._base
        if lo <= base:
            raise Compacted(f"index {lo} is compacted (first is {base + 1})")
        if hi > self._last + 1:
            raise Unavailable(f"index {hi - 1} is past the last index {self._last}")
        if lo >= hi:
            return []
        clo = self._cache_lo
        if lo >= clo:
            return limit_size(self._cache[lo - clo : hi - clo], max_bytes)
        out: list[Entry] = []
        total = 0
        i = lo
        stop_disk = min(hi, clo)
        bfirst = self._bfirst
        nb = len(bfirst)
        j = bisect_right(bfirst, lo) - 1
        while i < stop_disk:
            first = bfirst[j]
            end = bfirst[j + 1] if j + 1 < nb else self._last + 1
            rows = self._read_batch(j)
            stop = min(end, stop_disk)
            if len(rows) < stop - first or rows[i - first][0] != i:
                seq = self._bseg[j]
                raise CorruptLog(
                    f"batch does not hold index {i}", path=self._paths.get(seq), offset=self._boff[j]
                )
            for r in rows[i - first : stop - first]:
                e = _row_entry(r)
                if max_bytes is not None:
                    total += entry_size(e)
                    if total > max_bytes and out:
                        return out
                out.append(e)
            i = stop
            j += 1
        if hi > clo:
            for e in self._cache[: hi - clo]:
                if max_bytes is not None:
                    total += entry_size(e)
                    if total > max_bytes:
                        return out
                out.append(e)
        return out

    def _read_batch(self, j: int) -> list:
        """The rows of batch record ``j``, read from disk (crc verified)."""
        seq = self._bseg[j]
        off = self._boff[j]
        key = (seq, off)
        if key == self._dkey:
            return self._drows
        fd = self._reader(seq)
        frame = os.pread(fd, _FRAME_SIZE, off)
        bad = len(frame) < _FRAME_SIZE
        if not bad:
            length, crc = _FRAME.unpack(frame)
            payload = os.pread(fd, length, off + _FRAME_SIZE)
            bad = len(payload) != length or _crc32(payload) != crc
        if bad:
            raise CorruptLog("batch record fails its checksum on read", path=self._paths[seq], offset=off)
        rec = _unpack(payload)
        if rec[0] != _BATCH:
            raise CorruptLog("expected a batch record", path=self._paths[seq], offset=off)
        self._dkey = key
        self._drows = rows = rec[1]
        return rows

    # -- WritableStorage ---------------------------------------------------------------
    def append(
        self, entries: Sequence[Entry], packed_rows: bytes | None = None, hard_state: HardState | None = None
    ) -> None:
        """Append ``entries`` (consecutive indexes), replacing from ``entries[0].index`` on.

        ``packed_rows``, when given, must be the msgpack array of the entries' rows
        ``[index, term, kind, value, origin]`` (``cruise.wire.pack_entries`` makes exactly
        that): a member passes the bytes it already packed for, or received from, the
        network, so a batch is encoded once, not twice.

        ``hard_state``, when given, is recorded as ``set_hard_state`` would, right after the
        entries and in the same write (one syscall a turn instead of two).

        Raises:
            ValueError: a gap after ``last_index()``, an index at or below the
                compaction point, or non-consecutive indexes.
        """
        if not entries:
            return
        if self._dead is not None:
            raise self._refuse()
        first = entries[0].index
        last = self._last
        n = len(entries)
        if first > last + 1:
            raise ValueError(f"gap: appending index {first} after last index {last}")
        if first <= self._base:
            raise ValueError(f"appending index {first} at or below the compacted index {self._base}")
        if entries[n - 1].index != first + n - 1:
            raise ValueError(f"entries are not consecutive from index {first}")
        # One tuple per entry (cheaper than operator.attrgetter on slotted dataclasses),
        # one pack call, one crc, one pwrite: the hot path.
        if packed_rows is None:
            rows = [(e.index, e.term, e.kind, e.value, e.origin) for e in entries]
            payload = self._pack([_BATCH, rows])
        else:
            payload = _BATCH_HEAD + packed_rows  # the same bytes as packing [_BATCH, rows]
        if hard_state is not None and hard_state != self._hs:
            hs = hard_state
            off = self._write(payload, self._pack([_HARD, hs.term, hs.vote, hs.commit]))
            self._hs = hs
        else:
            off = self._write(payload)
        # The record is written: now change the in-memory view to match it.
        if first <= last:
            self._truncate_from(first)
        self._bfirst.append(first)
        self._bseg.append(self._seq)
        self._boff.append(off)
        self._terms.extend([e.term for e in entries])
        self._last = first + n - 1
        cache = self._cache
        cache.extend(entries)
        if len(cache) > 2 * self._cache_min:
            cut = len(cache) - self._cache_min
            del cache[:cut]
            self._cache_lo += cut

    def set_hard_state(self, hs: HardState) -> None:
        """Record ``hs`` (durable at the next ``sync``); a no-op when unchanged."""
        if hs == self._hs:
            return
        if self._dead is not None:
            raise self._refuse()
        self._write(self._pack([_HARD, hs.term, hs.vote, hs.commit]))
        self._hs = hs

    def sync(self) -> None:
        """Make every append and hard state so far durable (one fdatasync).

        With ``fsync=False`` only the write to the kernel is guaranteed (already
        done by ``append``). After a failed fdatasync the storage refuses writes.
        """
        if not self._dirty:
            return
        if self._dead is not None:
            raise self._refuse()
        if self._fsync:
            try:
                _fdatasync(self._fd)
            except OSError as exc:
                # The kernel may have dropped the dirty pages; retrying could "succeed"
                # without them. Stop here (a restart recovers from what is on disk).
                self._dead = exc
                raise
        self._dirty = False

    def begin_sync(self) -> _SyncJob | None:
        """Split ``sync`` for a background thread: returns a function that makes every
        write done *before this call* durable, or None when there is nothing to sync.

        The job runs fdatasync on a duplicate of the active segment's descriptor, so the
        owner may go on appending (and even rotate segments: rotation syncs the sealed
        segment itself) while it runs. A runner holding several jobs may run only the
        newest and ``discard()`` the others: one fdatasync covers every earlier write to
        the file, and a sealed segment was synced at rotation. If ``run()`` raises, call
        :meth:`sync_failed` with the error on the owner's thread.
        """
        if not self._dirty:
            return None
        if self._dead is not None:
            raise self._refuse()
        self._dirty = False
        if not self._fsync:
            return None
        return _SyncJob(os.dup(self._fd))

    def sync_failed(self, exc: BaseException) -> None:
        """A background sync from :meth:`begin_sync` failed: refuse every write from now on."""
        self._dead = exc

    # -- snapshots and compaction ------------------------------------------------------
    def save_snapshot(self, index: int, term: int, data: bytes | bytearray, meta: dict | None = None) -> None:
        """Store a snapshot of the state up to ``index`` (whose term is ``term``), atomically.

        Older snapshots are deleted once the new one is durable. Does not compact
        the log: call :meth:`compact` for that.

        Raises:
            ValueError: ``index`` is below the snapshot already saved.
        """
        if self._dead is not None:
            raise self._refuse()
        self._check_newer(index)
        self.adopt_snapshot(write_snapshot_file(self.path, index, term, data, meta, self._fsync))

    def adopt_snapshot(self, path: str) -> None:
        """Make the durable snapshot file at ``path`` (from :func:`write_snapshot_file`) this
        storage's snapshot, and delete older ones.

        Raises:
            ValueError: it is older than the snapshot already saved.
            CorruptLog: its head is damaged.
        """
        info = _snap_info(path)
        self._check_newer(info.index)
        self._snap = info
        for name in os.listdir(self.path):
            if _SNAPSHOT_RE.match(name) and name != os.path.basename(path):
                self.discard(os.path.join(self.path, name))

    def _check_newer(self, index: int) -> None:
        if self._snap is not None and index < self._snap.index:
            raise ValueError(f"snapshot at {index} is older than the saved one at {self._snap.index}")

    def snapshot(self) -> SnapshotMeta:
        """Where the saved snapshot stands (``SnapshotMeta()`` when there is none)."""
        if self._snap is None:
            return SnapshotMeta()
        meta = self._snap.meta
        return SnapshotMeta(
            self._snap.index, self._snap.term, meta.get("conf") if isinstance(meta, dict) else None
        )

    def snapshot_size(self) -> int:
        """Bytes of state in the saved snapshot (0 when there is none)."""
        return 0 if self._snap is None else self._snap.size

    def snapshot_crc(self) -> int:
        """crc32 of the saved snapshot's state, as its file states it."""
        return 0 if self._snap is None else self._snap.crc

    def read_snapshot(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes of the saved snapshot's state from ``offset`` (not verified:
        whoever assembles the whole checks it against the snapshot's checksum)."""
        if self._snap is None:
            return b""
        n = max(0, min(n, self._snap.size - offset))
        with open(self._snap.path, "rb") as f:
            f.seek(self._snap.data_offset + offset)
            return f.read(n)

    def load_snapshot(self) -> tuple[int, int, bytes, dict | None] | None:
        """The saved snapshot as ``(index, term, data, meta)``, or None.

        Raises:
            CorruptLog: the snapshot file fails its checksum (names the file).
        """
        if self._snap is None:
            return None
        path = self._snap.path
        with open(path, "rb") as f:
            buf = f.read()
        head, off = _read_snapshot_head(buf, path)
        frame = buf[off : off + _FRAME_SIZE]
        if len(frame) < _FRAME_SIZE:
            raise CorruptLog("snapshot data is missing", path=path, offset=off)
        length, crc = _FRAME.unpack(frame)
        data = buf[off + _FRAME_SIZE : off + _FRAME_SIZE + length]
        if len(data) != length or _crc32(data) != crc:
            raise CorruptLog("snapshot data fails its checksum", path=path, offset=off)
        return head[3], head[4], data, head[5]

    def snapshot_index(self) -> int:
        """Index of the saved snapshot (0 when there is none)."""
        return 0 if self._snap is None else self._snap.index

    def compact(self, index: int) -> None:
        """Discard entries up to ``index``: ``first_index()`` becomes ``index + 1``.

        ``term(index)`` stays answerable. ``index`` may pass ``last_index()`` only
        when a saved snapshot is at exactly ``index`` (a follower installing a
        snapshot): the log is then emptied and restarts after it. Likewise, if the
        saved snapshot at ``index`` has another term than the log there, the log
        is emptied. Segments holding only discarded entries are deleted, after the
        new start is durable. A no-op when ``index <= first_index() - 1``.

        Raises:
            ValueError: ``index`` is past ``last_index()`` with no snapshot at ``index``.
        """
        if self._dead is not None:
            raise self._refuse()
        if index <= self._base:
            return
        snap = self._snap
        if snap is not None and snap.index == index:
            term = snap.term
            reset = index > self._last or self._terms[index - self._base - 1] != term
        elif index <= self._last:
            term = self._terms[index - self._base - 1]
            reset = False
        else:
            raise ValueError(
                f"cannot compact to {index}: past the last index {self._last} and no snapshot there"
            )
        self._set_base_durably(index, term, reset)

    def _set_base_durably(self, index: int, term: int, reset: bool) -> None:
        self._write(self._pack([_BASE, index, term, reset]))
        self._set_base(index, term, reset)
        self.sync()  # the new start must be durable before segments behind it go
        self._delete_covered_segments()

    def _reader(self, seq: int) -> int:
        """An fd to read segment ``seq`` with (the active one, or a cached read-only one)."""
        if seq == self._seq and self._fd >= 0:
            return self._fd
        fd = self._readers.get(seq)
        if fd is not None:
            self._readers.move_to_end(seq)
            return fd
        if self._fd < 0:
            raise self._refuse()
        path = self._paths.get(seq)
        if path is None:
            raise CorruptLog(f"segment {seq} is gone", path=self.path, offset=0)
        fd = os.open(path, os.O_RDONLY)
        self._readers[seq] = fd
        if len(self._readers) > _MAX_READERS:
            os.close(self._readers.popitem(last=False)[1])
        return fd

    def _delete_covered_segments(self) -> None:
        """Delete the oldest sealed segments that hold no live entry."""
        keep = self._bseg[0] if self._bseg else self._seq
        doomed = sorted(s for s in self._paths if s < keep and s != self._seq)
        if not doomed:
            return
        for seq in doomed:  # oldest first: what remains is always a contiguous run
            fd = self._readers.pop(seq, None)
            if fd is not None:
                os.close(fd)
            os.unlink(self._paths.pop(seq))
        if self._dkey is not None and self._dkey[0] not in self._paths:
            self._dkey = None
        if self._fsync:
            _fsync_dir(self.path)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Close every file (does not sync: call ``sync`` first for durability)."""
        if self._dead is None:
            self._dead = ValueError("DiskStorage is closed")
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in [*self._readers.values(), self._fd]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._readers.clear()
        self._fd = -1
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tail_offset(self) -> int:
        """Where the next record goes in the active segment (its logical size; the file
        itself is preallocated to the segment size)."""
        return self._size

    def segment_paths(self) -> list[str]:
        """Paths of the segments on disk, oldest first (for tools and tests)."""
        return [self._paths[s] for s in sorted(self._paths)]

    def _refuse(self) -> BaseException:
        dead = self._dead
        if isinstance(dead, ValueError):
            return dead
        return OSError(f"DiskStorage at {self.path} refuses writes after an I/O failure: {dead}")

    # -- writing records -------------------------------------------------------------
    def _write(self, payload: bytes, then: bytes | None = None) -> int:
        """Frame ``payload`` (and ``then``, a second record after it, in the same pwrite) and
        write at the end of the active segment; return the first record's offset."""
        n = len(payload)
        if n > _MAX_RECORD - _FRAME_SIZE:
            raise ValueError(f"record of {n} bytes is too large")
        data = _pack_frame(n, _crc32(payload)) + payload
        if then is not None:
            data += _pack_frame(len(then), _crc32(then)) + then
        if self._size + len(data) > self._segment_bytes and self._size > self._header_end:
            self._rotate()
        off = self._size
        end = off + len(data)
        zeroed_to = self._zeroed_to  # updated only once the pwrite succeeded
        if end > zeroed_to and self._zero_ahead:
            # fallocate leaves the segment's extents "unwritten". The first write into each
            # block turns it "written", a metadata change that the next fdatasync commits to
            # the file system's journal, so every append paid for one. Writing zeros 64 KiB
            # past the end, in the same pwrite, pays that once per 64 KiB: appends then
            # overwrite written blocks, and their fdatasync only flushes data. Recovery
            # already reads a zero remainder as the segment's clean end.
            stop = min(self._segment_bytes, (end | 4095) + 1 + ZERO_AHEAD)
            if stop > end:
                data += _ZEROS[: stop - end]
            zeroed_to = max(stop, end)
        self._pwrite_all(self._fd, data, off)
        self._zeroed_to = zeroed_to
        self._size = end
        self._dirty = True
        return off

    def _pwrite_all(self, fd: int, data: bytes, off: int) -> None:
        try:
            done = os.pwrite(fd, data, off)
            if done != len(data):
                view = memoryview(data)
                while done < len(data):
                    done += os.pwrite(fd, view[done:], off + done)
        except BaseException:
            # Leave no half record in front of the next one.
            try:
                os.ftruncate(fd, off)
            except OSError as exc:
                self._dead = exc
            raise

    def _preallocate(self, fd: int) -> None:
        """Reserve the whole segment up front (etcd does the same): an fdatasync after an
        append that stays inside the file's size need not commit a size change. Recovery
        treats an all-zero remainder of the last segment as its clean end.
        """
        if not (self._preallocate_segments and self._fsync and hasattr(os, "posix_fallocate")):
            return
        try:
            if os.fstat(fd).st_size < self._segment_bytes:
                os.posix_fallocate(fd, 0, self._segment_bytes)
        except OSError:
            pass  # a file system without fallocate: appends extend the file as before

    def _rotate(self) -> None:
        """Seal the active segment (fdatasync) and start the next one.

        Always synced when fsync is on, even if not dirty: a background sync that
        ``begin_sync`` handed out for this segment may be coalesced away by its runner.
        """
        try:
            os.ftruncate(self._fd, self._size)  # drop the preallocated zeros past the last record
            if self._fsync:
                _fdatasync(self._fd)
        except OSError as exc:
            self._dead = exc
            raise
        self._dirty = False
        self._create_segment(self._seq + 1)

    def _create_segment(self, seq: int) -> None:
        name = _segment_name(seq, self._last + 1)
        final = os.path.join(self.path, name)
        tmp = final + ".tmp"
        hs = self._hs
        header = self._pack(
            [
                _HEADER,
                _WAL_MAGIC,
                _VERSION,
                seq,
                self._base,
                self._base_term,
                self._last,
                hs.term,
                hs.vote,
                hs.commit,
            ]
        )
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = _pack_frame(len(header), _crc32(header)) + header
            self._pwrite_all(fd, data, 0)
            self._preallocate(fd)
            if self._fsync:
                _fdatasync(fd)
            os.replace(tmp, final)
            if self._fsync:
                _fsync_dir(self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self._fd >= 0:  # the sealed segment stays readable through the reader cache
            self._readers[self._seq] = self._fd
            if len(self._readers) > _MAX_READERS:
                os.close(self._readers.popitem(last=False)[1])
        self._paths[seq] = final
        self._seq = seq
        self._fd = fd
        self._size = self._header_end = self._zeroed_to = len(data)

    # -- the in-memory index (shared by live writes and recovery replay) -------------
    def _truncate_from(self, first: int) -> None:
        """Drop entries ``first..last``. Requires ``base < first <= last``."""
        base = self._base
        del self._terms[first - base - 1 :]
        j = bisect_left(self._bfirst, first)
        del self._bfirst[j:]
        del self._bseg[j:]
        del self._boff[j:]
        if first >= self._cache_lo:
            del self._cache[first - self._cache_lo :]
        else:
            self._cache.clear()
            self._cache_lo = first
        self._last = first - 1

    def _add_batch(self, first: int, seq: int, off: int, terms: array | list) -> None:
        """Add a batch at ``first == last + 1`` (recovery; ``append`` inlines this)."""
        self._bfirst.append(first)
        self._bseg.append(seq)
        self._boff.append(off)
        self._terms.extend(terms)
        self._last = first + len(terms) - 1
        self._cache_lo = self._last + 1

    def _set_base(self, index: int, term: int, reset: bool) -> None:
        """Move the start of the log after ``index`` (term ``term``); see BASE records."""
        if reset or index >= self._last:
            self._terms = array("q")
            self._bfirst = array("q")
            self._bseg = array("q")
            self._boff = array("q")
            self._cache.clear()
            self._base, self._base_term, self._last = index, term, index
            self._cache_lo = index + 1
            return
        if index <= self._base:
            return
        del self._terms[: index - self._base]
        # Keep the batch holding index + 1 and every one after it.
        k = bisect_right(self._bfirst, index + 1) - 1
        del self._bfirst[:k]
        del self._bseg[:k]
        del self._boff[:k]
        if index + 1 > self._cache_lo:
            del self._cache[: index + 1 - self._cache_lo]
            self._cache_lo = index + 1
        self._base, self._base_term = index, term

    # -- recovery --------------------------------------------------------------------
    def _recover(self) -> None:
        segs: list[tuple[int, str]] = []
        snaps: list[tuple[int, str]] = []
        for name in os.listdir(self.path):
            full = os.path.join(self.path, name)
            if name.endswith(".wal.tmp") or name.endswith(".snap.tmp"):
                os.unlink(full)  # a crash during creation; never renamed, never used
            elif m := _SEGMENT_RE.match(name):
                segs.append((int(m.group(1)), full))
            elif m := _SNAPSHOT_RE.match(name):
                snaps.append((int(m.group(1)), full))
        segs.sort()
        snaps.sort()

        # The newest snapshot wins; older ones are leftovers of a save cut short.
        for _, old in snaps[:-1]:
            os.unlink(old)
        if snaps:
            sidx, spath = snaps[-1]
            info = _snap_info(spath)
            if info.index != sidx:
                raise CorruptLog(f"snapshot file holds index {info.index}", path=spath, offset=0)
            self._snap = info

        for k in range(1, len(segs)):
            if segs[k][0] != segs[k - 1][0] + 1:
                raise CorruptLog(f"segment {segs[k - 1][0] + 1} is missing", path=segs[k][1], offset=0)

        records = 0
        cut_path: str | None = None
        cut_offset: int | None = None
        cut_bytes = 0
        if not segs:
            self._create_segment(1)
            records = 1
        else:
            for k, (seq, spath) in enumerate(segs):
                is_last = k == len(segs) - 1
                kept, size, cut = self._replay_segment(seq, spath, k == 0, is_last)
                records += kept
                self._paths[seq] = spath
                if is_last:
                    self._seq, self._fd, self._size = seq, os.open(spath, os.O_RDWR), size
                    self._zeroed_to = size
                    self._preallocate(self._fd)
                    if cut:
                        cut_path, cut_offset, cut_bytes = spath, size, cut
            if self._bseg and self._bseg[0] == -1:
                end = self._bfirst[1] - 1 if len(self._bfirst) > 1 else self._last
                raise CorruptLog(
                    f"entries {self._bfirst[0]}..{end} are in no segment (a deleted or missing segment)",
                    path=segs[0][1],
                    offset=0,
                )
        self._cache = []
        self._cache_lo = self._last + 1
        self.recovery_report = RecoveryReport(cut_path, cut_offset, cut_bytes, records, len(self._paths))
        if cut_bytes:
            _call_logger(
                self._logger, "wal_tail_truncated", path=cut_path, offset=cut_offset, bytes_cut=cut_bytes
            )

        snap = self._snap
        if snap is not None and snap.index > self._base:
            # A log that holds the snapshot's last entry keeps its entries (those behind the
            # snapshot are retained for readers); one that does not restarts after it.
            if snap.index > self._last or self._terms[snap.index - self._base - 1] != snap.term:
                self._set_base_durably(snap.index, snap.term, True)

    def _replay_segment(self, seq: int, path: str, is_first: bool, is_last: bool) -> tuple[int, int, int]:
        """Replay one segment into the index; return (records kept, valid size, bytes cut)."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            off = 0
            kept = 0
            while off < size:
                payload = _record_at(buf, off, size)
                if payload is None:
                    if off == 0:
                        raise CorruptLog("segment header is damaged", path=path, offset=0)
                    if not is_last:
                        raise CorruptLog("damaged record in a sealed segment", path=path, offset=off)
                    if _NONZERO.search(buf, off) is None:
                        size = off  # the preallocated, never written rest of the segment
                        break
                    later = _find_valid_record(buf, off + 1, size)
                    if later is not None:
                        raise CorruptLog(
                            f"damaged record followed by a valid record at offset {later}",
                            path=path,
                            offset=off,
                        )
                    break  # a torn tail: cut below
                try:
                    rec = _unpack(payload)
                    self._replay_record(rec, seq, off, is_first and off == 0)
                except CorruptLog:
                    raise
                except Exception as exc:
                    raise CorruptLog(f"invalid record ({exc!r})", path=path, offset=off) from exc
                if off == 0:
                    self._header_end = _FRAME_SIZE + len(payload)
                kept += 1
                off += _FRAME_SIZE + len(payload)
            if off == 0:
                raise CorruptLog("segment is empty", path=path, offset=0)
        finally:
            if not isinstance(buf, bytes):
                buf.close()
        cut = size - off
        if cut:
            fd = os.open(path, os.O_RDWR)
            try:
                os.ftruncate(fd, off)
                os.fsync(fd)
            finally:
                os.close(fd)
        return kept, off, cut

    def _replay_record(self, rec: list, seq: int, off: int, seeds: bool) -> None:
        kind = rec[0]
        if off == 0:
            if kind != _HEADER or rec[1] != _WAL_MAGIC:
                raise ValueError("not a cruise WAL segment header")
            if rec[2] != _VERSION:
                raise ValueError(f"unsupported WAL version {rec[2]}")
            _, _, _, hseq, base, base_term, last, hs_term, hs_vote, hs_commit = rec
            if hseq != seq:
                raise ValueError(f"header says segment {hseq}")
            if seeds:
                # The oldest segment left: entries base+1..last were in segments now
                # deleted. Placeholders; a BASE record replayed later must cover them.
                self._base, self._base_term, self._last = base, base_term, base
                if last > base:
                    self._add_batch(base + 1, -1, -1, array("q", [-1]) * (last - base))
            elif (base, last) != (self._base, self._last):
                raise ValueError(
                    f"header says base {base}, last {last}; the segments before say base {self._base}, last {self._last}"
                )
            self._hs = HardState(hs_term, hs_vote, hs_commit)
        elif kind == _BATCH:
            rows = rec[1]
            first = rows[0][0]
            if rows[-1][0] != first + len(rows) - 1:
                raise ValueError("batch indexes are not consecutive")
            if first > self._last + 1 or first <= self._base:
                raise ValueError(f"batch at {first} does not fit a log of {self._base + 1}..{self._last}")
            if first <= self._last:
                self._truncate_from(first)
            self._add_batch(first, seq, off, array("q", [r[1] for r in rows]))
        elif kind == _HARD:
            self._hs = HardState(rec[1], rec[2], rec[3])
        elif kind == _BASE:
            self._set_base(rec[1], rec[2], bool(rec[3]))
        else:
            raise ValueError(f"unknown record type {kind!r}")


# -- framing helpers -----------------------------------------------------------------
def _record_at(buf: Any, off: int, size: int) -> bytes | None:
    """The payload of the record framed at ``off`` if it is complete with a matching crc."""
    if size - off < _FRAME_SIZE:
        return None
    length, crc = _FRAME.unpack_from(buf, off)
    start = off + _FRAME_SIZE
    if length == 0 or length > size - start:
        return None
    payload = buf[start : start + length]
    if _crc32(payload) != crc:
        return None
    return payload


def _find_valid_record(buf: Any, start: int, size: int) -> int | None:
    """The first offset >= ``start`` holding a crc-valid record of a known type, or None.

    A record's length is >= 1, so one of its first four bytes is non-zero: runs of
    zero bytes (preallocated or zero-filled tails) are skipped at once.
    """
    p = start
    last = size - _FRAME_SIZE - 1
    while p <= last:
        if buf[p : p + 4] == b"\x00\x00\x00\x00":
            m = _NONZERO.search(buf, p + 4)
            if m is None:
                return None
            p = max(p + 1, m.start() - 3)
            continue
        payload = _record_at(buf, p, size)
        if payload is not None:
            try:
                rec = _unpack(payload)
            except Exception:
                rec = None
            if isinstance(rec, list) and rec and rec[0] in _WAL_RECORD_TYPES:
                return p
        p += 1
    return None


def _read_snapshot_head(buf: bytes, path: str, whole: bool = True, f: Any = None) -> tuple[list, int]:
    """Parse a snapshot file's head record; return it and the offset after it."""
    if len(buf) < _FRAME_SIZE:
        raise CorruptLog("snapshot header is truncated", path=path, offset=0)
    length, crc = _FRAME.unpack_from(buf, 0)
    end = _FRAME_SIZE + length
    if not whole and end > len(buf) and f is not None:
        buf = buf + f.read(end - len(buf))
    payload = buf[_FRAME_SIZE:end]
    if len(payload) != length or _crc32(payload) != crc:
        raise CorruptLog("snapshot header fails its checksum", path=path, offset=0)
    try:
        head = _unpack(payload)
        ok = isinstance(head, list) and len(head) == 6 and head[0] == _SNAP_HEAD and head[1] == _SNAP_MAGIC
    except Exception:
        ok = False
    if not ok:
        raise CorruptLog("not a cruise snapshot", path=path, offset=0)
    if head[2] != _VERSION:
        raise CorruptLog(f"unsupported snapshot version {head[2]}", path=path, offset=0)
    return head, end
