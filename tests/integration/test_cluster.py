"""Members as real processes on loopback: election, ordering across PUB streams, bad input,
leader crash without losing acknowledged records, clean shutdown."""

from __future__ import annotations

import signal
import time

import msgpack
import pytest
import zmq

from .cluster import request

pytestmark = pytest.mark.timeout(120)


def record(addr: str, value, timeout: float = 5.0, **extra) -> dict:
    r = request(addr, {"op": "record", "value": value, **extra}, timeout)
    assert r is not None, f"no answer from {addr}"
    return r


def test_a_leader_is_elected_and_everyone_agrees(cluster):
    lead = cluster.wait_leader()
    sts = [cluster.status(i) for i in cluster.ids]
    assert [s["role"] for s in sts].count("leader") == 1
    assert {s["term"] for s in sts} == {sts[0]["term"]}
    assert all(s["leader"] == lead for s in sts)
    assert {m["id"] for m in sts[0]["members"]} == set(cluster.ids)


def test_records_through_every_member_arrive_on_every_pub_in_the_same_order(cluster):
    cluster.wait_leader()
    ctx = zmq.Context.instance()
    subs = {}
    for i in cluster.ids:
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(cluster.publish_addr(i))
        subs[i] = s
    time.sleep(0.3)  # let the SUBs connect (late joiners would refill with `entries`)
    acked = []
    try:
        for k in range(30):
            via = cluster.ids[k % 3]
            r = record(cluster.client_addr(via), {"k": k, "via": via})
            assert r["ok"], r
            acked.append(r["index"])
        last = max(acked)
        seen = {i: [] for i in cluster.ids}
        deadline = time.monotonic() + 10
        for i, s in subs.items():
            while (not seen[i] or seen[i][-1]["index"] < last) and time.monotonic() < deadline:
                if s.poll(200):
                    topic, body = s.recv_multipart()
                    assert topic == b"entry"
                    seen[i].append(msgpack.unpackb(body, raw=False))
        # From the first record on: entries committed before it (the leader's no-op, the
        # configuration that names the cluster) may be published before a SUB has joined.
        first = min(acked)
        streams = [
            [(e["index"], e["term"], e["kind"], e["value"]) for e in seen[i] if first <= e["index"] <= last]
            for i in seen
        ]
        assert streams[0] == streams[1] == streams[2]
        idx = [e[0] for e in streams[0]]
        assert idx == list(range(idx[0], idx[0] + len(idx))), "indexes are contiguous"
        values = [e[3] for e in streams[0] if e[2] == "record"]
        assert values == [{"k": k, "via": cluster.ids[k % 3]} for k in range(30)]
        # acknowledgements name the entry's index and term, in order
        assert acked == sorted(acked)
    finally:
        for s in subs.values():
            s.close()


def test_bad_frames_get_contract_errors_and_the_member_keeps_serving(make_cluster):
    c = make_cluster(max_value_bytes=1024)
    c.start()
    c.wait_leader()
    addr = c.client_addr("n2")  # a follower or the leader: both must answer
    cases = [
        (b"\xc1\xff garbage", "bad_request"),
        (msgpack.packb([1, 2, 3]), "bad_request"),
        (msgpack.packb({"op": "fly"}), "bad_request"),
        (msgpack.packb({"op": "entries", "from": "one"}), "bad_request"),
        (msgpack.packb({"op": "record", "value": 1, "client": 7, "seq": 1}), "bad_request"),
        (msgpack.packb({"op": "record", "value": "x" * 5000}), "too_large"),
    ]
    for frame, code in cases:
        r = request(addr, frame)
        assert r is not None and r["ok"] is False and r["error"] == code, (frame[:20], r)
        assert isinstance(r["message"], str) and r["message"]
    # a DEALER sending two frames
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(addr)
    try:
        d.send_multipart([msgpack.packb({"op": "status"}), b"extra"])
        assert d.poll(3000)
        r = msgpack.unpackb(d.recv_multipart()[-1], raw=False)
        assert r["ok"] is False and r["error"] == "bad_request"
        # and a DEALER with one frame works
        d.send(msgpack.packb({"op": "status"}))
        assert d.poll(3000)
        assert msgpack.unpackb(d.recv_multipart()[-1], raw=False)["ok"] is True
    finally:
        d.close()
    # still serving
    r = record(addr, "after the garbage")
    assert r["ok"], r


