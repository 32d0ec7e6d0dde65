"""DiskStorage: protocol conformance with MemoryStorage, persistence, segments,
snapshots and compaction, and recovery from torn or damaged files."""

from __future__ import annotations

import os
import random
import shutil
import zlib
from pathlib import Path

import pytest

from cruise.core.errors import Compacted, CorruptLog, Unavailable
from cruise.core.storage import MemoryStorage, Storage, WritableStorage
from cruise.core.types import Entry, HardState
from cruise.wal import DiskStorage, WalLocked

pytestmark = pytest.mark.timeout(60)


# -- helpers -------------------------------------------------------------------------
def ents(lo: int, hi: int, term: int = 1, tag: str = "v") -> list[Entry]:
    """Entries lo..hi inclusive."""
    return [Entry(i, term, "record", f"{tag}{i}", ("c", i)) for i in range(lo, hi + 1)]


def outcome(fn, *args):
    """(\"ok\", result) or (\"err\", exception type), to compare two storages call by call."""
    try:
        return ("ok", fn(*args))
    except (Compacted, Unavailable, ValueError) as exc:
        return ("err", type(exc))


def state(st) -> tuple:
    """Everything a reader can see, for equality checks."""
    first, last = st.first_index(), st.last_index()
    return (first, last, st.term(first - 1), st.entries(first, last + 1), st.initial_state())


def only_segment(d: Path) -> Path:
    segs = sorted(d.glob("*.wal"))
    assert len(segs) == 1, segs
    return segs[0]


def random_value(rng: random.Random):
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randrange(-(2**40), 2**40)
    if kind == 1:
        return "s" * rng.randrange(0, 200)
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    if kind == 3:
        return {"k": [1, "two", None, 3.5], "n": {"x": rng.random()}, 7: b"seven"}
    if kind == 4:
        return None
    if kind == 5:
        return [rng.random(), True, False, []]
    return rng.random()


# -- conformance with MemoryStorage --------------------------------------------------
def test_implements_the_protocols(tmp_path):
    with DiskStorage.open(tmp_path / "d") as st:
        assert isinstance(st, Storage)
        for name in ("append", "set_hard_state", "sync"):
            assert callable(getattr(st, name))
        assert hasattr(WritableStorage, "append")
        assert (st.first_index(), st.last_index(), st.term(0)) == (1, 0, 0)
        assert st.initial_state() == HardState()
        assert st.entries(1, 1) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_match_memory_storage(tmp_path, seed):
    """The same random operations on both storages give the same answers, across reopens."""
    rng = random.Random(seed)
    d = tmp_path / "d"
    mem = MemoryStorage()
    disk = DiskStorage.open(d, segment_bytes=2048, cache_entries=rng.choice([1, 4, 32]))
    term = 1
    try:
        for _ in range(1500):
            op = rng.random()
            last = mem.last_index()
            if op < 0.35:
                if rng.random() < 0.05:
                    first = last + rng.randint(2, 4)  # a gap: both refuse
                elif last and rng.random() < 0.25:
                    first = rng.randint(max(1, last - 6), last)  # a conflict
                    term += 1
                else:
                    first = last + 1
                batch = [
                    Entry(
                        i,
                        term,
                        rng.choice(["record", "noop", "config"]),
                        random_value(rng),
                        rng.choice([None, ("c", i)]),
                    )
                    for i in range(first, first + rng.randint(1, 12))
                ]
                if rng.random() < 0.5:
                    assert outcome(disk.append, batch) == outcome(mem.append, batch)
                else:  # with a hard state riding in the same write, as a member does
                    hs = HardState(term, rng.choice([None, "n1", "n2"]), rng.randint(0, max(0, first - 1)))
                    got = outcome(disk.append, batch, None, hs)
                    assert got == outcome(mem.append, batch)
                    if got[0] == "ok":
                        mem.set_hard_state(hs)
            elif op < 0.6:
                # hi >= 0: MemoryStorage slices with hi, so a negative hi wraps around there
                lo, hi = rng.randint(-1, last + 3), rng.randint(0, last + 3)
                mb = rng.choice([None, 0, 1, 100, 500, 5000])
                assert outcome(disk.entries, lo, hi, mb) == outcome(mem.entries, lo, hi, mb), (lo, hi, mb)
            elif op < 0.8:
                i = rng.randint(-2, last + 3)
                assert outcome(disk.term, i) == outcome(mem.term, i)
            elif op < 0.87:
                hs = HardState(term, rng.choice([None, "n1", "n2"]), rng.randint(0, last))
                disk.set_hard_state(hs)
                mem.set_hard_state(hs)
            elif op < 0.95:
                disk.sync()
                mem.sync()
            else:
                disk.close()
                disk = DiskStorage.open(d, segment_bytes=2048, cache_entries=rng.choice([1, 4, 32]))
            assert (disk.first_index(), disk.last_index()) == (mem.first_index(), mem.last_index())
            assert disk.initial_state() == mem.initial_state()
        assert state(disk) == state(mem)
        assert len(disk.segment_paths()) > 3  # the run crossed segments
    finally:
        disk.close()
    with DiskStorage.open(d, segment_bytes=2048) as again:
        assert state(again) == state(mem)


