"""cruise.client against tests/fake_member.py: Lazy Pirate failover and the clone-pattern Subscriber."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from brokerless import bind_to_random_port
from cruise.client import Client, RecordResult, Subscriber, status_all
from cruise.errors import CruiseError
from tests.fake_member import FakeCluster, FakeLog, FakeMember

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def member():
    with FakeMember("f1") as m:
        yield m


@pytest.fixture
def silent_address():
    """An address with a ROUTER that reads requests and never answers (a hung member)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    _, addr = bind_to_random_port(sock)
    yield addr
    sock.close(0)


def records(sub: Subscriber, n: int, timeout: float = 10.0) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} entries within {timeout}s: {out}"
        e = sub.next(timeout=left)
        if e is not None:
            out.append(e)
    return out


def wait_live(sub: Subscriber, client: Client, timeout: float = 10.0) -> None:
    """Record probes until one arrives, so the SUB connection is known to be up (slow joiner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.record("probe")
        if sub.next(timeout=0.3) is not None:
            while sub.next(timeout=0.2) is not None:  # drain the other probes
                pass
            return
    raise AssertionError("subscriber never received a live entry")


# -- Client ------------------------------------------------------------------------------------


def test_record_status_entries_round_trip(member):
    with Client(member.client_address, timeout=5) as c:
        r1 = c.record({"a": 1})
        r2 = c.record(b"\x00\xff")
        r3 = c.record(None)
        assert isinstance(r1, RecordResult)
        assert (r1.index, r2.index, r3.index) == (1, 2, 3)
        assert r1.term == 2 and r1.result is None
        st = c.status()
        assert st["id"] == "f1" and st["role"] == "leader" and st["commit_index"] == 3
        assert "ok" not in st
        assert [m["id"] for m in st["members"]] == ["f1"]
        es = c.entries(2, 10)
        assert es == [
            {"index": 2, "term": 2, "kind": "record", "value": b"\x00\xff"},
            {"index": 3, "term": 2, "kind": "record", "value": None},
        ]
        assert c.entries(1, 1) == [{"index": 1, "term": 2, "kind": "record", "value": {"a": 1}}]
        assert c.read_index() == 3
        # what went on the wire: client id and increasing seq with each record
        recs = [r for r in member.requests if r["op"] == "record"]
        assert [r["seq"] for r in recs] == [1, 2, 3]
        assert len({r["client"] for r in recs}) == 1 and recs[0]["client"] == c.client_id


def test_two_clients_have_different_ids(member):
    with Client(member.client_address) as a, Client(member.client_address) as b:
        a.record(1)
        b.record(2)
    assert a.client_id != b.client_id
    assert member.log.values() == [1, 2]


def test_failover_when_first_member_never_answers(silent_address, member):
    with Client([silent_address, member.client_address], timeout=4, retries=2) as c:
        t0 = time.monotonic()
        r = c.record("x")
        elapsed = time.monotonic() - t0
    assert r.index == 1
    assert 1.0 <= elapsed < 4.0  # one attempt timed out (half of 4 s), the second answered
    assert member.log.values() == ["x"]


def test_failover_when_first_member_is_not_listening(member):
    with FakeMember("dead") as dead:
        addr = dead.client_address
    with Client([addr, member.client_address], timeout=3) as c:
        assert c.record("y").index == 1


def test_gives_up_unavailable_within_timeout(silent_address):
    with Client([silent_address, "tcp://127.0.0.1:1"], timeout=1.5) as c:
        t0 = time.monotonic()
        with pytest.raises(CruiseError) as info:
            c.record("lost")
        elapsed = time.monotonic() - t0
    assert info.value.code == "unavailable"
    assert elapsed < 2.5


def test_retry_resends_same_seq_and_is_applied_once(member):
    member.drop_replies(1)  # the first attempt is applied but its reply is lost
    with Client(member.client_address, timeout=4, retries=3) as c:
        r = c.record("once")
        r2 = c.record("twice")
    assert r.index == 1 and r2.index == 2
    recs = [q for q in member.requests if q["op"] == "record"]
    assert len(recs) == 3  # two attempts of the first call, one of the second
    assert recs[0]["seq"] == recs[1]["seq"] == 1 and recs[2]["seq"] == 2
    assert recs[0]["client"] == recs[1]["client"]
    assert member.log.values() == ["once", "twice"]


def test_error_reply_raises_with_code(member):
    member.fail_next("too_large", message="value is 2000000 bytes")
    with Client(member.client_address, timeout=3) as c:
        with pytest.raises(CruiseError) as info:
            c.record("big")
        assert info.value.code == "too_large"
        assert "2000000" in info.value.message
        # not retried: a too_large answer is final
        assert len(member.requests) == 1
        with pytest.raises(CruiseError) as info:
            c.request("entries", from_="x")
        assert info.value.code == "bad_request"
        assert c.record("fine").index == 1  # the client keeps working


def test_unavailable_reply_is_retried_on_another_member():
    with FakeCluster(2) as fc:
        a, b = fc.members
        a.fail_next("unavailable", message="no leader", leader="f2")
        with Client(fc.client_addresses, timeout=3) as c:
            assert c.record("v").index == 1
        assert [r["op"] for r in a.requests] == ["record"]
        assert [r["op"] for r in b.requests] == ["record"]


def test_unavailable_everywhere_raises_the_members_answer(member):
    member.fail_next("unavailable", n=10, message="no quorum", leader=None)
    with Client(member.client_address, timeout=2, retries=2) as c:
        with pytest.raises(CruiseError) as info:
            c.record("v")
    assert info.value.code == "unavailable" and info.value.message == "no quorum"
    assert "leader" in info.value.extra


def test_membership_and_transfer_requests():
    with FakeCluster(2) as fc, Client(fc.client_addresses) as c:
        assert c.add_member("n9", "tcp://127.0.0.1:9101", "tcp://127.0.0.1:9201", "tcp://127.0.0.1:9301") == 1
        assert c.remove_member("n9") == 2
        assert c.transfer_leader("f2") == "f2"
        with pytest.raises(CruiseError) as info:
            c.remove_member("nobody")
        assert info.value.code == "not_member"


def test_bad_address_is_a_value_error():
    with pytest.raises(ValueError):
        Client("localhost:7201")
    with pytest.raises(ValueError):
        Client([])


def test_status_all_reports_unreachable(member, silent_address):
    t0 = time.monotonic()
    out = status_all([member.client_address, silent_address], timeout=0.5)
    assert time.monotonic() - t0 < 2
    assert out[0]["id"] == "f1" and out[0]["address"] == member.client_address
    assert out[1] == {"address": silent_address, "error": "unreachable"}


# -- Subscriber --------------------------------------------------------------------------------


def test_subscriber_catches_up_from_since_then_live_without_gap_or_duplicate(member):
    with Client(member.client_address) as c:
        for i in range(5):
            c.record(i)
        with Subscriber(member.client_address, since=3, resync=60) as sub:
            got = records(sub, 3)
            assert [e["index"] for e in got] == [3, 4, 5]
            assert got[0] == {"index": 3, "term": 2, "kind": "record", "value": 2}
            wait_live(sub, c)
            base = sub.last_index
            # the member does not publish base+2: the subscriber sees base+3 live and fills the gap
            member.skip_publish(base + 2)
            for i in range(4):
                c.record(f"live{i}")
            got = records(sub, 4)
            assert [e["index"] for e in got] == [base + 1, base + 2, base + 3, base + 4]
            assert [e["value"] for e in got] == ["live0", "live1", "live2", "live3"]
            assert base + 2 not in member.published
            assert sub.next(timeout=0.3) is None


def test_subscriber_since_none_starts_after_current_commit(member):
    with Client(member.client_address) as c:
        c.record("old")
        with Subscriber(member.client_address) as sub:
            assert sub.last_index == 1
            c.record("new")
            (e,) = records(sub, 1)
            assert e["value"] == "new" and e["index"] == 2


def test_subscriber_finds_an_entry_published_before_it_connected(member):
    """No later entry reveals the gap: the quiet-time resync must find it."""
    with Subscriber(member.client_address, resync=0.3) as sub:
        member.skip_publish(1)
        with Client(member.client_address) as c:
            c.record("only")
        (e,) = records(sub, 1, timeout=5)
        assert e["value"] == "only"


def test_two_publishers_are_deduped():
    with FakeCluster(2) as fc, Client(fc.client_addresses) as c:
        with Subscriber(fc.client_addresses, since=1, resync=60) as sub:
            assert len(sub.publish_addresses) == 2
            wait_live(sub, c)
            start = sub.last_index
            # each member skips a different entry: only the union of both streams is complete
            fc.members[0].skip_publish(start + 2)
            fc.members[1].skip_publish(start + 4)
            for i in range(6):
                c.record(i)
            got = records(sub, 6)
            assert [e["index"] for e in got] == list(range(start + 1, start + 7))
            assert [e["value"] for e in got] == list(range(6))
            assert sub.next(timeout=0.5) is None  # the other member's copies were dropped


def test_subscriber_many_entries_in_order(member):
    """More than one `entries` batch of catch-up, interleaved with live traffic."""
    with Client(member.client_address) as c:
        for i in range(25):
            c.record(i)
        with Subscriber(member.client_address, since=1, batch=7) as sub:
            stop = threading.Event()

            def writer():
                with Client(member.client_address) as w:
                    for i in range(25, 50):
                        if stop.is_set():
                            return
                        w.record(i)

            t = threading.Thread(target=writer)
            t.start()
            try:
                got = records(sub, 50)
            finally:
                stop.set()
                t.join(10)
            assert [e["index"] for e in got] == list(range(1, 51))
            assert [e["value"] for e in got] == list(range(50))


def test_subscriber_says_history_is_compacted_and_goes_on(member, caplog):
    with Client(member.client_address) as c:
        for i in range(3):
            c.record(i)
    member.log.compacted_before = 3
    told = []
    with Subscriber(member.client_address, since=1, on_compacted=lambda a, b: told.append((a, b))) as sub:
        first = sub.next(timeout=5)
    assert told == [(1, 2)] and sub.skipped == [(1, 2)]
    assert first["index"] == 3
    # Without a callback it is a warning on the cruise.client logger.
    with Subscriber(member.client_address, since=1) as sub:
        assert sub.next(timeout=5)["index"] == 3
    assert "entries 1..2 are compacted into a snapshot and gone; going on from 3" in caplog.text


def test_subscriber_close_from_another_thread_ends_iteration(member):
    sub = Subscriber(member.client_address)
    got = []

    def consume():
        got.extend(sub)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    sub.close()
    t.join(5)
    assert not t.is_alive()
    assert got == []


def test_subscriber_unreachable_cluster_raises():
    with pytest.raises(CruiseError) as info:
        Subscriber("tcp://127.0.0.1:1", timeout=0.5)
    assert info.value.code == "unavailable"


def test_fake_log_is_shared():
    log = FakeLog()
    with FakeMember("a", log) as a, FakeMember("b", log) as b:
        with Client(a.client_address) as ca, Client(b.client_address) as cb:
            ca.record(1)
            cb.record(2)
            assert cb.status()["leader"] == "a"
    assert log.values() == [1, 2]
