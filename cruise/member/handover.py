"""Leadership handovers: ``transfer_leader`` requests, each waiting for the member it names
to lead.

A member that does not lead routes the request to the leader (which may be the named member
already: then it is answered at once). The leader asks its core to transfer; the answer
waits until a leader is known again, and goes out when that leader is the one named. A
transfer that has not happened by the request's deadline is answered ``unavailable``; the
core gives up on it after an election timeout of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .. import api
from ..core import NotLeader, RawNode
from ..errors import BAD_REQUEST, UNAVAILABLE
from .ports import ReplyTo
from .requests import Route


@dataclass(slots=True)
class Transfer:
    """A ``transfer_leader`` waiting for ``to`` to lead."""

    to: str
    waiter: ReplyTo


@dataclass(slots=True, eq=False)
class Handovers:
    raw: RawNode
    is_member: Callable[[str], bool]
    route: Route  # to the leader, as every request a follower cannot answer
    waiting: list[Transfer] = field(default_factory=list, init=False)

    def ask(self, req: api.TransferLeader, waiter: ReplyTo, frame: bytes | None = None) -> None:
        if not self.is_member(req.to):
            waiter.reply(api.error(BAD_REQUEST, f"{req.to!r} is not a member"))
        elif self.raw.leader == req.to:
            waiter.reply({"ok": True, "leader": req.to})
        elif self.raw.raft.role != "leader":
            self.route(req, waiter, frame)
        else:
            try:
                self.raw.transfer_leader(req.to)
            except (NotLeader, ValueError) as e:
                waiter.reply(api.error(UNAVAILABLE, str(e)))
                return
            self.waiting.append(Transfer(req.to, waiter))

    def led_by(self, leader: str) -> None:
        """A leader is known: answer the transfers to it."""
        done = [t for t in self.waiting if t.to == leader]
        if done:
            self.waiting = [t for t in self.waiting if t.to != leader]
            for t in done:
                t.waiter.reply({"ok": True, "leader": t.to})

    def expire(self, now: float) -> None:
        """Answer the transfers whose deadline passed."""
        late = [t for t in self.waiting if t.waiter.deadline <= now]
        if late:
            self.waiting = [t for t in self.waiting if t.waiter.deadline > now]
            for t in late:
                t.waiter.reply(
                    api.error(UNAVAILABLE, f"leadership did not move to {t.to} within the request timeout")
                )

    def waiters(self) -> list[ReplyTo]:
        return [t.waiter for t in self.waiting]