def test_truncate_on_conflict_and_reopen(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d) as st:
        st.append(ents(1, 10, term=1))
        st.append(ents(5, 7, term=2, tag="new"))
        assert st.last_index() == 7
        assert [e.term for e in st.entries(1, 8)] == [1, 1, 1, 1, 2, 2, 2]
        with pytest.raises(Unavailable):
            st.term(8)
        st.sync()
    with DiskStorage.open(d) as st:
        assert st.last_index() == 7
        assert st.entries(1, 8) == ents(1, 4) + ents(5, 7, term=2, tag="new")
        st.append(ents(8, 9, term=2, tag="new"))  # the old 8..10 never come back
        st.sync()
    with DiskStorage.open(d) as st:
        assert st.entries(1, 10) == ents(1, 4) + ents(5, 9, term=2, tag="new")


def test_conflict_into_an_older_segment_survives_reopen(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d, segment_bytes=1024, cache_entries=1) as st:
        for i in range(1, 201, 5):
            st.append(ents(i, i + 4))
        assert len(st.segment_paths()) >= 4
        st.append(ents(20, 25, term=3, tag="x"))  # entry 20 is in the first segment
        expected = ents(1, 19) + ents(20, 25, term=3, tag="x")
        assert st.entries(1, 26) == expected
        st.sync()
    with DiskStorage.open(d, segment_bytes=1024, cache_entries=1) as st:
        assert st.last_index() == 25
        assert st.entries(1, 26) == expected


def test_gap_and_below_compaction_raise(tmp_path):
    with DiskStorage.open(tmp_path / "d") as st:
        st.append(ents(1, 5))
        with pytest.raises(ValueError):
            st.append(ents(7, 8))
        with pytest.raises(ValueError):
            st.append([Entry(6, 1), Entry(8, 1)])  # not consecutive
        st.compact(3)
        with pytest.raises(ValueError):
            st.append(ents(3, 4, term=2))
        assert st.entries(4, 6) == ents(4, 5)


def test_entries_max_bytes_and_errors(tmp_path):
    mem = MemoryStorage()
    with DiskStorage.open(tmp_path / "d", cache_entries=2) as st:
        batch = [Entry(i, 1, "record", "x" * 100) for i in range(1, 21)]
        st.append(batch[:10])
        st.append(batch[10:])
        mem.append(batch)
        for lo in (1, 5, 17, 19):  # 1 and 5 read from disk, 19 from the cache
            for mb in (None, 0, 1, 124, 125, 250, 1000):
                got = st.entries(lo, 21, mb)
                assert got == mem.entries(lo, 21, mb)
                assert len(got) >= 1
        st.compact(4)
        with pytest.raises(Compacted):
            st.entries(4, 6)
        with pytest.raises(Compacted):
            st.term(3)
        assert st.term(4) == 1
        with pytest.raises(Unavailable):
            st.entries(5, 22)
        with pytest.raises(Unavailable):
            st.term(21)


