"""Member identity: what a message's stamp lets count (cruise.member.identity)."""

from __future__ import annotations

import errno
import random
from typing import Any

import pytest

from cruise import wire
from cruise.core.messages import AppendEntries, AppendResponse, Heartbeat, RequestVote, VoteResponse
from cruise.member.identity import SAVE_RETRY_TICKS, IdentityGuard, MemoryIdentity, Stamp

ME = 0xA1


class FakeLog:
    def __init__(self) -> None:
        self.value: Any = None
        self.committed_value: Any = None
        self.conf_version = 0
        self.committed = 0
        self.last = 0

    def conf(self) -> Any:
        return self.value

    def conf_at(self, index: int) -> Any:
        return self.committed_value

    def last_index(self) -> int:
        return self.last


class FakeRaw:
    def __init__(self) -> None:
        self.raft = self
        self.log = FakeLog()
        self.voters: tuple[str, ...] = ("n1", "n2", "n3")
        self.role = "follower"
        self.config = self
        self.election_ticks = (10, 20)


def conf(cluster: int | None = 7, **incs: int) -> dict[str, Any]:
    members = [
        {"id": i, "voter": True, **({"incarnation": incs[i]} if i in incs else {})}
        for i in ("n1", "n2", "n3")
    ]
    return {"members": members, **({"cluster": cluster} if cluster else {})}


def guard(value: Any = None, committed: Any = None, cluster: int = 0, last: int = 0):
    raw = FakeRaw()
    raw.log.value, raw.log.committed_value, raw.log.last = value, committed, last
    events: list[tuple[str, dict]] = []
    store = MemoryIdentity(ME, cluster)
    g = IdentityGuard("n1", raw, store, random.Random(1), lambda e, **kw: events.append((e, kw)))  # type: ignore[arg-type]
    return g, raw, store, events


def set_conf(raw: FakeRaw, value: Any) -> None:
    raw.log.value = value
    raw.log.conf_version += 1


def test_a_bound_voter_speaking_as_another_incarnation_counts_for_nothing():
    g, _, _, events = guard(conf(n2=5), cluster=7, last=10)
    stamp = Stamp(7, 6, 0)  # n2 lost its data: a new incarnation
    assert not g.admit("n2", VoteResponse, stamp)
    assert not g.admit("n2", AppendResponse, stamp)
    # Requests still go through: a leader re-admitted since must be followed.
    assert g.admit("n2", AppendEntries, stamp)
    assert g.admit("n2", Heartbeat, stamp)
    assert g.peer_status("n2") == {"needs_readd": True}
    assert [e for e, _ in events] == ["peer_needs_readd"]  # said once, not per message
    assert g.admit("n2", AppendResponse, Stamp(7, 5, 0))  # the admitted one counts
    assert g.peer_status("n2") == {}


def test_an_unbound_member_counts_and_a_new_incarnation_of_it_voids_its_progress():
    g, _, _, _ = guard(conf(), cluster=7, last=10)
    reset: list[str] = []
    g.on_new_incarnation = reset.append
    assert g.admit("n3", AppendResponse, Stamp(7, 40, 0))
    assert reset == []
    assert g.admit("n3", AppendResponse, Stamp(0, 41, 0))
    assert reset == ["n3"]


def test_messages_from_another_cluster_are_dropped_and_logged_once():
    g, _, _, events = guard(conf(), cluster=7, last=10)
    assert not g.admit("n2", Heartbeat, Stamp(8, 5, 0))
    assert not g.admit("n2", Heartbeat, Stamp(8, 5, 0))
    assert [e for e, _ in events] == ["peer_other_cluster"]
    assert g.admit("n2", Heartbeat, Stamp(0, 5, 0))  # not known yet: a member being born or joining


def test_a_member_addressed_as_another_incarnation_knows_it_lost_its_data():
    g, _, _, events = guard(None)
    assert not g.needs_readd
    assert g.admit("n2", Heartbeat, Stamp(7, 5, ME + 1))
    assert g.needs_readd
    assert [e for e, _ in events] == ["needs_readd"]
    assert "cruise member remove n1" in events[0][1]["action"]
    assert not g.admit("n3", RequestVote, Stamp(0, 6, 0))  # no votes at all now


def test_its_own_log_can_say_so_too_and_a_readd_clears_it():
    g, raw, _, events = guard(conf(n1=ME + 1), cluster=7, last=10)
    assert g.needs_readd
    set_conf(raw, conf())  # removed and added again: unbound
    g.tick()
    assert not g.needs_readd
    assert [e for e, _ in events] == ["needs_readd", "readmitted"]


