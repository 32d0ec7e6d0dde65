"""The identity file of a data directory (cruise.identity)."""

from __future__ import annotations

import errno
import os

import pytest

from cruise.core.errors import CorruptLog
from cruise.identity import FILE, IdentityFile


def test_an_empty_directory_gets_an_incarnation_that_a_reopen_reads_back(tmp_path):
    made = IdentityFile.open(tmp_path, holds_state=False)
    made.save_cluster(0xBEEF)
    again = IdentityFile.open(tmp_path, holds_state=True)
    assert (again.incarnation, again.cluster) == (made.incarnation, 0xBEEF)


def test_a_write_the_disk_refuses_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    ident = IdentityFile.open(tmp_path, holds_state=False)
    before = (tmp_path / FILE).read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        ident.save_cluster(7)
    assert ident.cluster == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE]  # no half-written file left
    assert (tmp_path / FILE).read_bytes() == before
    monkeypatch.undo()
    ident.save_cluster(7)
    assert IdentityFile.open(tmp_path, holds_state=True).cluster == 7


def test_a_damaged_file_beside_state_stops_the_member(tmp_path):
    IdentityFile.open(tmp_path, holds_state=False)
    (tmp_path / FILE).write_text("{not json")
    with pytest.raises(CorruptLog, match="damaged"):
        IdentityFile.open(tmp_path, holds_state=True)