def test_reopen_persists_entries_and_hard_state(tmp_path):
    d = tmp_path / "d"
    hs = HardState(term=4, vote="n2", commit=7)
    with DiskStorage.open(d) as st:
        st.append(ents(1, 10, term=4))
        st.set_hard_state(hs)
        st.sync()
    with DiskStorage.open(d) as st:
        assert st.initial_state() == hs
        assert st.entries(1, 11) == ents(1, 10, term=4)
        assert st.entries(1, 2)[0].origin == ("c", 1)
        assert st.recovery_report.bytes_cut == 0


def test_hard_state_with_an_append_writes_the_same_bytes_as_after_it(tmp_path):
    hs = HardState(term=3, vote="n1", commit=5)
    with DiskStorage.open(tmp_path / "a") as a, DiskStorage.open(tmp_path / "b") as b:
        a.append(ents(1, 8, term=3), None, hs)
        b.append(ents(1, 8, term=3))
        b.set_hard_state(hs)
        a.append(ents(9, 9, term=3), None, hs)  # unchanged: not written again
        b.append(ents(9, 9, term=3))
        a.sync()
        b.sync()
    assert only_segment(tmp_path / "a").read_bytes() == only_segment(tmp_path / "b").read_bytes()
    with DiskStorage.open(tmp_path / "a") as a:
        assert a.initial_state() == hs
        assert a.entries(1, 10) == ents(1, 9, term=3)


def test_hard_state_written_only_when_it_changes(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d) as st:
        st.set_hard_state(HardState(1, "a", 0))
        size = st.tail_offset
        st.set_hard_state(HardState(1, "a", 0))
        assert st.tail_offset == size
        st.set_hard_state(HardState(1, "a", 1))
        assert st.tail_offset > size


def test_segments_rotate_and_reads_cross_them(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d, segment_bytes=1024, cache_entries=1) as st:
        for i in range(1, 301, 3):
            st.append(ents(i, i + 2))
        st.sync()
        paths = st.segment_paths()
        assert len(paths) > 5
        assert paths == sorted(paths)
        assert st.entries(1, 301) == ents(1, 300)
        assert st.entries(50, 250, 1000) == ents(50, 250)[: len(st.entries(50, 250, 1000))]
    names = sorted(p.name for p in d.glob("*.wal"))
    assert names[0].startswith("0000000000000001-")
    with DiskStorage.open(d, segment_bytes=1024, cache_entries=1) as st:
        assert st.entries(1, 301) == ents(1, 300)
        assert st.recovery_report.segments == len(names)


def test_reading_many_segments_keeps_few_files_open(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d, segment_bytes=1024, cache_entries=1) as st:
        for i in range(1, 1201, 4):
            st.append(ents(i, i + 3))
        st.sync()
    fds_before = len(os.listdir("/proc/self/fd"))
    with DiskStorage.open(d, segment_bytes=1024, cache_entries=1) as st:
        assert len(st.segment_paths()) > 30
        for lo in range(1, 1201, 40):  # every segment, twice over
            assert st.entries(lo, lo + 40) == ents(lo, lo + 39)
        assert st.entries(1, 1201, 2000)[0] == ents(1, 1)[0]
        assert len(os.listdir("/proc/self/fd")) - fds_before <= 12
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_compact_deletes_covered_segments_and_keeps_hard_state(tmp_path):
    d = tmp_path / "d"
    hs = HardState(term=2, vote="n3", commit=5)
    with DiskStorage.open(d, segment_bytes=1024) as st:
        st.set_hard_state(hs)  # written once, into the first segment only
        for i in range(1, 301, 3):
            st.append(ents(i, i + 2, term=2))
        st.sync()
        before = len(st.segment_paths())
        st.compact(290)
        assert st.first_index() == 291
        assert st.term(290) == 2
        assert len(st.segment_paths()) < before
        assert not Path(st.segment_paths()[0]).name.startswith("0000000000000001-")
    with DiskStorage.open(d, segment_bytes=1024) as st:
        assert st.initial_state() == hs
        assert (st.first_index(), st.last_index(), st.term(290)) == (291, 300, 2)
        assert st.entries(291, 301) == ents(291, 300, term=2)
        st.compact(300)  # everything
        assert (st.first_index(), st.last_index(), st.term(300)) == (301, 300, 2)
        st.append(ents(301, 302, term=3))
        st.sync()
    with DiskStorage.open(d, segment_bytes=1024) as st:
        assert (st.first_index(), st.last_index()) == (301, 302)
        assert st.initial_state() == hs


