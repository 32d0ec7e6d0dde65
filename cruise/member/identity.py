"""Member identity: which cluster a peer message belongs to, and whether its sender is the
member the configuration admitted.

Theory of operation
-------------------
A member that lost its data directory and comes back under its old id has forgotten its
vote and its log. Counting its vote could elect two leaders in one term; counting its
acknowledgement could "commit" an entry that only it held. So:

- Every data directory has an *incarnation*, a random number made when the directory is
  created (``cruise.identity``), and every cluster a *cluster id*, made by its first leader
  and stored in the first configuration entry. Every peer message carries a
  :class:`Stamp`: the sender's cluster id (0 until a committed configuration gave it one),
  its incarnation, and the incarnation the sender's configuration binds the receiver to.
- The configuration *binds* each voter to an incarnation (an ``incarnation`` field of its
  member map). The first leader binds every voter it has heard from, and sets the cluster
  id, in one configuration entry; a voter first heard from later is bound by the leader as
  soon as no other change is in flight; a learner is bound when it is promoted.
- What counts toward a quorum is a *response*: a vote, or an acknowledgement of entries,
  heartbeats or snapshot chunks. A response from a voter bound to another incarnation is
  dropped, and the voter is shown as needing to be added again. Requests (appends,
  heartbeats, vote requests, snapshots) are never dropped for identity: a member whose
  configuration is behind must still follow a leader that was re-admitted since.
- A member not bound yet that speaks as a new incarnation lost its data before the cluster
  recorded who it is: the leader forgets what it knew of its log and replicates to it from
  the start, and what it acknowledges from then on is what it holds.
- Removing a bound member *retires* its incarnation (the configuration keeps a list): a
  member re-added under that id is promoted only once it speaks as another one. So a late
  message from the data directory it lost cannot get it bound to that directory, and a
  removed member comes back only from an empty data directory, as etcd requires.
- A member that learns its own binding names another incarnation (from its log, or from
  how others address it) says so once, shows ``needs_readd``, and neither votes nor
  campaigns until it is removed and added again.
- A message whose cluster id differs from ours (both known) is from another cluster: it is
  dropped and logged once per sender.

The cluster id is taken from the *committed* configuration only: a committed entry is in
every later leader's log, so the id never changes once a member has it, and a member holding
an uncommitted id from a deposed leader still hears the next one.

What it cannot see: a voter wiped before the entry that binds it has reached the candidate
that asks for its vote. The member does not know it lost anything, and that candidate cannot
tell it from a voter that never spoke; if its vote was the one that joined a majority holding
a committed entry, that entry can be lost. Leaders bind a voter as soon as they hear from it,
so the window is the first heartbeats of a new cluster, or of a voter that starts late, plus
the time the binding takes to reach every member.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..core import RawNode
from ..core.messages import AppendResponse, HeartbeatResponse, RequestVote, SnapshotAck, VoteResponse
from ..wire import UNSTAMPED, Stamp
from .diskfull import is_disk_full
from .ports import IdentityStore

__all__ = ["IdentityGuard", "MemoryIdentity", "Stamp", "UNSTAMPED", "new_id"]

# Messages that count toward a quorum (votes, acknowledgements): what a member that lost its
# data must not get counted.
RESPONSES = frozenset({VoteResponse, AppendResponse, HeartbeatResponse, SnapshotAck})
RETIRED_KEPT = 64  # removed incarnations a configuration remembers
# How long (in ticks) "a peer addressed us as another incarnation" stays news.
TOLD_TICKS = 200
# How often (in ticks) storing the cluster id is tried again while the disk is full.
SAVE_RETRY_TICKS = 10


def new_id(rng: random.Random) -> int:
    """A random nonzero 63-bit id (msgpack packs it as a plain integer)."""
    return rng.getrandbits(63) or 1


class MemoryIdentity:
    """An ``IdentityStore`` that lives as long as the object (the simulator's disks, tests)."""

    def __init__(self, incarnation: int, cluster: int = 0) -> None:
        self.incarnation = incarnation
        self.cluster = cluster

    def save_cluster(self, cluster: int) -> None:
        self.cluster = cluster


class IdentityGuard:
    def __init__(
        self,
        me: str,
        raw: RawNode,
        store: IdentityStore,
        rng: random.Random,
        log: Callable[..., None],
    ) -> None:
        self.me = me
        self.raw = raw
        self.store = store
        self.rng = rng
        self.log = log
        self.incarnation = store.incarnation
        self.cluster = store.cluster
        self.seen: dict[str, int] = {}  # peer -> the incarnation it last spoke as
        self.stale: dict[str, int] = {}  # peer -> the other incarnation it came back with
        self._told: dict[str, int] = {}  # peer -> tick it last addressed us as another incarnation
        self._warned: set[tuple[str, int]] = set()
        self._ticks = 0
        self._led = 0  # ticks this member has led for
        self._said_readd = False
        self._version = -1
        self._bound: dict[str, int] = {}
        self._stamps: dict[str, Stamp] = {}
        self._retired: set[tuple[str, int]] = set()
        self._save_at: int | None = None  # the tick to retry storing the cluster id at
        # Called with a learner's (or an unbound member's) id when it speaks as a new
        # incarnation: what the leader knew of its log is void.
        self.on_new_incarnation: Callable[[str], None] = lambda id: None
        self._learn_cluster()

    # -- the configuration in force --------------------------------------------------------------
    def _refresh(self) -> None:
        log = self.raw.raft.log
        if log.conf_version == self._version:
            return
        self._version = log.conf_version
        self._stamps.clear()
        value = log.conf()
        members = value.get("members", []) if isinstance(value, dict) else []
        self._bound = {m["id"]: int(m.get("incarnation") or 0) for m in members}
        retired = value.get("retired", []) if isinstance(value, dict) else []
        self._retired = {(r[0], r[1]) for r in retired}
        self._check_self()

    def bound(self, id: str) -> int:
        self._refresh()
        return self._bound.get(id, 0)

    def stamp(self, to: str) -> Stamp:
        """What goes with every message to ``to``: one record per peer, made again only when
        the configuration or the cluster id changes (this runs for every message sent)."""
        self._refresh()
        st = self._stamps.get(to)
        if st is None:
            st = self._stamps[to] = Stamp(self.cluster, self.incarnation, self._bound.get(to, 0))
        return st

    # -- admission -------------------------------------------------------------------------------
    def admit(self, frm: str, msg_type: type, stamp: Stamp) -> bool:
        """Whether a message from ``frm`` may reach the core (see the module docstring)."""
        if stamp.cluster and self.cluster and stamp.cluster != self.cluster:
            self._warn_once(frm, stamp.cluster)
            return False
        if stamp.to_incarnation and stamp.to_incarnation != self.incarnation:
            self._told[frm] = self._ticks
            self._check_self()
        elif frm in self._told:
            del self._told[frm]
        if msg_type is RequestVote:
            # Our vote is lost with our data: give none while that may be so.
            return not self.needs_readd
        b = self.bound(frm)
        if b and stamp.incarnation != b:
            if self.stale.get(frm) != stamp.incarnation:
                self.stale[frm] = stamp.incarnation
                self.log(
                    "peer_needs_readd",
                    peer=frm,
                    incarnation=f"{stamp.incarnation:x}",
                    admitted=f"{b:x}",
                    action=f"its votes and acknowledgements are ignored until it is removed and "
                    f"added again (cruise member remove {frm}; cruise member add {frm} ...)",
                )
            return msg_type not in RESPONSES
        self.stale.pop(frm, None)
        prev = self.seen.get(frm)
        self.seen[frm] = stamp.incarnation
        if prev is not None and prev != stamp.incarnation and not b:
            self.on_new_incarnation(frm)
        return True

    def _warn_once(self, frm: str, cluster: int) -> None:
        if (frm, cluster) in self._warned:
            return
        self._warned.add((frm, cluster))
        self.log(
            "peer_other_cluster",
            peer=frm,
            cluster=f"{cluster:x}",
            ours=f"{self.cluster:x}",
            action="dropping its messages: check the members' addresses in both clusters' configs",
        )

    # -- this member -----------------------------------------------------------------------------
    @property
    def needs_readd(self) -> bool:
        self._refresh()
        mine = self._bound.get(self.me, 0)
        if mine and mine != self.incarnation:
            return True
        return any(self._ticks - t <= TOLD_TICKS for t in self._told.values())

    def _check_self(self) -> None:
        if self._said_readd or not self.needs_readd:
            return
        self._said_readd = True
        self.log(
            "needs_readd",
            incarnation=f"{self.incarnation:x}",
            action=f"this member's data directory is new but the cluster admitted {self.me} with "
            f"another one: it lost its data, and takes no part in votes until an operator runs "
            f"`cruise member remove {self.me}` and then `cruise member add {self.me} ...`",
        )

    def _learn_cluster(self) -> None:
        """Adopt the cluster id once a committed configuration states one, and keep it."""
        if self.cluster:
            if self._save_at is not None and self._ticks >= self._save_at:
                self._save_cluster()
            return
        log = self.raw.raft.log
        value = log.conf_at(log.committed)
        cluster = value.get("cluster") if isinstance(value, dict) else None
        if isinstance(cluster, int) and cluster:
            self.cluster = cluster
            self._stamps.clear()
            self.log("cluster_id", cluster=f"{cluster:x}")
            self._save_cluster()

    def _save_cluster(self) -> None:
        """Store the cluster id. A full disk refuses the write without stopping the member:
        the id is in force from memory and stored at a later tick (a restart before then
        learns it again from the committed configuration in its log)."""
        try:
            self.store.save_cluster(self.cluster)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            if self._save_at is None:
                self.log("cluster_id_unsaved", error=str(exc), action="retrying while the disk is full")
            self._save_at = self._ticks + SAVE_RETRY_TICKS
            return
        if self._save_at is not None:
            self._save_at = None
            self.log("cluster_id_saved", cluster=f"{self.cluster:x}")

    def tick(self) -> None:
        self._ticks += 1
        self._led = self._led + 1 if self.raw.raft.role == "leader" else 0
        self._learn_cluster()
        if self._said_readd and not self.needs_readd:
            self._said_readd = False
            self.log("readmitted", incarnation=f"{self.incarnation:x}")

    # -- binding (on the leader) -----------------------------------------------------------------
    def binding(self, members: list[dict[str, Any]], cluster: int | None) -> dict[str, Any] | None:
        """The configuration ``members`` with the voters heard from but not yet bound bound
        (and the cluster id stated when none is yet), or None when there is nothing to bind."""
        unheard = [
            m["id"]
            for m in members
            if m.get("voter", True)
            and not m.get("incarnation")
            and m["id"] != self.me
            and m["id"] not in self.seen
        ]
        if unheard and self._led < self.raw.raft.config.election_ticks[1]:
            return None  # one entry for all, unless some voter stays silent for long
        out = []
        changed = not cluster
        for m in members:
            if m.get("voter", True) and not m.get("incarnation"):
                id = m["id"]
                inc = self.incarnation if id == self.me else self.seen.get(id)
                if inc:
                    m = {**m, "incarnation": inc}
                    changed = True
            out.append(m)
        if not changed:
            return None
        return {"cluster": cluster or new_id(self.rng), "members": out}

    def incarnation_of(self, id: str) -> int:
        """The incarnation to bind ``id`` to when promoting it (0: not heard from, or only as
        an incarnation that was removed)."""
        if id == self.me:
            return self.incarnation
        inc = self.seen.get(id, 0)
        return 0 if self.speaks_retired(id) else inc

    def speaks_retired(self, id: str) -> bool:
        """Whether ``id`` last spoke as an incarnation the configuration removed."""
        self._refresh()
        return (id, self.seen.get(id, 0)) in self._retired

    def retire(self, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[list[Any]]:
        """The configuration's retired incarnations once ``old`` becomes ``new``: a bound
        member removed retires its incarnation, so that no late message of it (or of the data
        directory it had) can get a re-added member of that id bound to it. The newest
        ``RETIRED_KEPT`` are kept."""
        self._refresh()
        retired = [[id, inc] for id, inc in sorted(self._retired)]
        kept = {m["id"] for m in new}
        for m in old:
            inc = int(m.get("incarnation") or 0)
            if m["id"] not in kept and inc and [m["id"], inc] not in retired:
                retired.append([m["id"], inc])
        return retired[-RETIRED_KEPT:]

    def peer_status(self, id: str) -> dict[str, Any]:
        return {"needs_readd": True} if id in self.stale else {}
