"""cruise.aio against tests/fake_member.py and a real 3-member cluster: failover, at-most-once
retries, concurrent calls on one client, the record window, and the clone-pattern Subscriber.

Each test runs its coroutine under a deadline (``run``) inside pytest-timeout's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import zmq

from brokerless import bind_to_random_port
from cruise.aio import Client, RecordResult, Subscriber
from cruise.client_sansio import Attempts, Numbering, Rotation
from cruise.errors import CruiseError
from tests.fake_member import FakeCluster, FakeLog, FakeMember
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]


def run(coro, deadline: float = 30.0):
    """Run ``coro`` in a fresh event loop; fail if it takes more than ``deadline`` seconds."""

    async def bounded():
        async with asyncio.timeout(deadline):
            return await coro

    return asyncio.run(bounded())


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


def record_requests(m: FakeMember) -> list[dict]:
    return [r for r in m.requests if r.get("op") == "record"]


async def take(sub: Subscriber, n: int, timeout: float = 10.0) -> list[dict]:
    """The next ``n`` entries, within ``timeout`` seconds."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} entries within {timeout}s: {out}"
        e = await sub.next(timeout=left)
        if e is not None:
            out.append(e)
    return out


async def wait_live(sub: Subscriber, client: Client, timeout: float = 10.0) -> None:
    """Record probes until one arrives, so the SUB connection is known to be up (slow joiner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await client.record("probe")
        if await sub.next(timeout=0.3) is not None:
            while await sub.next(timeout=0.2) is not None:  # drain the other probes
                pass
            return
    raise AssertionError("subscriber never received a live entry")


# -- the shared policy (cruise.client_sansio) ---------------------------------------------------


def test_numbering_keeps_records_in_flight_within_the_window():
    n = Numbering("c", window=3)
    seqs = [n.take() for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [n.may_send(s) for s in seqs] == [True, True, True, False, False]
    assert n.done(2) is False  # 1 is still open: the window does not move
    assert n.done(1) is True  # 1 and 2 done: the oldest open is 3
    assert [n.may_send(s) for s in seqs] == [True, True, True, True, True]
    with pytest.raises(ValueError):
        Numbering(window=1025)


def test_rotation_moves_once_for_calls_failing_together_and_attempts_share_the_deadline():
    r = Rotation(["a", "b", "c"])
    r.failed("a")
    r.failed("a")  # a second call that timed out on a: already moved on
    assert r.current == "b"
    at = Attempts(timeout=6.0, retries=3, start=100.0)
    assert at.share(100.0) == 2.0
    at.timed_out()
    assert at.share(101.0) == 2.5  # 5 s left for 2 attempts
    at.timed_out()
    at.timed_out()
    assert at.share(101.0) is None and at.failure(["a"]).code == "unavailable"


# -- Client ------------------------------------------------------------------------------------


def test_record_status_entries_round_trip(member):
    async def main():
        async with Client(member.client_address, timeout=5) as c:
            r1 = await c.record({"a": 1})
            r2 = await c.record(b"\x00\xff")
            r3 = await c.record(None)
            assert isinstance(r1, RecordResult)
            assert (r1.index, r2.index, r3.index) == (1, 2, 3)
            assert r1.term == 2 and r1.result is None
            st = await c.status()
            assert st["id"] == "f1" and st["role"] == "leader" and st["commit_index"] == 3
            assert "ok" not in st
            assert await c.entries(2, 10) == [
                {"index": 2, "term": 2, "kind": "record", "value": b"\x00\xff"},
                {"index": 3, "term": 2, "kind": "record", "value": None},
            ]
            assert await c.read_index() == 3
            assert await c.transfer_leader("f1") == "f1"
            return c.client_id

    client_id = run(main())
    recs = record_requests(member)
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert {r["client"] for r in recs} == {client_id}


def test_record_is_retried_through_a_member_that_does_not_answer(silent_address, member):
    async def main():
        async with Client([silent_address, member.client_address], timeout=4, retries=2) as c:
            t0 = time.monotonic()
            r = await c.record("x")
            first = time.monotonic() - t0
            t0 = time.monotonic()
            r2 = await c.record("y")  # the client stays on the member that answered
            second = time.monotonic() - t0
        return r, first, r2, second

    r, first, r2, second = run(main())
    assert r.index == 1 and r2.index == 2
    assert 1.8 <= first < 4.0  # one attempt timed out (half of 4 s), the second answered
    assert second < 1.0
    assert member.log.values() == ["x", "y"]


def test_a_retry_after_a_lost_reply_is_applied_once_through_another_member():
    """The first member applies the record but its reply is lost: the retry goes to the second
    member with the same (client, seq), which answers with the first application's index."""
    with FakeCluster(2) as fc:
        a, b = fc.members
        a.drop_replies(1)

        async def main():
            async with Client(fc.client_addresses, timeout=4, retries=2) as c:
                return await c.record("once"), await c.record("twice"), c.client_id

        r1, r2, client_id = run(main())
        assert (r1.index, r2.index) == (1, 2)
        assert fc.log.values() == ["once", "twice"]
        assert [(q["client"], q["seq"]) for q in record_requests(a)] == [(client_id, 1)]
        assert [(q["client"], q["seq"]) for q in record_requests(b)] == [(client_id, 1), (client_id, 2)]