def test_compact_after_conflict_across_deleted_segments(tmp_path):
    """Entries truncated by a conflict sit in old segments; deleting those must not break recovery."""
    d = tmp_path / "d"
    with DiskStorage.open(d, segment_bytes=1024, cache_entries=1) as st:
        for i in range(1, 101, 2):
            st.append(ents(i, i + 1))
        assert len(st.segment_paths()) == 3
        st.append(ents(50, 120, term=2, tag="b"))  # starts segment 4, whose header says "last 100"
        st.compact(60)
        expected = state(st)
        assert expected[0] == 61
        # Segments 1-3 held only compacted or truncated entries: gone. Recovery now
        # starts from a header naming entries 1..100 it cannot see.
        assert [Path(p).name[:16] for p in st.segment_paths()] == ["0000000000000004", "0000000000000005"]
    with DiskStorage.open(d, segment_bytes=1024, cache_entries=1) as st:
        assert state(st) == expected


def test_missing_segment_is_refused(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d, segment_bytes=1024) as st:
        for i in range(1, 101, 4):
            st.append(ents(i, i + 3))
        paths = st.segment_paths()
        assert len(paths) >= 3
    os.unlink(paths[1])
    with pytest.raises(CorruptLog) as info:
        DiskStorage.open(d, segment_bytes=1024)
    assert "missing" in str(info.value)
    d2 = tmp_path / "d2"
    with DiskStorage.open(d2, segment_bytes=1024) as st:
        for i in range(1, 101, 4):
            st.append(ents(i, i + 3))
        paths = st.segment_paths()
        assert len(paths) >= 3
    os.unlink(paths[0])  # not compacted: its entries are simply gone
    with pytest.raises(CorruptLog) as info:
        DiskStorage.open(d2, segment_bytes=1024)
    assert info.value.path == paths[1]


def test_snapshot_save_load_replace_and_reopen(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d) as st:
        assert st.load_snapshot() is None
        st.append(ents(1, 20, term=1))
        st.append(ents(21, 30, term=2))
        st.save_snapshot(10, 1, b"state-10", {"members": ["n1"]})
        assert st.load_snapshot() == (10, 1, b"state-10", {"members": ["n1"]})
        st.compact(10)
        st.save_snapshot(25, 2, b"state-25")
        assert [p.name for p in d.glob("snapshot-*")] == ["snapshot-00000000000000000025.snap"]
        with pytest.raises(ValueError):
            st.save_snapshot(24, 2, b"older")
        st.sync()
    with DiskStorage.open(d) as st:
        assert st.load_snapshot() == (25, 2, b"state-25", None)
        # The log holds the snapshot's last entry: it keeps the entries behind it.
        assert (st.first_index(), st.last_index(), st.term(25)) == (11, 30, 2)
        assert st.entries(26, 31) == ents(26, 30, term=2)


def test_snapshot_beyond_the_log_resets_it(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d) as st:
        st.append(ents(1, 5))
        with pytest.raises(ValueError):
            st.compact(50)  # no snapshot there
        st.save_snapshot(50, 3, b"from the leader")
        st.compact(50)  # a follower installing a snapshot
        assert (st.first_index(), st.last_index(), st.term(50)) == (51, 50, 3)
        st.append(ents(51, 52, term=3))
        st.sync()
    with DiskStorage.open(d) as st:
        assert (st.first_index(), st.last_index()) == (51, 52)
        assert st.entries(51, 53) == ents(51, 52, term=3)


