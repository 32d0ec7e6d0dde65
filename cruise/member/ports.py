"""The seams between the sans-I/O member and the world: what it calls, never how.

The member decides everything a client or a peer sees; it does so by calling these
protocols. ``cruise.node`` implements them with ZeroMQ sockets, the WAL and an fsync
thread; ``cruise.simulation`` implements them with lists, a ``MemoryStorage`` that a
crash rolls back to its last sync, and a network that lies. Both drive the same
:class:`~cruise.member.member.Member`, so the ordering the simulator checks is the
ordering production runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..core import Message, Storage
from ..core.types import Entry, HardState, SnapshotMeta
from ..fsm import Applied
from ..wire import EntryBlobCache


class Clock(Protocol):
    def now(self) -> float:
        """Seconds, monotonic; only request deadlines are measured with it."""
        ...


class ReplyTo(Protocol):
    """Where the answer to one request goes (a client's envelope, a Future, a simulated
    client). Exactly one of ``ok``/``reply`` is called, at most once, by the member."""

    deadline: float

    def ok(self, index: int, term: int, result: Any) -> None:
        """A record was applied at ``index`` (``term``) with ``result``: the hot path."""
        ...

    def reply(self, reply: dict[str, Any]) -> None:
        """Any other answer: a contract reply map (``{"ok": ...}``)."""
        ...


class SyncJob(Protocol):
    def run(self) -> None: ...

    def discard(self) -> None: ...


class Disk(Storage, Protocol):
    """The member's log storage (``cruise.wal.DiskStorage`` in production; the core reads it too)."""

    def append(
        self, entries: Sequence[Entry], packed_rows: bytes | None = None, hard_state: HardState | None = None
    ) -> None: ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def sync(self) -> None:
        """Make every write so far durable, now (inline fsync)."""
        ...

    def begin_sync(self) -> SyncJob | None:
        """A job that makes every write so far durable, to run elsewhere (background fsync)."""
        ...

    # -- snapshots: the newest one saved, and compaction behind it --------------------------
    def snapshot(self) -> SnapshotMeta: ...

    def snapshot_size(self) -> int: ...

    def snapshot_crc(self) -> int: ...

    def read_snapshot(self, offset: int, n: int) -> bytes: ...

    def load_snapshot(self) -> tuple[int, int, bytes, dict | None] | None:
        """The saved snapshot, checked against its checksum (raises ``CorruptLog`` if not)."""
        ...

    def save_snapshot(self, index: int, term: int, data: bytes | bytearray, meta: dict | None = None) -> None:
        """Save a snapshot durably, now (a follower installing the leader's)."""
        ...

    def adopt_snapshot(self, handle: Any) -> None:
        """Make the snapshot a ``SnapshotWriter`` wrote (``handle``) the saved one."""
        ...

    def compact(self, index: int) -> None:
        """Discard entries up to ``index``, durably."""
        ...


class IdentityStore(Protocol):
    """The data directory's identity (``cruise.identity``): its incarnation, made with the
    directory, and the cluster id once the member learned it."""

    incarnation: int
    cluster: int

    def save_cluster(self, cluster: int) -> None:
        """Record the cluster id durably (once; it never changes). Raises ``OSError`` when
        the disk refuses the write, leaving what was stored as it was."""
        ...


class Transport(Protocol):
    """Peer messages, forwarded requests and the committed-entry stream."""

    def send(self, msgs: list[Message], blobs: EntryBlobCache) -> None:
        """Send peer messages, each with ``Member.stamp(msg.to)``; a message that cannot go
        now is dropped (Raft retries)."""
        ...

    def forward(self, to: str, rid: int, frame: bytes) -> bool:
        """Send an encoded client request to member ``to``; its answer comes back through
        ``Member.on_forward_reply(rid, reply)``. False when it cannot go now."""
        ...

    def publishing(self) -> bool:
        """Whether anyone subscribes to the committed-entry stream."""
        ...

    def set_members(self, peers: list[dict[str, Any]]) -> None:
        """The other members now (``id``, ``raft``, ``client``, ``publish``, ``voter``): connect
        to new ones, drop removed ones."""
        ...

    def publish(self, entry: Applied) -> None:
        """Publish one applied entry; never blocks (a slow subscriber refills gaps)."""
        ...


class Syncer(Protocol):
    """Background fsync: runs ``job`` off the member's loop and reports
    ``Member.on_synced(seq, error)`` back on it, in order."""

    def submit(self, seq: int, job: SyncJob) -> None: ...


class SnapshotWriter(Protocol):
    """Writes a snapshot durably off the member's loop and reports
    ``Member.on_snapshot_written(index, handle, error)`` back on it. ``pieces`` yields the
    snapshot's bytes from a frozen copy of the state; it runs on the writer's side."""

    def write(
        self, index: int, term: int, pieces: Callable[[], Iterable[bytes]], meta: dict | None = None
    ) -> None: ...