def test_a_retry_to_the_same_member_resends_the_same_seq(member):
    member.drop_replies(1)

    async def main():
        async with Client(member.client_address, timeout=3, retries=3) as c:
            return await c.record("once")

    assert run(main()).index == 1
    recs = record_requests(member)
    assert len(recs) == 2 and recs[0]["seq"] == recs[1]["seq"] == 1
    assert member.log.values() == ["once"]


def test_unavailable_answer_is_retried_on_another_member_and_other_errors_are_final():
    with FakeCluster(2) as fc:
        a, b = fc.members
        a.fail_next("unavailable", message="no leader", leader="f2")

        async def main():
            async with Client(fc.client_addresses, timeout=3) as c:
                assert (await c.record("v")).index == 1  # a said unavailable, b applied it
                b.fail_next("stale", message="seq 1 is older than the session remembers")
                with pytest.raises(CruiseError) as info:
                    await c.record("w")
                assert info.value.code == "stale"
                b.fail_next("too_large", message="value is 2000000 bytes")
                with pytest.raises(CruiseError) as info:
                    await c.record("big")
                assert info.value.code == "too_large" and "2000000" in info.value.message
                with pytest.raises(CruiseError) as info:
                    await c.request("entries", from_="x")
                assert info.value.code == "bad_request"
                assert (await c.record("fine")).index == 2  # the client keeps working

        run(main())
        assert [r["op"] for r in a.requests] == ["record"]
        assert [r["value"] for r in record_requests(b)] == ["v", "w", "big", "fine"]  # none retried
        assert fc.log.values() == ["v", "fine"]


def test_gives_up_unavailable_within_timeout(silent_address):
    async def main():
        async with Client([silent_address, "tcp://127.0.0.1:1"], timeout=1.5) as c:
            t0 = time.monotonic()
            with pytest.raises(CruiseError) as info:
                await c.record("lost")
            return info.value, time.monotonic() - t0

    err, elapsed = run(main())
    assert err.code == "unavailable" and silent_address in err.message
    assert 1.4 <= elapsed < 2.5


def test_query():
    with FakeMember("f1", FakeLog(kv=True)) as m:

        async def main():
            async with Client(m.client_address) as db:
                await db.record({"put": "foo", "value": "bar"})
                assert await db.query({"get": "foo"}) == "bar"
                assert (await db.record({"cas": "foo", "expect": "bar", "value": "baz"})).result is True
                assert (await db.record({"cas": "foo", "expect": "bar", "value": "qux"})).result is False
                assert await db.query({"keys": "f"}) == ["foo"]
                assert await db.query({"get": "nope"}) is None

        run(main())
    with FakeMember("s1") as stream:  # the stream machine answers no query

        async def on_stream():
            async with Client(stream.client_address) as c:
                with pytest.raises(CruiseError) as info:
                    await c.query({"get": "foo"})
                assert info.value.code == "bad_request"

        run(on_stream())