def test_snapshot_newer_than_log_applied_on_open(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d) as st:
        st.append(ents(1, 5))
        st.save_snapshot(8, 2, b"s")  # saved, log not compacted (a crash before compact)
        st.sync()
    with DiskStorage.open(d) as st:
        assert (st.first_index(), st.last_index(), st.term(8)) == (9, 8, 2)
        st.append(ents(9, 10, term=2))
        st.sync()
    with DiskStorage.open(d) as st:
        assert (st.first_index(), st.last_index()) == (9, 10)


def test_corrupt_snapshot_names_the_file(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d) as st:
        st.append(ents(1, 5))
        st.save_snapshot(3, 1, b"x" * 1000)
    snap = d / "snapshot-00000000000000000003.snap"
    raw = bytearray(snap.read_bytes())
    raw[-10] ^= 0x40  # in the data
    snap.write_bytes(bytes(raw))
    with DiskStorage.open(d) as st:
        with pytest.raises(CorruptLog) as info:
            st.load_snapshot()
        assert info.value.path == str(snap)
    raw[12] ^= 0x01  # in the head: refused on open
    snap.write_bytes(bytes(raw))
    with pytest.raises(CorruptLog) as info:
        DiskStorage.open(d)
    assert info.value.path == str(snap)


def test_leftover_tmp_files_are_removed(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d) as st:
        st.append(ents(1, 3))
    (d / "0000000000000002-00000000000000000004.wal.tmp").write_bytes(b"half a header")
    (d / "snapshot-00000000000000000009.snap.tmp").write_bytes(b"half a snapshot")
    with DiskStorage.open(d) as st:
        assert st.last_index() == 3
    assert not list(d.glob("*.tmp"))


def test_second_open_of_the_same_dir_is_refused(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d):
        with pytest.raises(WalLocked):
            DiskStorage.open(d)
    with DiskStorage.open(d):
        pass


def test_closed_storage_refuses_writes(tmp_path):
    st = DiskStorage.open(tmp_path / "d")
    st.close()
    st.close()
    with pytest.raises(ValueError):
        st.append(ents(1, 1))


