"""Records coming in: answered from the session table, joined to a copy in flight, refused
when too much waits, collected for the leader's next batch, or routed to the leader.

The leader proposes everything a loop turn collected as one batch (group commit): ``take``
adds a record to the batch, ``propose`` hands the batch to the core at the end of the turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from .. import api
from ..core import NotLeader, ProposalDropped, RawNode, TransferInProgress
from ..errors import UNAVAILABLE
from .driver import stale_reply
from .ports import ReplyTo
from .requests import LEADERSHIP_CHANGED, Proposals, Route
from .sessions import STALE, Sessions


@dataclass(slots=True, eq=False)
class Intake:
    raw: RawNode
    sessions: Sessions
    proposals: Proposals
    _: KW_ONLY
    busy: Callable[[], bool]
    route: Route
    kick: Callable[[], None]
    halted: Callable[[], str | None]  # why records are refused now (a full disk), or None
    batch: list[tuple[api.Record, ReplyTo]] = field(default_factory=list, init=False)
    items: list[tuple[Any, tuple[str, int] | None]] = field(
        default_factory=list, init=False
    )  # (value, origin)

    def take(self, req: api.Record, waiter: ReplyTo, frame: bytes | None = None) -> None:
        client, seq = req.client, req.seq
        origin = None if client is None or seq is None else (client, seq)
        if origin is not None:
            verdict = self.sessions.check(*origin)
            if verdict.first is not None:
                index, term, result = verdict.first
                waiter.ok(index, term, result)
                return
            if verdict.kind == STALE:
                waiter.reply(stale_reply(origin, verdict.highest))
                return
            if self.proposals.join(origin, waiter):
                return
        if self.busy():
            waiter.reply(api.error(UNAVAILABLE, "too many requests in flight; retry later"))
            return
        halted = self.halted()
        if halted is not None:
            waiter.reply(api.error(UNAVAILABLE, halted))
            return
        if self.raw.raft.role == "leader":
            self.batch.append((req, waiter))
            self.items.append((req.value, origin))
            self.kick()
        else:
            self.route(req, waiter, frame)

    def propose(self) -> None:
        """Hand the turn's batch to the core (or route it on, if this member no longer leads)."""
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        items, self.items = self.items, []
        try:
            first, term = self.raw.propose_batch(items)
        except (NotLeader, TransferInProgress):
            for r, w in batch:
                self.route(r, w, None)
            return
        except ProposalDropped as e:
            for _, w in batch:
                w.reply(api.error(UNAVAILABLE, str(e)))
            return
        displaced = self.proposals.add(first, term, batch)
        if displaced:
            err = api.error(UNAVAILABLE, LEADERSHIP_CHANGED)
            for p in displaced:
                for w in p.waiters():
                    w.reply(err)

    def refuse(self, reply: dict[str, Any]) -> None:
        """Answer the whole batch with ``reply`` (the member cannot propose now)."""
        batch, self.batch, self.items = self.batch, [], []
        for _, w in batch:
            w.reply(reply)