def test_concurrent_records_from_many_coroutines_each_applied_once():
    """300 coroutines on one client, two members; replies lost on the first member make some
    records time out and go to the second: every record is applied exactly once, at the index
    its caller was told, and every reply reached the coroutine that asked."""
    n = 300
    with FakeCluster(2) as fc:
        a, b = fc.members
        a.drop_replies(5)

        async def main():
            async with Client(fc.client_addresses, timeout=5, retries=2) as c:
                return await asyncio.gather(*(c.record(i) for i in range(n)))

        results = run(main())
        assert sorted(r.index for r in results) == list(range(1, n + 1))
        for i, r in enumerate(results):
            assert fc.log.entries[r.index - 1]["value"] == i
        assert sorted(fc.log.values()) == list(range(n))
        sent = record_requests(a) + record_requests(b)
        assert sorted({q["seq"] for q in sent}) == list(range(1, n + 1))
        assert len(sent) >= n + 5  # the five lost replies were retried, with their own seq


def test_a_call_waiting_on_a_silent_member_holds_up_no_other_call():
    """The first call's request is swallowed by the first member; twenty calls made meanwhile on
    the same client are answered at once, while it waits out its share of the timeout and then
    goes to the second member. (Behind a lock, they would all wait for it.)"""
    with FakeCluster(2) as fc:
        a, b = fc.members
        a.drop_requests(1)

        async def timed(call, t0):
            result = await call
            return result, time.monotonic() - t0

        async def main():
            async with Client(fc.client_addresses, timeout=6, retries=2) as c:
                t0 = time.monotonic()
                stuck = asyncio.create_task(timed(c.record("stuck"), t0))
                await asyncio.sleep(0.05)  # its request is on its way first
                others = [timed(c.record(i), t0) for i in range(10)] + [
                    timed(c.status(), t0) for _ in range(10)
                ]
                others_done = asyncio.gather(*others)  # all under way now, beside the stuck one
                return await stuck, await others_done

        (first, first_took), others = run(main())
        assert 2.9 <= first_took < 6.0  # half of 6 s on the first member, then the second answered
        assert max(took for _, took in others) < 2.0
        assert [r["value"] for r in record_requests(b)] == ["stuck"]
        assert fc.log.values().count("stuck") == 1 and len(fc.log.values()) == 11
        assert all(st["id"] == "f1" for st, _ in others[10:])


def test_records_beyond_the_window_wait_for_the_oldest(member):
    """With a window of 4, seq 5 is not sent while seq 1 waits for its retry: sending it could
    make a member forget seq 1's session entry and answer its retry `stale`."""
    member.drop_requests(1)  # seq 1's first attempt is never answered

    async def main():
        async with Client(member.client_address, timeout=3, retries=3, max_in_flight=4) as c:
            return await asyncio.gather(*(c.record(i) for i in range(12)))

    results = run(main())
    assert sorted(r.index for r in results) == list(range(1, 13))
    seqs = [q["seq"] for q in record_requests(member)]
    assert seqs.count(1) == 2
    retry = seqs.index(1, 1)
    assert set(seqs[:retry]) == {1, 2, 3, 4}, seqs  # nothing past the window before seq 1's retry
    assert sorted(seqs[retry + 1 :]) == list(range(5, 13))
    assert sorted(member.log.values()) == list(range(12))


def test_close_ends_a_call_waiting_for_a_reply(silent_address):
    async def main():
        c = Client(silent_address, timeout=20)
        call = asyncio.create_task(c.record("x"))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        c.close()
        with pytest.raises(CruiseError) as info:
            await call
        return info.value, time.monotonic() - t0

    err, elapsed = run(main())
    assert err.code == "unavailable" and "closed" in err.message
    assert elapsed < 2.0  # not the 20 s timeout


