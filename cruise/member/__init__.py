"""The sans-I/O member runtime: what a cruise member decides, around the Raft core.

``Member`` takes peer messages, client requests, ticks and sync completions, and
answers through the ports of ``ports.py``; ``cruise.node`` is its adapter to ZeroMQ,
the WAL and threads, and ``cruise.simulation`` drives the same class in a simulated
world. Modules: ``member.py`` (inputs, routing, reads, status), ``driver.py`` (the
Ready loop), ``requests.py`` (typed waiting requests), ``forwarding.py``, ``reads.py``,
``applier.py`` and ``sessions.py`` (at-most-once application).
"""

from .applier import Applier, Outcome
from .member import Member, MemberConfig
from .sessions import Sessions

__all__ = ["Applier", "Member", "MemberConfig", "Outcome", "Sessions"]
