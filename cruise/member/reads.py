"""Linearizable reads: ``read_index`` and ``query`` (dissertation §6.4, follower reads).

Theory of operation
-------------------
A read asks the core for a read index under a fresh context id. The leader confirms
its leadership with a quorum after the request arrived and answers the commit index
it had then; the core hands that back as a ``ReadState`` with the same context. The
read waits until this member has applied up to that index, then is answered
(``read_index``) or served by the state machine (``query``).

Context ids are unique across this member's restarts: a process starts its ids at a
random point of a 62-bit space. A leader may still hold a round asked for by this
member's previous process; numbering from 1 again would let that old round's answer
(an old index) release a new read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import api
from ..core.types import ReadState
from ..errors import BAD_REQUEST
from ..fsm import BadQuery, QueryNotSupported, StateMachine
from .ports import ReplyTo
from .requests import expire as expire_items


@dataclass(slots=True)
class Read:
    request: api.ReadIndexReq | api.Query
    waiter: ReplyTo
    index: int = 0  # the confirmed read index, once known


class Reads:
    def __init__(self) -> None:
        # ctx -> read asked of the core, not yet confirmed (arrival order).
        self.asked: dict[int, Read] = {}
        # Confirmed reads waiting for this member to apply up to their index.
        self.confirmed: list[Read] = []

    def __len__(self) -> int:
        return len(self.asked) + len(self.confirmed)

    def asked_for(self, ctx: int, read: Read) -> None:
        self.asked[ctx] = read

    def on_read_states(self, states: list[ReadState]) -> None:
        for rs in states:
            read = self.asked.pop(rs.ctx, None)
            if read is not None:
                read.index = rs.index
                self.confirmed.append(read)

    def serve(self, applied: int, machine: StateMachine) -> None:
        """Answer every confirmed read whose index this member has applied."""
        if not self.confirmed:
            return
        keep = []
        for read in self.confirmed:
            if read.index > applied:
                keep.append(read)
                continue
            req = read.request
            if type(req) is api.Query:
                read.waiter.reply(_query(machine, req.query, read.index))
            else:
                read.waiter.reply({"ok": True, "index": read.index})
        self.confirmed = keep

    def expire(self, now: float) -> list[ReplyTo]:
        out = expire_items(self.asked, now)
        if self.confirmed and any(r.waiter.deadline <= now for r in self.confirmed):
            out.extend(r.waiter for r in self.confirmed if r.waiter.deadline <= now)
            self.confirmed = [r for r in self.confirmed if r.waiter.deadline > now]
        return out

    def waiters(self) -> list[ReplyTo]:
        return [r.waiter for r in self.asked.values()] + [r.waiter for r in self.confirmed]


def _query(machine: StateMachine, q: Any, index: int) -> dict[str, Any]:
    try:
        return {"ok": True, "result": machine.query(q), "index": index}
    except (QueryNotSupported, BadQuery) as e:
        return api.error(BAD_REQUEST, str(e))
    except Exception as e:  # a state machine's bug or a bad query: answer, keep serving
        return api.error(BAD_REQUEST, f"query failed: {type(e).__name__}: {e}")
