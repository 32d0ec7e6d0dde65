"""Helpers for paper-section tests: build a core over a prepared log."""

import random

from cruise.core import CoreConfig, Entry, HardState, MemoryStorage, RawNode


def storage_with(terms: list[int], hard: HardState | None = None) -> MemoryStorage:
    """A MemoryStorage whose log has one entry per term in ``terms`` (index 1, 2, ...)."""
    st = MemoryStorage()
    st.append([Entry(i + 1, t, "record", f"e{i + 1}") for i, t in enumerate(terms)])
    st.set_hard_state(hard or HardState(max(terms, default=0), None, 0))
    return st


def node(id: str, ids: tuple[str, ...], st: MemoryStorage | None = None, **kw) -> RawNode:
    cfg = CoreConfig(id, ids, election_ticks=(10, 10), rng=random.Random(0), **kw)
    return RawNode(cfg, st or MemoryStorage())


def persist(n: RawNode, st: MemoryStorage):
    """Handle one Ready the way the runtime does; returns it."""
    rd = n.ready()
    if rd.entries:
        st.append(rd.entries)
    if rd.hard_state:
        st.set_hard_state(rd.hard_state)
    n.advance(rd)
    return rd


def make_leader(n: RawNode, st: MemoryStorage, voters: tuple[str, ...]):
    """Run n's election by answering its vote requests with grants; returns the Ready after winning."""
    from cruise.core import VoteResponse

    n.campaign()
    for pre in (True, False):
        rd = persist(n, st)
        for m in rd.messages:
            n.step(VoteResponse(m.term, m.to, n.raft.id, True, pre=pre))
            if n.role == "leader" or (pre and n.raft.role == "candidate"):
                break
    assert n.role == "leader", n.status()
    return persist(n, st)
