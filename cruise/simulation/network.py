"""A simulated network at least as bad as a real one.

Every message between two endpoints (members ``n1``.., clients ``c1``..) is a
:class:`Packet` that the network delivers in some later round, or never. Faults,
each on only while the simulation's fault phase lasts:

- loss, duplication (of anything but a client's request: a client's retries are
  its own, ``clients.py``), and delays that reorder messages; now and then a delay longer
  than an election timeout;
- re-delivery of an arbitrarily old copy of a message between members (a ZeroMQ pipe
  that reconnects delivers what it queued, seconds later): a bounded history of what
  was sent is kept and old packets are injected again;
- partitions between members: symmetric splits into groups, and one-way cuts (a
  hears b, b does not hear a).

Once the fault phase ends the network is reliable and delivers in order, as TCP does.
Clients are never partitioned from members (their retries model a client that
cannot reach one member), but their packets are lost, duplicated and delayed too.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

PEER = "peer"  # a Raft message: body is a core Message
FORWARD = "forward"  # a forwarded client request: body is (rid, frame)
FORWARD_REPLY = "forward_reply"  # body is (rid, reply map)
REQUEST = "request"  # client -> member: body is (attempt, frame)
REPLY = "reply"  # member -> client: body is (attempt, reply map)


@dataclass(frozen=True, slots=True)
class Packet:
    kind: str
    src: str
    dst: str
    body: Any


@dataclass
class NetConfig:
    loss: float = 0.03
    dup: float = 0.03
    max_delay: int = 6  # rounds
    long_delay: float = 0.005  # chance that a packet takes up to ``long_delay_rounds``
    long_delay_rounds: int = 150
    redeliver: float = 0.02  # chance per round that an old member-to-member packet arrives again
    history: int = 20_000  # member-to-member packets kept for re-delivery (any of them, however old)


@dataclass
class Network:
    cfg: NetConfig
    rng: random.Random
    faults: bool = True
    round: int = 0
    sent: int = 0
    # (deliver round, seq, packet)
    _queue: list[tuple[int, int, Packet]] = field(default_factory=list)
    _seq: int = 0
    _history: deque[Packet] = field(default_factory=deque)
    # Directed cuts between members: (src, dst) pairs that lose every packet.
    cuts: set[tuple[str, str]] = field(default_factory=set)

    def send(self, p: Packet) -> None:
        self.sent += 1
        between_members = p.kind in (PEER, FORWARD, FORWARD_REPLY)
        if between_members:
            self._history.append(p)
            if len(self._history) > self.cfg.history:
                self._history.popleft()
        if not self.faults:
            self._put(p, 1)
            return
        rng, c = self.rng, self.cfg
        if rng.random() < c.loss:
            return
        # A client's request is not duplicated by the network (TCP does not); a client that
        # retries sends its copy itself, with the same (client, seq).
        copies = 2 if rng.random() < c.dup and p.kind != REQUEST else 1
        for _ in range(copies):
            if rng.random() < c.long_delay:
                delay = rng.randint(c.max_delay, c.long_delay_rounds)
            else:
                delay = 1 + rng.randrange(c.max_delay)
            self._put(p, delay)

    def _put(self, p: Packet, delay: int) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.round + delay, self._seq, p))

    def due(self) -> list[Packet]:
        """The packets to deliver this round, in a random order, after the cuts."""
        out = []
        q = self._queue
        while q and q[0][0] <= self.round:
            out.append(heapq.heappop(q)[2])
        if self.faults:
            if self._history and self.rng.random() < self.cfg.redeliver:
                out.append(self.rng.choice(self._history))
            self.rng.shuffle(out)
        # Once quiet, packets arrive in the order they were sent, as over one TCP connection.
        return [p for p in out if (p.src, p.dst) not in self.cuts]

    # -- partitions ------------------------------------------------------------------------------
    def split(self, groups: list[set[str]]) -> None:
        """Members in different groups hear nothing from each other."""
        self.cuts = {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}

    def cut_one_way(self, src: str, dst: str) -> None:
        self.cuts.add((src, dst))

    def heal(self) -> None:
        self.cuts = set()

    def quiet(self) -> None:
        """Faults off: no more loss, duplicates, long delays, re-delivery or cuts."""
        self.faults = False
        self.heal()
