"""Simulated clients, as impatient as real ones.

- :class:`Writer` records values with ``(client, seq)``, as ``cruise.Client`` does,
  one or several at a time; on a timeout (shorter than the member's, so the first copy
  is often still in flight) or an ``unavailable`` it retries the same ``(client, seq)``
  through the next member. Every copy it ever sent may still arrive.
- :class:`Writer` with ``session=False`` records without ``(client, seq)`` and never
  retries, like an embedded ``Node.record``.
- :class:`Reader` asks a random member for a read index.
- :class:`Operator` asks a random member to hand leadership to a random member, changes
  the membership, and removes and adds again every member that lost its data, as the
  member's log tells an operator to.

Each answer is checked by the :class:`~cruise.simulation.checks.Checker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import api
from .network import REQUEST, Packet

if TYPE_CHECKING:
    from .sim import Simulation


class SimClient:
    def __init__(self, sim: Simulation, id: str) -> None:
        self.sim = sim
        self.id = id
        self.waiting: dict[int, Any] = {}  # attempt -> what it was for

    def send(self, member: str, frame: bytes, what: Any) -> int:
        attempt = next(self.sim.attempts)
        self.waiting[attempt] = what
        self.sim.net.send(Packet(REQUEST, self.id, member, (attempt, frame)))
        return attempt

    def on_reply(self, attempt: int, reply: dict[str, Any]) -> None:
        what = self.waiting.pop(attempt, None)
        if what is not None:
            self.answered(what, reply)

    def answered(self, what: Any, reply: dict[str, Any]) -> None:
        raise NotImplementedError

    def act(self, tick: int) -> None:
        raise NotImplementedError

    def idle(self) -> bool:
        return True


class Writer(SimClient):
    """Records ``{id}-{seq}`` values with up to ``depth`` in flight (a pipelining client,
    as the benchmark's are; never more than the session window, as the README asks)."""

    def __init__(self, sim: Simulation, id: str, session: bool = True, depth: int = 1) -> None:
        super().__init__(sim, id)
        self.session = session
        self.depth = depth
        self.seq = 0  # the last seq started
        self.inflight: dict[int, _Flight] = {}
        self.target = sim.rng.randrange(len(sim.ids))
        self.acked = 0
        self.limit: int | None = None  # the last seq it may start (None: no limit)

    def idle(self) -> bool:
        return not self.inflight

    def act(self, tick: int) -> None:
        sim = self.sim
        for seq, f in list(self.inflight.items()):
            if tick - f.sent_tick < sim.cfg.client_timeout_ticks:
                continue
            if self.session:
                f.target += 1  # the next member, as a Lazy Pirate client does
                self._send(seq, f, tick)
            else:
                del self.inflight[seq]  # an embedded record is not retried
        lowest = min(self.inflight, default=self.seq + 1)
        while self.seq + 1 < lowest + self.depth:
            if self.limit is not None and self.seq >= self.limit:
                return
            if sim.faulty and sim.rng.random() > sim.cfg.write_rate:
                return
            self.seq += 1
            self.target += 1
            f = self.inflight[self.seq] = _Flight(f"{self.id}-{self.seq}", self.target, tick)
            self._send(self.seq, f, tick)

    def _send(self, seq: int, f: _Flight, tick: int) -> None:
        f.sent_tick = tick
        fields: dict[str, Any] = {"value": f.value}
        if self.session:
            fields.update(client=self.id, seq=seq)
        member = self.sim.ids[f.target % len(self.sim.ids)]
        self.send(member, api.encode_request("record", **fields), (seq, f.value))

    def answered(self, what: Any, reply: dict[str, Any]) -> None:
        seq, value = what
        sim = self.sim
        f = self.inflight.get(seq)
        if reply.get("ok"):
            sim.checker.on_ack(self.id, seq, value, reply["index"])
            if f is not None:
                del self.inflight[seq]
                self.acked += 1
            return
        code = reply.get("error")
        if code == "unavailable":
            if f is not None and self.session:
                f.sent_tick = -(10**9)  # retry through the next member at the next tick
            elif f is not None:
                del self.inflight[seq]
        elif code == "stale":
            # Never more than the window in flight: a seq still in flight cannot be stale.
            if f is not None:
                sim.fail(f"{self.id} seq {seq}, in flight, answered stale: {reply}")
        else:
            sim.fail(f"{self.id} seq {seq}: unexpected answer {reply}")


class _Flight:
    __slots__ = ("value", "target", "sent_tick")

    def __init__(self, value: str, target: int, sent_tick: int) -> None:
        self.value = value
        self.target = target
        self.sent_tick = sent_tick


class Reader(SimClient):
    def act(self, tick: int) -> None:
        sim = self.sim
        if sim.faulty and sim.rng.random() < sim.cfg.read_rate:
            member = sim.rng.choice(sim.ids)
            self.send(member, api.encode_request("read_index"), (member, sim.checker.max_acked))

    def answered(self, what: Any, reply: dict[str, Any]) -> None:
        member, bound = what
        if reply.get("ok"):
            self.sim.checker.on_read(f"read from {member}", reply["index"], bound)
        elif reply.get("error") != "unavailable":
            self.sim.fail(f"read from {member}: unexpected answer {reply}")


class Operator(SimClient):
    """Asks for leadership transfers and, with the ``membership`` fault, adds members (as
    learners or voters), promotes learners and removes members, through random members."""

    def __init__(self, sim: Simulation, id: str) -> None:
        super().__init__(sim, id)
        # Members that lost their data: id -> [step ("remove" or "add"), tick last asked].
        self.readds: dict[str, list[Any]] = {}
        self.last_change = -(10**9)  # tick of the last membership change asked at random

    def readd(self, who: str) -> None:
        self.readds[who] = ["remove", -(10**9)]

    def _readd(self, tick: int) -> None:
        sim = self.sim
        for who, step in self.readds.items():
            if tick - step[1] < 2 * sim.cfg.client_timeout_ticks:
                continue  # asked recently: wait for the answer (or give it up as lost)
            step[1] = tick
            member = sim.rng.choice(sim.ids)
            if step[0] == "remove":
                frame = api.encode_request("remove_member", id=who)
            else:
                frame = api.encode_request("add_member", member=sim.addresses[who])
            sim.trace(f"operator: re-add {who}: {step[0]} through {member}")
            self.send(member, frame, ("readd", member, who, step[0]))

    def act(self, tick: int) -> None:
        sim = self.sim
        self._readd(tick)
        if not sim.faulty:
            return
        rng = sim.rng
        if rng.random() < sim.cfg.transfer_rate:
            member, to = rng.choice(sim.ids), rng.choice(sim.ids)
            self.send(member, api.encode_request("transfer_leader", to=to), ("transfer", member, to))
        # No membership change of its own while a member waits to be re-added: the cluster
        # has one voter fewer than its configuration says until then.
        if "membership" in sim.cfg.faults and not self.readds and rng.random() < sim.cfg.membership_rate:
            self.last_change = tick
            member, who = rng.choice(sim.ids), rng.choice(sim.ids)
            op = rng.choice(("add", "add", "promote", "remove"))
            if op == "add":
                frame = api.encode_request(
                    "add_member", member=sim.addresses[who], learner=rng.random() < 0.3
                )
            elif op == "promote":
                frame = api.encode_request("promote_member", id=who)
            else:
                frame = api.encode_request("remove_member", id=who)
            sim.trace(f"operator: {op} {who} through {member}")
            self.send(member, frame, (op, member, who))

    def answered(self, what: Any, reply: dict[str, Any]) -> None:
        if what[0] == "readd":
            _, member, who, step = what
            current = self.readds.get(who)
            if reply.get("ok") and current is not None and current[0] == step:
                if step == "remove":
                    self.readds[who] = ["add", -(10**9)]
                else:
                    del self.readds[who]
                    self.sim.trace(f"operator: {who} is a member again")
            elif not reply.get("ok") and reply.get("error") not in ("unavailable", "bad_request"):
                self.sim.fail(f"re-add {who} ({step}) through {member}: unexpected answer {reply}")
            return
        op, member, to = what
        if op == "transfer" and reply.get("ok") and reply.get("leader") != to:
            self.sim.fail(f"transfer to {to} through {member} answered {reply}")
        # Refused (a target or member that is not one, a change in flight, the last voter) or
        # timed out; nothing else.
        if not reply.get("ok") and reply.get("error") not in ("unavailable", "bad_request"):
            self.sim.fail(f"{op} {to} through {member}: unexpected answer {reply}")
