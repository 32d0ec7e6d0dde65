"""cruise.core: Raft without I/O.

Feed a :class:`RawNode` ticks, peer messages and proposals; take a :class:`Ready`
of what to persist, send and apply; call ``advance``. Imports the standard
library only (a layering test enforces it), so a deterministic simulator can run
thousands of clusters in one process.
"""

from .config import CoreConfig
from .errors import (
    Compacted,
    CorruptLog,
    NotLeader,
    ProposalDropped,
    RaftError,
    TransferInProgress,
    Unavailable,
)
from .messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    TimeoutNow,
    VoteResponse,
    describe,
)
from .rawnode import RawNode, Ready
from .storage import MemoryStorage, Storage, WritableStorage
from .types import (
    CONFIG,
    NOOP,
    RECORD,
    Entry,
    HardState,
    NodeId,
    ReadState,
    Role,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "CoreConfig",
    "RawNode",
    "Ready",
    "Storage",
    "WritableStorage",
    "MemoryStorage",
    "Entry",
    "HardState",
    "SoftState",
    "ReadState",
    "SnapshotMeta",
    "InstallSnapshot",
    "Role",
    "NodeId",
    "RECORD",
    "NOOP",
    "CONFIG",
    "Message",
    "MESSAGE_TYPES",
    "RequestVote",
    "VoteResponse",
    "AppendEntries",
    "AppendResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "ReadIndex",
    "ReadIndexResponse",
    "TimeoutNow",
    "describe",
    "RaftError",
    "ProposalDropped",
    "NotLeader",
    "TransferInProgress",
    "Compacted",
    "Unavailable",
    "CorruptLog",
]
