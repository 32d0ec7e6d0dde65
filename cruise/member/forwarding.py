"""Requests a member cannot serve itself: parked until a leader is known, or forwarded to it.

Theory of operation
-------------------
A follower forwards ``record`` and ``transfer_leader`` to the leader it knows over the
transport (in production a DEALER to the leader's client address) and relays the
answer. A request waits here as :class:`Parked` while no leader is known or the link
to it cannot take it, and as :class:`Forwarded` while the leader's answer is out.

When the leader changes, requests forwarded to the old one are handed back to the
member to route again: a record carries its ``(client, seq)`` (one is stamped on a
record that has none), so a copy the old leader did commit is not applied twice.
"""

from __future__ import annotations

import itertools
from collections import deque

from .. import api
from ..errors import UNAVAILABLE
from .ports import ReplyTo, Transport
from .requests import Forwarded, Parked
from .requests import expire as expire_items

MAX_PARKED = 100_000


def encode(req: api.Request) -> bytes:
    """The client-protocol frame of a request this member forwards."""
    if type(req) is api.Record:
        if req.client is None:
            return api.encode_request("record", value=req.value)
        return api.encode_request("record", value=req.value, client=req.client, seq=req.seq)
    if type(req) is api.TransferLeader:
        return api.encode_request("transfer_leader", to=req.to)
    raise AssertionError(f"cannot forward {req!r}")


class Forwarding:
    def __init__(self, transport: Transport, client_id: str, first_id: int) -> None:
        self.transport = transport
        self.parked: deque[Parked] = deque()
        self.forwarded: dict[int, Forwarded] = {}
        # Records without (client, seq) get one before they leave this member, so a
        # re-forward after a leader change applies them at most once.
        self._client = client_id
        self._seq = itertools.count(1)
        self._rids = itertools.count(first_id)

    def __len__(self) -> int:
        return len(self.parked) + len(self.forwarded)

    def park(self, req: api.Request, waiter: ReplyTo, frame: bytes | None) -> None:
        if len(self.parked) >= MAX_PARKED:
            waiter.reply(api.error(UNAVAILABLE, "no leader, and too many requests waiting for one"))
            return
        self.parked.append(Parked(req, waiter, frame))

    def forward(self, leader: str, req: api.Request, waiter: ReplyTo, frame: bytes | None) -> None:
        if type(req) is api.Record and req.client is None:
            req = api.Record(req.value, self._client, next(self._seq))
            frame = None
        if frame is None:
            frame = encode(req)
        rid = next(self._rids)
        if not self.transport.forward(leader, rid, frame):
            # Not connected to the leader yet (or its queue is full): the sweep retries.
            self.parked.append(Parked(req, waiter, frame))
            return
        self.forwarded[rid] = Forwarded(leader, req, frame, waiter)

    def on_reply(self, rid: int, reply: dict) -> None:
        fwd = self.forwarded.pop(rid, None)
        if fwd is not None:  # else answered already (timed out, or re-forwarded)
            fwd.waiter.reply(reply)

    def take_moved(self, leader: str) -> list[Parked]:
        """Requests forwarded to another member than ``leader``, to route again."""
        moved = [rid for rid, f in self.forwarded.items() if f.leader != leader]
        out = []
        for rid in moved:
            f = self.forwarded.pop(rid)
            out.append(Parked(f.request, f.waiter, f.frame))
        return out

    def take_parked(self) -> list[Parked]:
        out = list(self.parked)
        self.parked.clear()
        return out

    def expire(self, now: float) -> list[ReplyTo]:
        out = [p.waiter for p in self.parked if p.waiter.deadline <= now]
        if out:
            self.parked = deque(p for p in self.parked if p.waiter.deadline > now)
        out.extend(expire_items(self.forwarded, now))
        return out

    def waiters(self) -> list[ReplyTo]:
        return [p.waiter for p in self.parked] + [f.waiter for f in self.forwarded.values()]
