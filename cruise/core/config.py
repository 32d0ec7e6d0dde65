"""Configuration of one core: identity, voters, timing in ticks, limits, randomness.

The core reads no clock: the runtime calls ``tick()`` every ``tick_ms`` and the
timing here is counted in those ticks. Randomness (the election timeout,
§5.2) comes from an injected ``random.Random`` so one seed reproduces a run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .types import NodeId


@dataclass
class CoreConfig:
    id: NodeId
    # The initial configuration, for a log that states none (a new cluster's members all
    # start from it). A member that joins a running cluster starts with none at all.
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    # Election timeout in ticks, drawn uniformly from [lo, hi] each time it is reset (§5.2).
    # ``lo`` is also the check-quorum period and the leader-lease length.
    election_ticks: tuple[int, int] = (10, 20)
    heartbeat_ticks: int = 1
    pre_vote: bool = True  # dissertation §9.6
    check_quorum: bool = True  # dissertation §6.2: a leader cut off from a quorum steps down
    max_msg_bytes: int = 1 << 20  # bound on the entries of one AppendEntries (at least one entry goes)
    max_inflight: int = 256  # unacknowledged AppendEntries per follower in REPLICATE state
    max_apply_entries: int = 4096  # committed entries handed out per Ready
    rng: random.Random = field(default_factory=random.Random)

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field."""
        lo, hi = self.election_ticks
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks must be >= 1")
        if not (0 < lo <= hi):
            raise ValueError(f"election_ticks must satisfy 0 < lo <= hi, got {self.election_ticks}")
        if lo <= self.heartbeat_ticks:
            raise ValueError("election_ticks lower bound must exceed heartbeat_ticks")
        ids = list(self.voters) + list(self.learners)
        if self.voters and self.id not in ids:
            raise ValueError(f"id {self.id!r} is not among the members {tuple(ids)}")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate member ids")
        if self.max_inflight < 1 or self.max_msg_bytes < 1 or self.max_apply_entries < 1:
            raise ValueError("limits must be positive")