def test_a_client_serves_one_event_loop_after_another(member):
    c = Client(member.client_address)
    assert run(c.record("first")).index == 1
    assert run(c.record("second")).index == 2  # new loop: new sockets
    c.close()
    assert member.log.values() == ["first", "second"]


def test_bad_address_is_a_value_error():
    with pytest.raises(ValueError):
        Client("localhost:7201")
    with pytest.raises(ValueError):
        Client([])
    with pytest.raises(ValueError):
        Subscriber("tcp://127.0.0.1:7201", publish=["nowhere"])


# -- Subscriber --------------------------------------------------------------------------------


def test_subscriber_catches_up_from_since_then_live_without_gap_or_duplicate(member):
    async def main():
        async with Client(member.client_address) as c:
            for i in range(5):
                await c.record(i)
            async with Subscriber(member.client_address, since=3, resync=60) as sub:
                got = await take(sub, 3)
                assert [e["index"] for e in got] == [3, 4, 5]
                assert got[0] == {"index": 3, "term": 2, "kind": "record", "value": 2}
                await wait_live(sub, c)
                base = sub.last_index
                # the member does not publish base+2: the subscriber sees base+3 live and fills the gap
                member.skip_publish(base + 2)
                for i in range(4):
                    await c.record(f"live{i}")
                got = await take(sub, 4)
                assert [e["index"] for e in got] == [base + 1, base + 2, base + 3, base + 4]
                assert [e["value"] for e in got] == ["live0", "live1", "live2", "live3"]
                assert base + 2 not in member.published
                assert await sub.next(timeout=0.3) is None

    run(main())


def test_subscriber_since_none_starts_after_the_commit_index_at_start(member):
    async def main():
        async with Client(member.client_address) as c:
            await c.record("old")
            async with Subscriber(member.client_address) as sub:
                assert sub.last_index == 1
                await c.record("new")
                (e,) = await take(sub, 1)
                assert e["value"] == "new" and e["index"] == 2

    run(main())


def test_subscriber_finds_an_entry_published_before_it_connected(member):
    """No later entry reveals the gap: the quiet-time resync must find it."""

    async def main():
        async with Subscriber(member.client_address, resync=0.3) as sub:
            member.skip_publish(1)
            async with Client(member.client_address) as c:
                await c.record("only")
            (e,) = await take(sub, 1, timeout=5)
            assert e["value"] == "only"

    run(main())


def test_two_publishers_are_deduped():
    with FakeCluster(2) as fc:

        async def main():
            async with Client(fc.client_addresses) as c:
                async with Subscriber(fc.client_addresses, since=1, resync=60) as sub:
                    assert len(sub.publish_addresses) == 2
                    await wait_live(sub, c)
                    start = sub.last_index
                    # each member skips a different entry: only the union of both streams is complete
                    fc.members[0].skip_publish(start + 2)
                    fc.members[1].skip_publish(start + 4)
                    for i in range(6):
                        await c.record(i)
                    got = await take(sub, 6)
                    assert [e["index"] for e in got] == list(range(start + 1, start + 7))
                    assert [e["value"] for e in got] == list(range(6))
                    assert await sub.next(timeout=0.5) is None  # the other member's copies were dropped

        run(main())


def test_subscriber_catch_up_in_batches_while_coroutines_record(member):
    """Several `entries` batches of catch-up, interleaved with live records from other coroutines
    in the same event loop: every entry once, in order."""

    async def main():
        async with Client(member.client_address) as c:
            for i in range(25):
                await c.record(i)
            async with Subscriber(member.client_address, since=1, batch=7) as sub:
                writers = asyncio.gather(*(c.record(i) for i in range(25, 75)))
                got = await take(sub, 75)
                await writers
                assert [e["index"] for e in got] == list(range(1, 76))
                assert sorted(e["value"] for e in got) == list(range(75))
                assert [e["value"] for e in got[:25]] == list(range(25))
                assert await sub.next(timeout=0.3) is None

    run(main())