def test_failed_write_leaves_no_half_record(tmp_path, monkeypatch):
    d = tmp_path / "d"
    st = DiskStorage.open(d)
    st.append(ents(1, 3))
    real = os.pwrite
    size = os.path.getsize(only_segment(d))

    def half_then_enospc(fd, data, off):
        real(fd, bytes(data[: len(data) // 2]), off)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_enospc)
    with pytest.raises(OSError):
        st.append(ents(4, 6))
    monkeypatch.setattr(os, "pwrite", real)
    assert os.path.getsize(only_segment(d)) == size
    assert st.last_index() == 3
    st.append(ents(4, 5, tag="again"))
    st.sync()
    st.close()
    with DiskStorage.open(d) as st:
        assert st.entries(1, 6) == ents(1, 3) + ents(4, 5, tag="again")
        assert st.recovery_report.bytes_cut == 0


def test_failed_fsync_stops_writes(tmp_path, monkeypatch):
    import cruise.wal as wal

    st = DiskStorage.open(tmp_path / "d")
    st.append(ents(1, 1))

    def eio(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wal, "_fdatasync", eio)
    with pytest.raises(OSError):
        st.sync()
    with pytest.raises(OSError):
        st.append(ents(2, 2))
    st.close()


# -- crash consistency ---------------------------------------------------------------
def build_log(d: Path) -> tuple[list[int], list[tuple]]:
    """Write a known log into one segment; return each record's end offset and the
    state visible after it (index 0: after the header)."""
    ends: list[int] = []
    states: list[tuple] = []
    seg: Path | None = None

    def mark(st):
        nonlocal seg
        seg = seg or only_segment(d)
        ends.append(os.path.getsize(seg))
        states.append(state(st))

    with DiskStorage.open(d) as st:
        mark(st)
        st.append(ents(1, 4, term=1))
        mark(st)
        st.set_hard_state(HardState(1, "n1", 2))
        mark(st)
        st.append(ents(5, 9, term=1))
        mark(st)
        st.append(ents(10, 10, term=1))
        mark(st)
        st.set_hard_state(HardState(2, None, 9))
        mark(st)
        st.append(ents(11, 14, term=2))
        mark(st)
        st.append(ents(8, 12, term=3, tag="conflict"))  # the last record truncates
        mark(st)
        st.sync()
    return ends, states


def copy_with(src: Path, dst: Path, data: bytes) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir()
    (dst / only_segment(src).name).write_bytes(data)


def test_truncation_at_every_offset_of_the_last_two_records(tmp_path):
    d = tmp_path / "d"
    ends, states = build_log(d)
    raw = only_segment(d).read_bytes()
    assert len(raw) == ends[-1]
    c = tmp_path / "c"
    for cut in range(ends[-3], ends[-1] + 1):
        copy_with(d, c, raw[:cut])
        k = max(i for i, e in enumerate(ends) if e <= cut)  # records wholly before the cut
        with DiskStorage.open(c) as st:
            assert state(st) == states[k], cut
            assert st.recovery_report.bytes_cut == cut - ends[k]
            assert os.path.getsize(only_segment(c)) == ends[k]


def test_bit_flips_in_the_last_record_cut_the_tail(tmp_path):
    d = tmp_path / "d"
    ends, states = build_log(d)
    raw = only_segment(d).read_bytes()
    rng = random.Random(7)
    c = tmp_path / "c"
    offsets = sorted(rng.sample(range(ends[-2], ends[-1]), 40)) + [ends[-2], ends[-2] + 4]
    for off in offsets:
        damaged = bytearray(raw)
        damaged[off] ^= 1 << rng.randrange(8)
        copy_with(d, c, bytes(damaged))
        seen: list = []

        def logger(event, _seen=seen, **kv):
            _seen.append((event, kv))

        with DiskStorage.open(c, logger=logger) as st:
            assert state(st) == states[-2], off
            report = st.recovery_report
            assert (report.offset, report.bytes_cut) == (ends[-2], ends[-1] - ends[-2])
        assert seen == [
            (
                "wal_tail_truncated",
                {"path": str(c / only_segment(d).name), "offset": ends[-2], "bytes_cut": ends[-1] - ends[-2]},
            )
        ]


def test_bit_flips_before_the_tail_raise_corrupt_log(tmp_path):
    d = tmp_path / "d"
    ends, _ = build_log(d)
    raw = only_segment(d).read_bytes()
    rng = random.Random(11)
    c = tmp_path / "c"
    for rec in (1, 3, len(ends) - 2):  # record `rec` spans ends[rec-1]..ends[rec]; valid ones follow
        start, end = ends[rec - 1], ends[rec]
        for off in sorted(set(rng.sample(range(start, end), 12) + [start, start + 4])):
            damaged = bytearray(raw)
            damaged[off] ^= 1 << rng.randrange(8)
            copy_with(d, c, bytes(damaged))
            with pytest.raises(CorruptLog) as info:
                DiskStorage.open(c)
            assert info.value.path == str(c / only_segment(d).name)
            assert info.value.offset == start, off
            assert str(start) in str(info.value)
            assert only_segment(c).read_bytes() == bytes(damaged)  # nothing was cut


def test_damaged_header_raises(tmp_path):
    d = tmp_path / "d"
    build_log(d)
    raw = bytearray(only_segment(d).read_bytes())
    raw[10] ^= 0xFF
    c = tmp_path / "c"
    copy_with(d, c, bytes(raw))
    with pytest.raises(CorruptLog) as info:
        DiskStorage.open(c)
    assert info.value.offset == 0


def test_a_preallocated_zero_tail_is_a_clean_end_not_a_cut(tmp_path):
    """Segments are preallocated: zeros after the last record are the unwritten rest of
    the segment, not damage. Nothing is cut or reported, and appends go on from there."""
    d = tmp_path / "d"
    ends, states = build_log(d)
    raw = only_segment(d).read_bytes().rstrip(b"\x00")
    c = tmp_path / "c"
    copy_with(d, c, raw + b"\x00" * 5000)
    seen = []
    with DiskStorage.open(c, preallocate=True, logger=lambda event, **kv: seen.append(event)) as st:
        assert state(st) == states[-1]
        assert st.recovery_report.bytes_cut == 0 and seen == []
        assert os.path.getsize(only_segment(c)) == 64 << 20  # preallocated again
        st.append(ents(13, 13, term=3))
        st.sync()
    with DiskStorage.open(c, preallocate=True) as st:
        assert st.last_index() == 13 and st.recovery_report.bytes_cut == 0


def test_sealed_segments_keep_no_preallocated_zeros(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d, segment_bytes=2048, preallocate=True) as st:
        for i in range(1, 400):
            st.append(ents(i, i, term=1))
        st.sync()
        paths = st.segment_paths()
    assert len(paths) > 2
    for p in paths[:-1]:
        assert not Path(p).read_bytes().endswith(b"\x00" * 16), p
    with DiskStorage.open(d, segment_bytes=2048, preallocate=True) as st:
        assert st.last_index() == 399
        assert os.path.getsize(st.segment_paths()[-1]) == 2048


def _unwritten_ranges(path: str) -> list[tuple[int, int]] | None:
    """The file's extents the file system marks unwritten (allocated, never written), as
    (start, end) byte ranges; None where FIEMAP is not supported."""
    import fcntl
    import struct

    fs_ioc_fiemap, flag_sync, unwritten, count = 0xC020660B, 0x1, 0x800, 256
    buf = bytearray(struct.pack("=QQIIII", 0, 2**64 - 1, flag_sync, 0, count, 0) + bytes(56 * count))
    with open(path, "rb") as f:
        try:
            fcntl.ioctl(f.fileno(), fs_ioc_fiemap, buf)
        except OSError:
            return None
    mapped = struct.unpack_from("=I", buf, 20)[0]
    out = []
    for i in range(mapped):
        logical, _, length = struct.unpack_from("=QQQ", buf, 32 + 56 * i)
        if struct.unpack_from("=I", buf, 32 + 56 * i + 40)[0] & unwritten:
            out.append((logical, logical + length))
    return out


def test_appends_write_zeros_ahead_so_fdatasync_commits_no_extent_change(tmp_path):
    """A preallocated segment's blocks start out "unwritten"; writing into one is a metadata
    change the next fdatasync must commit to the journal. Appends write zeros 64 KiB ahead,
    so the blocks the next appends land in are already written."""
    from cruise.wal import ZERO_AHEAD

    d = tmp_path / "d"
    with DiskStorage.open(d, segment_bytes=4 << 20, preallocate=True) as st:
        seg = st.segment_paths()[-1]
        before = _unwritten_ranges(seg)
        if not before:
            pytest.skip("the temp dir's file system reports no unwritten extents (no fallocate or FIEMAP)")
        ahead = []  # at each check, how far past the last record the written blocks reach
        for i in range(1, 2001):  # about 300 KiB of records: several zero-ahead steps
            st.append(ents(i, i, term=1))
            if i % 50 == 0:
                st.sync()
                end = st.tail_offset
                first_unwritten = min(lo for lo, hi in _unwritten_ranges(seg) if hi > end)
                assert first_unwritten >= end
                ahead.append(first_unwritten - end)
        # Without zeros ahead only the last record's own block is written: under 4 KiB.
        assert max(ahead) <= ZERO_AHEAD + 4096
        assert sum(a > 4096 for a in ahead) >= 0.75 * len(ahead), ahead
        assert _unwritten_ranges(seg), "the rest of the segment stays merely reserved"
    with DiskStorage.open(d, segment_bytes=4 << 20, preallocate=True) as st:
        assert st.last_index() == 2000  # the zeros ahead read as the segment's clean end


@pytest.mark.parametrize(
    "tail",
    [
        random.Random(3).randbytes(3000),  # garbage
        (b"\x10\x00\x00\x00" + b"\x00" * 4 + b"xx"),  # a frame header promising more than is there
        b"\x05",  # a short frame header
    ],
    ids=["garbage", "short-payload", "short-header"],
)
def test_junk_after_the_last_record_is_cut(tmp_path, tail):
    d = tmp_path / "d"
    ends, states = build_log(d)
    raw = only_segment(d).read_bytes()
    c = tmp_path / "c"
    copy_with(d, c, raw + tail)

    class Log:  # structlog-style
        def __init__(self):
            self.events = []

        def warning(self, event, **kv):
            self.events.append((event, kv))

    log = Log()
    with DiskStorage.open(c, logger=log) as st:
        assert state(st) == states[-1]
        assert st.recovery_report.bytes_cut == len(tail)
        assert log.events == [
            (
                "wal_tail_truncated",
                {"path": str(c / only_segment(d).name), "offset": ends[-1], "bytes_cut": len(tail)},
            )
        ]
        st.append(ents(13, 13, term=3))
        st.sync()
    with DiskStorage.open(c) as st:
        assert st.last_index() == 13
        assert st.recovery_report.bytes_cut == 0


def test_damage_in_a_sealed_segment_raises_even_at_its_end(tmp_path):
    d = tmp_path / "d"
    with DiskStorage.open(d, segment_bytes=1024) as st:
        for i in range(1, 101, 4):
            st.append(ents(i, i + 3))
        st.sync()
        paths = st.segment_paths()
    first = Path(paths[0])
    raw = bytearray(first.read_bytes())
    raw[-3] ^= 0x08  # the last record of a sealed segment
    first.write_bytes(bytes(raw))
    with pytest.raises(CorruptLog) as info:
        DiskStorage.open(d, segment_bytes=1024)
    assert info.value.path == str(first)


def test_crc_valid_record_with_bad_content_raises(tmp_path):
    import msgpack

    d = tmp_path / "d"
    ends, _ = build_log(d)
    payload = msgpack.packb([1, [[99, 1, "record", "x", None]]])  # a gap: 99 after 12
    frame = len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little") + payload
    seg = only_segment(d)
    seg.write_bytes(seg.read_bytes() + frame)
    with pytest.raises(CorruptLog) as info:
        DiskStorage.open(d)
    assert info.value.offset == ends[-1]


def test_append_with_packed_rows_writes_the_same_record(tmp_path):
    """A member hands the WAL the rows it already packed for the network: the segment
    must be byte for byte what packing them here would give, and read back the same."""
    from cruise.wire import pack_entries

    batches = [ents(1, 5, term=1), ents(6, 9, term=2), ents(4, 12, term=3)]  # the last replaces from 4
    for name, packed in (("plain", False), ("packed", True)):
        with DiskStorage.open(tmp_path / name) as st:
            for b in batches:
                st.append(b, pack_entries(b) if packed else None)
            st.sync()
    assert only_segment(tmp_path / "plain").read_bytes() == only_segment(tmp_path / "packed").read_bytes()
    with DiskStorage.open(tmp_path / "packed") as st:
        assert st.entries(1, 13) == ents(1, 3, term=1) + ents(4, 12, term=3)


def test_a_replaced_snapshot_is_handed_to_discard_and_recovery_removes_leftovers(tmp_path):
    """Unlinking a large snapshot file is slow, so the member's loop hands it to a thread
    (``DiskStorage.discard``); if the process dies first, recovery deletes it."""
    from cruise.wal import write_snapshot_file

    s = DiskStorage.open(tmp_path, fsync=False)
    discarded: list[str] = []
    s.discard = discarded.append
    s.append([Entry(i, 1, "record", i, None) for i in range(1, 21)])
    first = write_snapshot_file(str(tmp_path), 10, 1, [b"state-10"], None, fsync=False)
    s.adopt_snapshot(first)
    second = write_snapshot_file(str(tmp_path), 20, 1, [b"state-20"], None, fsync=False)
    s.adopt_snapshot(second)
    assert discarded == [first] and os.path.exists(first)  # not deleted on the loop
    s.close()
    s = DiskStorage.open(tmp_path, fsync=False)  # a crash before the thread got to it
    assert not os.path.exists(first) and s.snapshot().index == 20
    s.close()
