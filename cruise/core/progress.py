"""What the leader knows about each follower's log (etcd-raft ``tracker/progress.go``).

Theory of operation
-------------------
A follower's :class:`Progress` is in one of two states:

- PROBE: the leader does not know where the follower's log matches its own. It
  sends one AppendEntries at a time and waits for the answer (or the next
  heartbeat) before sending another; each rejection moves ``next`` back by a
  whole conflicting term, using the follower's hint (§5.3).
- REPLICATE: the follower matched recently; the leader streams AppendEntries
  optimistically (``next`` jumps past what it sent), keeping at most
  ``max_inflight`` unacknowledged messages. That bound is the flow control that
  keeps a slow follower from growing the leader's memory.

- SNAPSHOT: the entries the follower lacks are compacted; the leader sent it a
  snapshot (``pending_snapshot`` is its index) and sends nothing else until the
  follower acknowledges an index at or past the leader's first index, or the runtime
  reports the transfer failed (then PROBE again, which sends a snapshot anew).
"""

from __future__ import annotations

from collections import deque

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflight",
        "max_inflight",
        "recent_active",
        "sent_commit",
        "pending_snapshot",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        # Highest index known to be replicated on the follower. Invariant: match < next.
        self.match = 0
        # Index of the next entry to send.
        self.next = next_index
        self.state = PROBE
        # PROBE only: an AppendEntries is outstanding; wait for its answer or a heartbeat.
        self.probe_sent = False
        # REPLICATE only: last index of each unacknowledged AppendEntries, oldest first.
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        # Heard from since the last check-quorum round (§6.2 leader step-down).
        self.recent_active = False
        # Commit index last told to the follower; a higher commit is worth an empty append.
        self.sent_commit = 0
        # SNAPSHOT only: the index of the snapshot being sent.
        self.pending_snapshot = 0

    def become_probe(self) -> None:
        self.state = PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.next = self.match + 1
        self.pending_snapshot = 0

    def become_snapshot(self, index: int) -> None:
        self.state = SNAPSHOT
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = index

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.probe_sent = False
        self.inflight.clear()
        self.next = self.match + 1
        self.pending_snapshot = 0

    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == SNAPSHOT:
            return True
        return len(self.inflight) >= self.max_inflight

    def sent(self, last_index: int, n_entries: int) -> None:
        """Record that an append ending at ``last_index`` (``n_entries`` long) went out."""
        if self.state == REPLICATE:
            if n_entries:
                self.next = last_index + 1
                self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged up to ``index``. Returns whether ``match`` grew.

        An index at or below ``match`` (an old acknowledgement, or the 0 of an answer to a
        stale-term append) changes neither ``match`` nor ``next`` nor ``probe_sent``."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if index + 1 > self.next:
            self.next = index + 1
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decr_to(self, rejected: int, probe_hint: int) -> bool:
        """The follower rejected an append whose ``prev_index`` was ``rejected``.

        ``probe_hint`` is the highest index where the logs may match (from the
        follower's conflict hint). Returns False for a stale rejection (one
        answering an append sent before ``next`` last moved).
        """
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
        elif self.state == SNAPSHOT:
            return False  # an answer to an append sent before the snapshot
        elif self.next - 1 != rejected:
            return False
        self.next = max(self.match + 1, min(rejected, probe_hint + 1))
        # Whatever was streaming is lost or out of order: find the match point again.
        self.state = PROBE
        self.inflight.clear()
        self.probe_sent = False
        return True

    def __repr__(self) -> str:
        return f"Progress({self.state} match={self.match} next={self.next} inflight={len(self.inflight)})"