def test_subscriber_says_history_is_compacted_and_goes_on(member, caplog):
    async def main():
        async with Client(member.client_address) as c:
            for i in range(3):
                await c.record(i)
        member.log.compacted_before = 3
        told = []
        async with Subscriber(
            member.client_address, since=1, on_compacted=lambda a, b: told.append((a, b))
        ) as sub:
            first = await sub.next(timeout=5)
        assert told == [(1, 2)] and sub.skipped == [(1, 2)]
        assert first["index"] == 3

        async def tell(a, b):  # a coroutine function is awaited
            await asyncio.sleep(0)
            told.append(("async", a, b))

        async with Subscriber(member.client_address, since=2, on_compacted=tell) as sub:
            assert (await sub.next(timeout=5))["index"] == 3
        assert told[-1] == ("async", 2, 2)
        # Without a callback it is a warning on the cruise.client logger.
        async with Subscriber(member.client_address, since=1) as sub:
            assert (await sub.next(timeout=5))["index"] == 3

    run(main())
    assert "entries 1..2 are compacted into a snapshot and gone; going on from 3" in caplog.text


def test_close_from_another_coroutine_ends_async_for(member):
    async def main():
        sub = Subscriber(member.client_address, resync=60)  # no periodic wake-up to notice close()
        got = []

        async def consume():
            async for e in sub:
                got.append(e)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        sub.close()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - t0 < 2.0
        assert got == []
        assert await sub.next(timeout=1) is None  # stays closed

    run(main())


def test_subscriber_unreachable_cluster_raises():
    async def main():
        with pytest.raises(CruiseError) as info:
            async with Subscriber("tcp://127.0.0.1:1", timeout=0.5):
                pass
        assert info.value.code == "unavailable"

    run(main())


# -- a real cluster ------------------------------------------------------------------------------


@pytest.fixture
def kv_cluster(tmp_path):
    """Three member processes running the kv machine; every process is killed at teardown."""
    c = Cluster(tmp_path, 3, state_machine="kv")
    c.start()
    try:
        yield c
    finally:
        c.close()


@pytest.mark.timeout(120)
def test_real_cluster_with_a_frozen_member(kv_cluster):
    """A follower is frozen (SIGSTOP) and listed first: records from 50 coroutines and the
    Subscriber's requests go on to the others; queries see every put; the Subscriber delivers the
    whole log from index 1, live entries included, with no gap and no duplicate."""
    c = kv_cluster
    leader = c.wait_leader()
    frozen = next(i for i in c.ids if i != leader)
    addrs = [c.client_addr(frozen)] + [c.client_addr(i) for i in c.ids if i != frozen]
    pid = c.procs[frozen].pid
    os.kill(pid, signal.SIGSTOP)
    try:

        async def main():
            async with Client(addrs, timeout=10) as db, Subscriber(addrs, since=1, timeout=10) as log:
                results = await asyncio.gather(*(db.record({"put": f"k{i}", "value": i}) for i in range(50)))
                assert len({r.index for r in results}) == 50
                assert await db.query({"get": "k7"}) == 7
                assert await db.query({"keys": "k"}) == sorted(f"k{i}" for i in range(50))
                last = max(r.index for r in results)
                got = []
                async for e in log:
                    got.append(e)
                    if e["index"] == last:
                        break
                assert [e["index"] for e in got] == list(range(1, last + 1))
                puts = sorted(e["value"]["value"] for e in got if e["kind"] == "record")
                assert puts == list(range(50))
                # live from here: one more record arrives, and nothing else
                extra = await db.record({"put": "live", "value": True})
                assert (await log.next(timeout=10))["index"] == extra.index == last + 1
                assert await log.next(timeout=0.5) is None

        run(main(), deadline=90)
    finally:
        os.kill(pid, signal.SIGCONT)
