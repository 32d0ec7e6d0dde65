"""A small file system per member's data directory, which a fault fills up and frees.

Each member's data directory (``ROOT/ID/data``) is on a size-limited tmpfs of its own
(``ROOT/ID``, mounted before the member starts, so the namespace it runs in sees it too). Filling one writes a file into it until the
kernel answers ``ENOSPC``; freeing it deletes that file. The member sees exactly what a full
disk shows: every write that needs a new block is refused, writes into space it reserved
already (a preallocated WAL segment) still go through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["Disks", "DiskUnavailable"]

SIZE_BYTES = 32 << 20
_CHUNK = b"\0" * (64 << 10)


class DiskUnavailable(Exception):
    """This machine cannot mount a tmpfs per member (not root, no ``mount``)."""


class Disks:
    def __init__(self, root: Path, ids: list[str], size: int = SIZE_BYTES) -> None:
        if os.geteuid() != 0:
            raise DiskUnavailable("a tmpfs per data directory needs root")
        if shutil.which("mount") is None:
            raise DiskUnavailable("no `mount` command")
        self.dirs = {id: root / id for id in ids}
        self.mounted: list[Path] = []
        try:
            for d in self.dirs.values():
                d.mkdir(parents=True, exist_ok=True)
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)],
                    check=True,
                    capture_output=True,
                    timeout=10,
                )
                self.mounted.append(d)
        except (OSError, subprocess.SubprocessError) as e:
            self.close()
            raise DiskUnavailable(f"cannot mount a tmpfs: {e}") from None

    def _filler(self, id: str) -> Path:
        return self.dirs[id] / "filler"

    def data_dir(self, id: str) -> Path:
        return self.dirs[id] / "data"

    def fill(self, id: str) -> int:
        """Fill member ``id``'s file system to the last byte; the bytes it took."""
        written = 0
        with open(self._filler(id), "ab", buffering=0) as f:
            for chunk in (_CHUNK, b"\0" * 4096, b"\0"):
                while True:
                    try:
                        written += f.write(chunk) or 0
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        return written

    def free(self, id: str) -> None:
        """Give member ``id``'s space back."""
        with contextlib.suppress(FileNotFoundError):
            self._filler(id).unlink()

    def wipe(self, id: str) -> None:
        """Delete member ``id``'s data directory: it starts empty next time."""
        shutil.rmtree(self.data_dir(id), ignore_errors=True)

    def close(self, keep_in: Path | None = None) -> None:
        """Unmount every tmpfs (lazily: a process still holding a file lets go later); with
        ``keep_in``, copy each data directory there first (a failed run's evidence)."""
        for d in reversed(self.mounted):
            if keep_in is not None and (d / "data").is_dir():
                with contextlib.suppress(OSError):
                    shutil.copytree(d / "data", keep_in / d.name, dirs_exist_ok=True)
            subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=10)
        self.mounted.clear()
