"""The identity file of a member's data directory: its incarnation and its cluster id.

``IDENTITY`` holds one JSON object, ``{"incarnation": "<hex>", "cluster": "<hex>" | null}``.
The incarnation is made when the directory holds nothing yet (no hard state, no entry, no
snapshot): a member whose directory was emptied or lost comes back as a new incarnation, and
the cluster can tell it from the member it admitted (``cruise.member.identity``). The cluster
id is written once the member has learned it from a committed configuration.

The file is replaced atomically (written beside, synced, renamed, directory synced). A
damaged file beside a log that holds state stops the member: choosing a new incarnation
would only make the member look wiped, and keeping none would defeat the check.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from .core.errors import CorruptLog

FILE = "IDENTITY"


class IdentityFile:
    """An ``IdentityStore`` (``cruise.member.ports``) kept in ``data_dir/IDENTITY``."""

    def __init__(self, path: Path, incarnation: int, cluster: int, fsync: bool) -> None:
        self.path = path
        self.incarnation = incarnation
        self.cluster = cluster
        self._fsync = fsync

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, holds_state: bool, fsync: bool = True) -> IdentityFile:
        """The directory's identity; a new incarnation when the directory holds no state.

        Raises:
            CorruptLog: the file is damaged (or missing) while the log holds state.
        """
        path = Path(data_dir) / FILE
        if not holds_state:
            ident = cls(path, secrets.randbits(63) or 1, 0, fsync)
            ident._write()
            return ident
        try:
            raw = json.loads(path.read_text())
            incarnation = int(raw["incarnation"], 16)
            cluster = int(raw["cluster"], 16) if raw.get("cluster") else 0
        except FileNotFoundError:
            # A directory written before identities existed: it has state but no identity.
            # A new incarnation is what it is to a cluster that never bound one.
            ident = cls(path, secrets.randbits(63) or 1, 0, fsync)
            ident._write()
            return ident
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptLog(
                f"{path} is damaged ({type(e).__name__}: {e}); this member's identity is unknown: "
                "empty the data directory and add the member to the cluster again"
            ) from None
        if incarnation <= 0:
            raise CorruptLog(
                f"{path} is damaged (incarnation {incarnation}); empty the data directory and re-add"
            )
        return cls(path, incarnation, cluster, fsync)

    def save_cluster(self, cluster: int) -> None:
        """Store ``cluster``; on an ``OSError`` (a full disk) the file is as it was."""
        self._write(cluster)
        self.cluster = cluster

    def _write(self, cluster: int | None = None) -> None:
        cluster = self.cluster if cluster is None else cluster
        body = {
            "incarnation": f"{self.incarnation:x}",
            "cluster": f"{cluster:x}" if cluster else None,
        }
        tmp = self.path.with_name(FILE + ".tmp")
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(body) + "\n")
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk keeps no half file
            raise
        os.replace(tmp, self.path)
        if self._fsync:
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
