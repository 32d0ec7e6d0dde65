"""The embedded API: three ``cruise.Node`` members in this process, on free ports and temp dirs."""

from __future__ import annotations

import time

import pytest

from cruise import CruiseError, Node
from cruise.fsm import StreamMachine

from .cluster import Cluster, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def nodes(tmp_path):
    spec = Cluster(tmp_path)  # only for its config file: no process is started
    made = {i: Node.from_config(str(spec.config_path), id=i) for i in spec.ids}
    try:
        yield made
    finally:
        for n in made.values():
            n.stop(timeout=10)


def _leader(nodes: dict, timeout: float = 10.0) -> Node:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = [n for n in nodes.values() if n.role == "leader"]
        if len(leaders) == 1 and all(n.leader == leaders[0].me.id for n in nodes.values()):
            return leaders[0]
        time.sleep(0.02)
    raise AssertionError("no agreed leader within the deadline")


def test_open_then_start_serves_records_in_order(nodes):
    for n in nodes.values():
        n.open()  # storage and sockets first, as `cruise run` does before freezing the GC
    for n in nodes.values():
        n.start()
    leader = _leader(nodes)
    futs = [leader.record(f"v{i}") for i in range(50)]
    got = [f.result(timeout=10) for f in futs]
    indexes = [index for index, _, _ in got]
    assert indexes == list(range(indexes[0], indexes[0] + 50))
    # A follower's record is forwarded to the leader and lands after them.
    follower = next(n for n in nodes.values() if n is not leader)
    index, _, _ = follower.record("from a follower").result(timeout=10)
    # After them (not always right after: the leader may append a configuration entry that
    # binds a member it has just heard from).
    assert index > indexes[-1]


def test_open_and_start_are_each_once(nodes):
    n = nodes["n1"]
    n.open()
    with pytest.raises(RuntimeError, match="opened once"):
        n.open()
    n.start()
    with pytest.raises(RuntimeError, match="started once"):
        n.start()
    with pytest.raises(RuntimeError, match="started once"):
        n.run()


def test_stop_before_run_returns_at_once_and_releases(nodes):
    n = nodes["n1"]
    n.open()
    n.stop()
    t0 = time.monotonic()
    n.run()  # returns at once: stop came first
    assert time.monotonic() - t0 < 5
    with pytest.raises(CruiseError):
        n.record("late").result(timeout=5)
    # The data dir is free again: a new member can lock and open it.
    again = Node.from_config(str(n.config.path), id="n1")
    again.open()
    again.stop()
    again.run()


class _SetResults(StreamMachine):
    """Answers every record with a set, which msgpack cannot carry."""

    def apply(self, value, index):
        return {value} if value == "set please" else index


def test_a_result_msgpack_cannot_carry_is_a_clear_error_and_the_member_goes_on(tmp_path):
    spec = Cluster(tmp_path)
    made = {i: Node.from_config(str(spec.config_path), id=i, state_machine=_SetResults()) for i in spec.ids}
    try:
        for n in made.values():
            n.start()
        leader = _leader(made)
        addr = spec.client_addr(leader.me.id)
        bad = request(addr, {"op": "record", "value": "set please"}, timeout=5)
        assert bad is not None and bad["ok"] is False and bad["error"] == "bad_request"
        assert "cannot be encoded" in bad["message"]
        good = request(addr, {"op": "record", "value": "fine"}, timeout=5)
        assert good is not None and good["ok"] is True and good["result"] == good["index"]
    finally:
        for n in made.values():
            n.stop(timeout=10)


def _track_durability(node: Node, written: dict, synced: dict) -> None:
    """Wrap ``node``'s storage so that ``synced[id]`` is the last index an fsync covered.
    The leader's fsyncs take 2 ms longer, so its followers' acknowledgements beat them."""
    me, st = node.me.id, node.storage
    written[me] = synced[me] = 0
    append, sync, begin_sync = st.append, st.sync, st.begin_sync

    def tracked_append(entries, *args, **kw):
        append(entries, *args, **kw)
        written[me] = max(written[me], entries[-1].index)

    def slow_if_leader():
        if node.role == "leader":
            time.sleep(0.002)

    def tracked_sync():
        w = written[me]
        slow_if_leader()
        sync()
        synced[me] = max(synced[me], w)

    class TrackedJob:
        def __init__(self, job, w):
            self.job, self.w = job, w

        def run(self):
            slow_if_leader()
            self.job.run()
            synced[me] = max(synced[me], self.w)

        def discard(self):
            self.job.discard()

    def tracked_begin_sync():
        w, job = written[me], begin_sync()
        return None if job is None else TrackedJob(job, w)

    st.append, st.sync, st.begin_sync = tracked_append, tracked_sync, tracked_begin_sync


@pytest.mark.parametrize("background", [False, True], ids=["inline-fsync", "background-fsync"])
def test_every_acknowledged_record_was_fsynced_on_a_majority_first(tmp_path, monkeypatch, background):
    """Durability as the clients see it: when a record's future resolves, a majority of the
    members have fsynced it. Checked on the leader's thread at the moment of the answer,
    with hundreds of records in flight so that acknowledgements race the leader's own fsync."""
    monkeypatch.setattr(Node, "background_fsync", background)
    spec = Cluster(tmp_path)
    made = {i: Node.from_config(str(spec.config_path), id=i) for i in spec.ids}
    written: dict[str, int] = {}
    synced: dict[str, int] = {}
    short: list[tuple[int, dict]] = []
    try:
        for n in made.values():
            n.open()
            _track_durability(n, written, synced)
        for n in made.values():
            n.start()
        leader = _leader(made)

        def check(fut):
            index = fut.result()[0]
            if sum(s >= index for s in synced.values()) < 2:
                short.append((index, dict(synced)))

        done = 0
        for _ in range(10):
            futs = [leader.record(b"x" * 100) for _ in range(400)]
            for f in futs:
                f.add_done_callback(check)
            done += sum(1 for f in futs if f.result(timeout=20))
        assert done == 4000
        assert short == [], f"{len(short)} records answered before a majority fsynced them: {short[:3]}"
    finally:
        for n in made.values():
            n.stop(timeout=10)


class _Events:
    """A structlog-style logger that keeps what it was told, by level."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    def __getattr__(self, level):
        return lambda event, **kw: self.seen.append((level, event, kw))


def test_id_wait_for_leader_context_manager_logger_and_a_failing_callback(tmp_path):
    spec = Cluster(tmp_path, n=1)
    events = _Events()
    node = Node.from_config(str(spec.config_path), id="n1", logger=events)
    assert node.id == "n1"

    def bad(entry):
        raise ZeroDivisionError("boom")

    node.on_apply(bad)
    with node:
        assert node.wait_for_leader(timeout=10) == "n1"
        node.record("x").result(timeout=10)  # the callback's failure stops nothing
    failures = [(lvl, kw) for lvl, ev, kw in events.seen if ev == "on_apply_callback_failed"]
    assert failures and all(lvl == "error" for lvl, _ in failures)
    assert "ZeroDivisionError: boom" in failures[0][1]["traceback"]
    assert any(ev == "member_started" for _, ev, _ in events.seen)  # every event went to our logger


def test_wait_for_leader_gives_up_when_no_quorum_answers(tmp_path):
    spec = Cluster(tmp_path)  # three members, only one started: no leader can be elected
    with Node.from_config(str(spec.config_path), id="n1") as node:
        with pytest.raises(CruiseError) as e:
            node.wait_for_leader(timeout=0.5)
    assert e.value.code == "unavailable"