def test_the_cluster_id_is_taken_from_the_committed_configuration_and_stored():
    g, raw, store, _ = guard(conf(cluster=9), committed=None)
    assert g.stamp("n2").cluster == 0  # in the log, not committed: a deposed leader's, maybe
    raw.log.committed_value = conf(cluster=9)
    g.tick()
    assert (g.stamp("n2").cluster, store.cluster) == (9, 9)


class FullDisk(MemoryIdentity):
    """An identity store on a disk that refuses writes while ``full``."""

    full = True

    def save_cluster(self, cluster: int) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().save_cluster(cluster)


def test_a_full_disk_defers_storing_the_cluster_id_and_the_member_goes_on():
    """The id is learned at a tick; a disk that filled up since the last write refuses it.
    The member keeps the id in force, says so once, and stores it once space returns."""
    g, raw, _, events = guard(conf(cluster=9), committed=None)
    g.store = store = FullDisk(ME)
    raw.log.committed_value = conf(cluster=9)
    for _ in range(3 * SAVE_RETRY_TICKS):
        g.tick()
    assert (g.stamp("n2").cluster, store.cluster) == (9, 0)
    assert [e for e, _ in events] == ["cluster_id", "cluster_id_unsaved"]
    store.full = False
    for _ in range(SAVE_RETRY_TICKS):
        g.tick()
    assert store.cluster == 9
    assert [e for e, _ in events][2:] == ["cluster_id_saved"]


def test_other_errors_storing_the_cluster_id_still_stop_the_member():
    g, raw, _, _ = guard(conf(cluster=9), committed=None)

    class Broken(MemoryIdentity):
        def save_cluster(self, cluster: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

    g.store = Broken(ME)
    raw.log.committed_value = conf(cluster=9)
    with pytest.raises(OSError, match="Input/output"):
        g.tick()


def test_the_leader_binds_the_voters_it_heard_from_and_names_the_cluster():
    g, raw, _, _ = guard(None)
    g.admit("n2", AppendResponse, Stamp(0, 22, 0))
    members = conf(cluster=None)["members"]
    raw.role = "leader"
    g.tick()
    assert g.binding(members, None) is None  # n3 not heard from yet: one entry for all, soon
    for _ in range(20):
        g.tick()
    value = g.binding(members, None)  # n3 stays silent: bind those heard from
    assert value is not None and value["cluster"]
    assert {m["id"]: m.get("incarnation") for m in value["members"]} == {"n1": ME, "n2": 22, "n3": None}
    assert g.binding(value["members"], value["cluster"]) is None  # nothing new to bind
    set_conf(raw, value)
    assert g.stamp("n2") == Stamp(0, ME, 22)


def test_stamps_cross_the_wire():
    msg = AppendResponse(3, "n2", "n1", 10, False, 0, 0)
    frame = wire.encode(msg, None, Stamp(7, 22, ME))
    assert wire.decode(frame) == (msg, Stamp(7, 22, ME))
    assert wire.decode(wire.encode(msg))[1] == Stamp(0, 0, 0)


def test_a_frame_with_a_bad_identity_is_refused():
    import msgpack

    bad = bytes([wire.VERSION]) + msgpack.packb([4, 3, "n2", "n1", "x", 22, 0, 10, False, 0, 0])
    with pytest.raises(wire.WireError, match="identity"):
        wire.decode(bad)


def test_a_removed_members_incarnation_is_retired_and_never_bound_again():
    """A late message from the data directory a member lost must not get the member, once
    re-added, bound to that directory: removing it retires its incarnation."""
    g, raw, _, _ = guard(conf(n2=5), cluster=7, last=10)
    members = conf(n2=5)["members"]
    without = [m for m in members if m["id"] != "n2"]
    retired = g.retire(members, without)
    assert retired == [["n2", 5]]
    set_conf(raw, {"cluster": 7, "members": [*without, {"id": "n2", "voter": False}], "retired": retired})
    assert g.admit("n2", AppendResponse, Stamp(7, 5, 0))  # a late copy from the old directory
    assert g.speaks_retired("n2") and g.incarnation_of("n2") == 0  # not promotable as that
    assert g.admit("n2", AppendResponse, Stamp(0, 6, 0))  # the new directory speaks
    assert not g.speaks_retired("n2") and g.incarnation_of("n2") == 6
