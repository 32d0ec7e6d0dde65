"""Membership as a member runs it: the configuration in force, and the requests that change it.

Theory of operation
-------------------
The core decides when a configuration takes effect (when its entry is appended) and
keeps one change in flight (``cruise.core.confchange``). This module is the member's
side:

- :meth:`Membership.members` is the membership as ``status`` shows it: the last
  ``config`` entry's member list (with addresses), or the initial members of the YAML
  for a cluster whose log states none. Once a configuration is in the log, the log wins
  over the YAML: every member holds the same log, while YAML files may be out of date.
- ``add_member`` adds a learner. Asked for a voter (the default), the leader promotes it
  by itself once it has caught up (streaming, and within ``CATCH_UP_LAG`` entries of the
  commit index); the request is
  answered when that promotion commits. ``promote_member`` promotes a learner that has
  caught up now, else answers ``unavailable`` saying how far behind it is.
  ``remove_member`` removes a learner or a voter; a leader that removes itself hands
  over to the most caught-up voter once the change commits.
- A change is answered ``ok`` with its index once its entry is committed and applied,
  through the same ``Proposals`` table records use.

Promotions the leader owes are kept on the leader only: a new leader does not know
them, and the learner stays one until an operator runs ``promote_member``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import api
from ..core import NotLeader, ProposalDropped, RawNode, TransferInProgress
from ..core.confchange import ConfState, conf_of, single_change
from ..core.progress import REPLICATE
from ..errors import BAD_REQUEST, UNAVAILABLE
from .identity import IdentityGuard
from .ports import ReplyTo
from .requests import LEADERSHIP_CHANGED, Proposals

# Entries a learner may lag behind the commit index and still count as caught up.
CATCH_UP_LAG = 1024

ConfigRequest = api.AddMember | api.RemoveMember | api.PromoteMember


class Membership:
    def __init__(
        self,
        me: str,
        raw: RawNode,
        initial: tuple[dict[str, Any], ...],
        proposals: Proposals,
        identity: IdentityGuard,
        log: Callable[..., None],
    ) -> None:
        self.me = me
        self.raw = raw
        self.identity = identity
        self.initial = tuple({**m, "voter": bool(m.get("voter", True))} for m in initial)
        self.proposals = proposals
        self.log = log
        # Learners the leader is to promote once caught up, with who waits for it (or None).
        self.to_promote: dict[str, ReplyTo | None] = {}

    # -- the configuration in force --------------------------------------------------------------
    def members(self) -> list[dict[str, Any]]:
        value = self.raw.raft.log.conf()
        if value is None:
            return [dict(m) for m in self.initial]
        return [dict(m) for m in value["members"]]

    def is_member(self, id: str) -> bool:
        return id in self.raw.raft.conf_state().members

    # -- requests (on the leader; the member routes them there) ----------------------------------
    def submit(self, req: ConfigRequest, waiter: ReplyTo) -> None:
        raft = self.raw.raft
        if raft.pending_conf_index > raft.log.committed:
            # The configuration in force may not be committed yet: answering "already a member"
            # or "already removed" from it could promise what a new leader then undoes.
            waiter.reply(api.error(UNAVAILABLE, "a configuration change is in progress; retry"))
            return
        members = self.members()
        by_id = {m["id"]: m for m in members}
        if type(req) is api.AddMember:
            new: dict[str, Any] = dict(req.member)
            if new["id"] in by_id:
                old = by_id[new["id"]]
                same = all(old[k] == new[k] for k in ("raft", "client", "publish"))
                if same and (old["voter"] or req.learner):
                    waiter.reply({"ok": True, "index": self.raw.raft.log.committed})  # already there
                    return
                if not same:
                    waiter.reply(
                        api.error(BAD_REQUEST, f"{new['id']} is a member already, with other addresses")
                    )
                    return
                self._promote(new["id"], waiter)
                return
            used = {m[k] for m in members for k in ("raft", "client", "publish")}
            clash = [k for k in ("raft", "client", "publish") if new[k] in used]
            if clash:
                waiter.reply(api.error(BAD_REQUEST, f"{new[clash[0]]} is already a member's address"))
                return
            new["voter"] = False
            if req.learner:
                self._propose([*members, new], waiter)
            elif self._propose([*members, new], None):
                self.to_promote[new["id"]] = waiter
            else:
                waiter.reply(api.error(UNAVAILABLE, "a configuration change is in progress; retry"))
        elif type(req) is api.RemoveMember:
            if req.id not in by_id:
                # Not (or no longer) a member: a client's retry of a removal that went through
                # must not fail, so this is a success that changes nothing.
                waiter.reply({"ok": True, "index": self.raw.raft.log.committed, "member": False})
                return
            owed = self.to_promote.pop(req.id, None)
            if owed is not None:
                owed.reply(api.error(UNAVAILABLE, f"{req.id} is being removed; it will not be promoted"))
            self._propose([m for m in members if m["id"] != req.id], waiter)
        else:
            if req.id not in by_id:
                waiter.reply(api.error(BAD_REQUEST, f"{req.id!r} is not a member"))
            elif by_id[req.id]["voter"]:
                waiter.reply({"ok": True, "index": self.raw.raft.log.committed})
            else:
                self._promote(req.id, waiter)

    def _promote(self, id: str, waiter: ReplyTo | None) -> None:
        behind = self.behind(id)
        if behind:
            if waiter is not None:
                waiter.reply(
                    api.error(UNAVAILABLE, f"{id} is not caught up yet ({behind}); retry when it is")
                )
            return
        # A voter is bound to the incarnation that caught up (``identity.py``).
        inc = self.identity.incarnation_of(id)
        promoted = {"voter": True, "incarnation": inc}
        self._propose([{**m, **promoted} if m["id"] == id else m for m in self.members()], waiter)

    def behind(self, id: str) -> str | None:
        """Why learner ``id`` may not be promoted now, or None once it has caught up."""
        raft = self.raw.raft
        pr = raft.prs.get(id)
        if self.identity.speaks_retired(id):
            return (
                "it speaks as the data directory it had when it was removed: "
                "a removed member comes back from an empty data directory"
            )
        if pr is None or not self.identity.incarnation_of(id):
            return "the leader has not heard from it"
        # Within one round of the leader (§4.2.1): streaming, and at most what one append
        # carries behind the commit index. Under a steady load the commit index moves with
        # every round, so "all of it" would never hold.
        if pr.state != REPLICATE or raft.log.committed - pr.match > CATCH_UP_LAG:
            return f"it holds up to {pr.match} of {raft.log.committed} committed"
        return None

    def cluster(self) -> int | None:
        """The cluster id the configuration in force states (None before the first leader's)."""
        value = self.raw.raft.log.conf()
        return value.get("cluster") if isinstance(value, dict) else None

    def _propose(
        self, members: list[dict[str, Any]], waiter: ReplyTo | None, cluster: int | None = None
    ) -> bool:
        raft = self.raw.raft
        old = raft.conf_state()
        value: dict[str, Any] = {"members": members}
        cluster = cluster or self.cluster()
        if cluster:
            value["cluster"] = cluster
        retired = self.identity.retire(self.members(), members)
        if retired:
            value["retired"] = retired
        new = conf_of(value)
        why = "not a configuration" if new is None else single_change(old, new)
        if new is None or why is not None:
            if waiter is not None:
                waiter.reply(api.error(BAD_REQUEST, why or "not a configuration"))
            return False
        try:
            index, term = self.raw.propose_config(value)
        except (NotLeader, TransferInProgress, ProposalDropped) as e:
            if waiter is not None:
                waiter.reply(api.error(UNAVAILABLE, str(e) or "not the leader"))
            return False
        self.log("conf_proposed", index=index, voters=list(new.voters), learners=list(new.learners))
        if waiter is not None:
            # A record an older term proposed at this index is in no log any more: answer it
            # now (its client retries), or nobody ever will.
            for p in self.proposals.add_one(index, term, waiter):
                for w in p.waiters():
                    w.reply(api.error(UNAVAILABLE, LEADERSHIP_CHANGED))
        return True

    def tick(self) -> None:
        """On the leader: bind the voters heard from but not yet bound, then promote the
        learners it owes a promotion once they have caught up; one change at a time."""
        raft = self.raw.raft
        if raft.role == "leader" and raft.pending_conf_index <= raft.log.committed:
            bind = self.identity.binding(self.members(), self.cluster())
            if bind is not None:
                self._propose(bind["members"], None, bind["cluster"])
                return
        if not self.to_promote:
            return
        if raft.role != "leader":
            for id, w in self.to_promote.items():
                if w is not None:
                    w.reply(
                        api.error(
                            UNAVAILABLE,
                            f"leadership changed before {id} was promoted; it is a learner: "
                            "promote_member it once it has caught up",
                        )
                    )
            self.to_promote.clear()
            return
        if raft.pending_conf_index > raft.log.committed:
            return
        conf: ConfState = raft.conf_state()
        for id in list(self.to_promote):
            if id not in conf.learners:
                w = self.to_promote.pop(id)
                if w is not None:  # removed, or the change that added it was lost
                    w.reply(api.error(UNAVAILABLE, f"{id} is no longer a learner to promote"))
            elif self.behind(id) is None:
                self._promote(id, self.to_promote.pop(id))
                return  # one change at a time

    def waiters(self) -> list[ReplyTo]:
        return [w for w in self.to_promote.values() if w is not None]

    def expire(self, now: float) -> None:
        """Answer the waiters for promotions past their deadline (the promotion itself stays
        owed: the leader still makes it once the learner has caught up)."""
        late = [id for id, w in self.to_promote.items() if w is not None and w.deadline <= now]
        for id in late:
            w = self.to_promote[id]
            assert w is not None
            self.to_promote[id] = None
            w.reply(
                api.error(
                    UNAVAILABLE,
                    "added as a learner, not caught up within the request timeout; the leader "
                    "promotes it once it is (see status), or promote_member it then",
                )
            )