def test_retried_record_with_client_and_seq_is_applied_once(cluster):
    cluster.wait_leader()
    a = record(cluster.client_addr("n1"), "once", client="c-1", seq=1)
    b = record(cluster.client_addr("n3"), "once", client="c-1", seq=1)
    assert a["ok"] and b["ok"] and (a["index"], a["term"]) == (b["index"], b["term"])
    cluster.wait_applied(a["index"])
    values = [e["value"] for e in cluster.entries("n2") if e["kind"] == "record"]
    assert values.count("once") == 1


def test_killed_leader_is_replaced_and_no_acknowledged_record_is_lost(any_fsync_cluster):
    cluster = any_fsync_cluster
    lead = cluster.wait_leader()
    acked = []
    for k in range(50):
        r = record(cluster.client_addr(cluster.ids[k % 3]), f"before-{k}")
        assert r["ok"], r
        acked.append((r["index"], f"before-{k}"))
    cluster.kill(lead, signal.SIGKILL)
    rest = [i for i in cluster.ids if i != lead]
    t0 = time.monotonic()
    new = cluster.wait_leader(rest)
    elected_in = time.monotonic() - t0
    assert new != lead
    for k in range(20):
        r = record(cluster.client_addr(rest[k % 2]), f"after-{k}")
        assert r["ok"], r
        acked.append((r["index"], f"after-{k}"))
    cluster.start(lead)
    cluster.wait_applied(max(i for i, _ in acked), timeout=20)
    mode = "background" if cluster.extra_env.get("CRUISE_BACKGROUND_FSYNC") == "1" else "inline"
    assert f'"fsync_mode": "{mode}"' in cluster.log_text(lead)
    for i in cluster.ids:
        have = {e["index"]: e["value"] for e in cluster.entries(i)}
        for index, value in acked:
            assert have.get(index) == value, f"{i} lost acknowledged record {value} at {index}"
    assert elected_in < 10


def test_sigterm_stops_a_member_with_exit_0(cluster):
    cluster.wait_leader()
    assert cluster.kill("n3", signal.SIGTERM) == 0
    assert "member_stopped" in cluster.log_text("n3")


def test_requests_without_quorum_answer_unavailable_within_the_timeout(make_cluster):
    c = make_cluster(request_timeout_ms=800)
    c.start()
    lead = c.wait_leader()
    others = [i for i in c.ids if i != lead]
    for i in others:
        c.kill(i)
    t0 = time.monotonic()
    r = record(c.client_addr(lead), "no quorum", timeout=10)
    assert r["ok"] is False and r["error"] == "unavailable"
    assert time.monotonic() - t0 < 5
    st = c.status(lead)
    assert st is not None, "the member must keep serving"


def test_record_forwarded_to_a_frozen_leader_moves_to_the_new_one(make_cluster):
    """A follower re-forwards to the new leader instead of waiting out the request timeout,
    and the (client, seq) it stamps keeps the record from applying twice."""
    import threading

    c = make_cluster(request_timeout_ms=10_000)
    c.start()
    lead = c.wait_leader()
    follower = next(i for i in c.ids if i != lead)
    c.procs[lead].send_signal(signal.SIGSTOP)
    try:
        result = {}

        def go():
            t0 = time.monotonic()
            result["r"] = record(c.client_addr(follower), "through the freeze", timeout=15)
            result["dt"] = time.monotonic() - t0

        t = threading.Thread(target=go)
        t.start()
        t.join(14)
        assert not t.is_alive()
        assert result["r"]["ok"], result
        assert result["dt"] < 6, f"took {result['dt']:.1f}s: waited for the timeout instead of re-forwarding"
    finally:
        c.procs[lead].send_signal(signal.SIGCONT)
    c.wait_applied(result["r"]["index"], timeout=20)
    values = [e["value"] for e in c.entries(lead) if e["kind"] == "record"]
    assert values.count("through the freeze") == 1
