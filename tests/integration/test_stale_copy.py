"""Exactly-once against a stale copy of a record that arrives late, with real member processes.

A client sends (client "w", seq 1) to a follower that is frozen (SIGSTOP), gives up on it,
retries the same request through the leader, and carries on with thousands more seqs. When
the follower wakes it reads the old copy off its socket and forwards it to the leader. By
then the client is far past seq 1, so a member that remembers only the last few hundred seqs
per client no longer knows seq 1 was applied. The copy must not be applied a second time:
it is either answered with the first attempt's index or refused as ``stale``.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import msgpack
import pytest
import zmq

from .cluster import request

pytestmark = pytest.mark.timeout(60)

CLIENT = "w"
N = 3000  # seqs the writer gets through after the retry: far past any 256-seq memory
WINDOW = 64  # requests in flight on the writer's DEALER


def value(seq: int) -> str:
    return f"stale-{seq}"


def packb(msg: dict) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def dealer(ctx: zmq.Context, addr: str) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(addr)
    return s


def write_pipelined(sock: zmq.Socket, seqs: range, timeout: float) -> dict[int, dict]:
    """Record every seq of ``seqs`` through ``sock`` with up to WINDOW in flight; each request
    carries its seq as a routing frame (``[seq, b"", body]``) so replies match whatever their
    order. Every record must be acknowledged ok within ``timeout``."""
    todo = iter(seqs)
    replies: dict[int, dict] = {}
    in_flight = 0
    deadline = time.monotonic() + timeout
    while True:
        while in_flight < WINDOW and (seq := next(todo, None)) is not None:
            body = packb({"op": "record", "value": value(seq), "client": CLIENT, "seq": seq})
            sock.send_multipart([seq.to_bytes(8, "big"), b"", body])
            in_flight += 1
        if not in_flight:
            return replies
        left = deadline - time.monotonic()
        assert left > 0 and sock.poll(int(left * 1000)), (
            f"writer: {in_flight} records unanswered after {timeout}s ({len(replies)} acknowledged)"
        )
        rid, _, body = sock.recv_multipart()
        seq = int.from_bytes(rid, "big")
        r = msgpack.unpackb(body, raw=False)
        assert r.get("ok") is True, f"writer: seq {seq} answered {r}"
        assert seq not in replies, f"writer: seq {seq} answered twice"
        replies[seq] = r
        in_flight -= 1


def wait_status(cluster, id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = cluster.status(id, 0.5)
        if st is not None:
            return st
    raise AssertionError(f"{id} does not answer status within {timeout}s")


def test_a_late_copy_of_an_old_seq_is_not_applied_again(cluster):
    lead = cluster.wait_leader()
    follower = next(i for i in cluster.ids if i != lead)
    ctx = zmq.Context.instance()
    old = writer = None
    stopped = False
    try:
        # 1. The follower freezes; a request to it waits, unread, for it to wake. (The DEALER
        #    keeps it queued until the ZMTP handshake with the frozen member completes.)
        cluster.procs[follower].send_signal(signal.SIGSTOP)
        stopped = True
        old = dealer(ctx, cluster.client_addr(follower))
        old.send(packb({"op": "record", "value": value(1), "client": CLIENT, "seq": 1}))

        # 2. The writer gives up on the follower, retries seq 1 through the leader, carries on.
        first = request(
            cluster.client_addr(lead),
            {"op": "record", "value": value(1), "client": CLIENT, "seq": 1},
            5.0,
        )
        assert first is not None and first["ok"] is True, f"retry of seq 1 through {lead}: {first}"
        i1 = first["index"]
        writer = dealer(ctx, cluster.client_addr(lead))
        t0 = time.monotonic()
        acks = write_pipelined(writer, range(2, N + 1), timeout=30.0)
        wrote_in = time.monotonic() - t0
        last = max(r["index"] for r in acks.values())
        assert last > i1 + N - 2, (i1, last)

        # 3. The follower wakes, reads the old copy and forwards it to the leader.
        cluster.procs[follower].send_signal(signal.SIGCONT)
        stopped = False
        late = None
        if old.poll(10_000):
            late = msgpack.unpackb(old.recv(), raw=False)

        # 4. Whatever the late copy added, every member has applied it all.
        target = max(last, late["index"] if late and late.get("ok") else 0)
        target = max(target, wait_status(cluster, lead)["commit_index"])
        cluster.wait_applied(target, timeout=15.0)
    finally:
        if stopped:
            cluster.procs[follower].send_signal(signal.SIGCONT)
        for s in (old, writer):
            if s is not None:
                s.close()

    for id in cluster.ids:
        entries = cluster.entries(id)
        records = [e for e in entries if e["kind"] == "record"]
        at = [e["index"] for e in records if e["value"] == value(1)]
        assert at == [i1], (
            f"{id}: {value(1)!r} is a committed record at {at}, expected once at {i1} "
            f"(late reply on the old DEALER: {late}; writer reached index {last} in {wrote_in:.1f}s)"
        )
        counts = Counter(e["value"] for e in records)
        twice = sorted(v for v, n in counts.items() if n > 1)
        assert not twice, f"{id}: applied more than once: {twice[:10]}"
        missing = [s for s in range(1, N + 1) if counts[value(s)] != 1]
        assert not missing, f"{id}: acknowledged seqs missing from the log: {missing[:10]}"

    assert late is not None, f"{follower} never answered the late copy within 10s of waking"
    same = late.get("ok") is True and late.get("index") == i1
    refused = late.get("ok") is False and late.get("error") == "stale"
    assert same or refused, (
        f"the late copy was answered {late}: expected ok at the first attempt's index {i1} or error 'stale'"
    )
