"""What a member says about itself: ``status``, ``health`` and ``entries``, read-only views of
its parts (they feed the core nothing, so a member standing still on a full disk answers them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import api
from ..core import RawNode
from ..errors import COMPACTED, UNAVAILABLE
from .applier import Applier
from .diskfull import Standstill
from .identity import IdentityGuard
from .membership import Membership
from .snapshots import Snapshots

ENTRIES_REPLY_BYTES = 4 << 20  # bound on one `entries` reply


@dataclass(slots=True, eq=False)
class Reports:
    id: str
    raw: RawNode
    applier: Applier
    snapshots: Snapshots
    membership: Membership
    identity: IdentityGuard
    standstill: Standstill

    def status(self) -> dict[str, Any]:
        st = self.raw.status()
        identity = self.identity
        return {
            "ok": True,
            "id": st["id"],
            "role": st["role"],
            "term": st["term"],
            "leader": st["leader"],
            "commit_index": st["commit_index"],
            "applied_index": st["applied_index"],
            "last_index": st["last_index"],
            "snapshot_index": self.snapshots.last,
            **({"progress": st["progress"]} if "progress" in st else {}),
            "first_index": self.raw.raft.log.first_index(),
            "members": [
                {**m, "role": "voter" if m["voter"] else "learner", **identity.peer_status(m["id"])}
                for m in self.membership.members()
            ],
            "cluster_id": f"{identity.cluster:x}" if identity.cluster else None,
            "incarnation": f"{identity.incarnation:x}",
            "needs_readd": identity.needs_readd,
            "disk_full": self.standstill.error,
        }

    def health(self) -> dict[str, Any]:
        """Healthy: this member knows a leader that a quorum has heard within the election
        timeout. A leader with check-quorum steps down when a quorum has not answered it
        within the election timeout, so a leader is healthy while it leads; a follower is
        healthy while it has heard its leader within the election timeout."""
        raft = self.raw.raft
        if self.identity.needs_readd:
            return api.error(
                UNAVAILABLE,
                f"{self.id} lost its data: remove it and add it again (cruise member remove {self.id})",
            )
        halted = self.standstill.halted()
        if halted is not None:
            return api.error(UNAVAILABLE, halted)
        heard = raft.role == "leader" or raft.election_elapsed < raft.config.election_ticks[0]
        if raft.lead is None or not heard:
            return api.error(UNAVAILABLE, "no leader heard from within the election timeout")
        return {"ok": True, "leader": raft.lead, "term": raft.term}

    def entries(self, req: api.Entries) -> dict[str, Any]:
        log = self.raw.raft.log
        first = log.first_index()
        start = max(req.start, 1)
        if start < first:
            return api.error(COMPACTED, f"entries before {first} are compacted", snapshot_index=first - 1)
        hi = min(log.applied, start + req.limit - 1)
        out = []
        if start <= hi:
            shown = self.applier.shown
            out = [shown(e).to_wire() for e in log.slice(start, hi + 1, ENTRIES_REPLY_BYTES)]
        return {"ok": True, "entries": out}
