"""Socket factories: defaults, bind errors, and what an absent peer costs."""

import errno
import os
import pickle
import sys
import time

import pytest
import zmq

from brokerless import BindError, sockets
from brokerless.testing import inproc_pair, loopback_pair, recv_within, send_within

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def opt(sock, name):
    return sock.getsockopt(getattr(zmq, name))


# -- defaults -------------------------------------------------------------------------------


def test_peer_socket_defaults(ctx):
    addr = sockets.free_tcp_address()
    made = [sockets.router(ctx, addr), sockets.dealer(ctx, addr), sockets.req(ctx, addr)]
    for s in made:
        assert opt(s, "LINGER") == 0
        assert opt(s, "SNDHWM") == sockets.PEER_HWM == 10_000
        assert opt(s, "RCVHWM") == sockets.PEER_HWM
        assert opt(s, "RECONNECT_IVL") == 100
        assert opt(s, "RECONNECT_IVL_MAX") == 1000
    assert opt(made[1], "IMMEDIATE") == 1
    for s in made:
        s.close()


def test_pub_sub_defaults(ctx):
    addr = sockets.free_tcp_address()
    p = sockets.pub(ctx, addr)
    s = sockets.sub(ctx, addr)
    for sock in (p, s):
        assert opt(sock, "LINGER") == 0
        assert opt(sock, "SNDHWM") == sockets.PUB_HWM == 100_000
        assert opt(sock, "RCVHWM") == sockets.PUB_HWM
    p.close()
    s.close()


def test_options_are_configurable(ctx):
    r = sockets.router(ctx, hwm=7, linger=250, identity="me")
    d = sockets.dealer(ctx, identity=b"peer", immediate=False, hwm=3)
    assert opt(r, "SNDHWM") == 7 and opt(r, "LINGER") == 250
    assert opt(r, "IDENTITY") == b"me"
    assert opt(d, "IDENTITY") == b"peer" and opt(d, "IMMEDIATE") == 0 and opt(d, "RCVHWM") == 3
    r.close()
    d.close()


def test_bad_identity_refused(ctx):
    with pytest.raises(ValueError):
        sockets.dealer(ctx, identity=b"\x00reserved")
    with pytest.raises(ValueError):
        sockets.dealer(ctx, identity=b"")


# -- binding --------------------------------------------------------------------------------


def test_bind_error_on_port_in_use(ctx):
    first = sockets.router(ctx)
    _port, address = sockets.bind_to_random_port(first)
    with pytest.raises(BindError) as info:
        sockets.router(ctx, address)
    err = info.value
    assert isinstance(err, OSError)
    assert err.address == address
    assert err.errno == errno.EADDRINUSE
    assert "in use" in err.reason.lower()
    assert str(err) == f"cannot bind {address}: {err.reason}"
    again = pickle.loads(pickle.dumps(err))
    assert (again.address, again.reason, again.errno) == (err.address, err.reason, err.errno)
    with pytest.raises(BindError):
        sockets.pub(ctx, address)
    first.close()


def test_bind_error_on_bad_endpoint(ctx):
    with pytest.raises(BindError) as info:
        sockets.router(ctx, "tcp://127.0.0.1:notaport")
    assert info.value.address == "tcp://127.0.0.1:notaport"


def test_bind_to_random_port(ctx):
    s = ctx.socket(zmq.ROUTER)
    port, address = sockets.bind_to_random_port(s)
    assert address == f"tcp://127.0.0.1:{port}"
    assert s.getsockopt_string(zmq.LAST_ENDPOINT) == address
    s.close(0)


def test_free_tcp_address_is_bindable(ctx):
    address = sockets.free_tcp_address()
    assert address.startswith("tcp://127.0.0.1:")
    s = sockets.router(ctx, address)
    s.close()


def test_router_binds_several_addresses(ctx):
    a1, a2 = sockets.free_tcp_address(), sockets.free_tcp_address()
    r = sockets.router(ctx, [a1, a2])
    c = sockets.req(ctx, a2)
    c.send(b"hi", zmq.NOBLOCK)
    assert recv_within(r, 5)[-1] == b"hi"
    r.close()
    c.close()


# -- absent peers ---------------------------------------------------------------------------


def test_dealer_to_absent_peer_raises_again_and_queues_nothing(ctx):
    """IMMEDIATE=1: with no connected peer, send(NOBLOCK) raises zmq.Again at once.

    Nothing is queued, so when the peer finally comes up it receives none of the attempts.
    """
    address = sockets.free_tcp_address()  # nobody listens here (yet)
    d = sockets.dealer(ctx, address, hwm=5)
    start = time.monotonic()
    for i in range(1000):
        with pytest.raises(zmq.Again):
            d.send(b"lost %d" % i, zmq.NOBLOCK)
    assert time.monotonic() - start < 2.0  # never blocked

    r = sockets.router(ctx, address)
    send_within(d, [b"first delivered"], 5)  # succeeds once the connection is up
    _ident, body = recv_within(r, 5)
    assert body == b"first delivered"  # no "lost" message was queued
    d.close()
    r.close()


def test_router_mandatory_unknown_peer(ctx):
    strict = sockets.router(ctx, mandatory=True)
    with pytest.raises(zmq.ZMQError) as info:
        strict.send_multipart([b"nobody", b"x"], zmq.NOBLOCK)
    assert info.value.errno == zmq.EHOSTUNREACH
    lax = sockets.router(ctx)
    lax.send_multipart([b"nobody", b"x"], zmq.NOBLOCK)  # silently dropped
    strict.close()
    lax.close()


def test_router_to_named_dealer(ctx):
    _port, address = sockets.bind_to_random_port(r := sockets.router(ctx, mandatory=True))
    d = sockets.dealer(ctx, address, identity=b"n2")
    send_within(d, [b"hello"], 5)
    assert recv_within(r, 5) == [b"n2", b"hello"]
    r.send_multipart([b"n2", b"back"])
    assert recv_within(d, 5) == [b"back"]
    r.close()
    d.close()


# -- pub/sub --------------------------------------------------------------------------------


def test_pub_sub_topics(ctx):
    address = sockets.free_tcp_address()
    p = sockets.pub(ctx, address)
    s = sockets.sub(ctx, [address], topics=["entry"])
    deadline = time.monotonic() + 5
    while True:  # slow joiner: publish until the subscription has reached the publisher
        p.send_multipart([b"other", b"-"])
        p.send_multipart([b"entry", b"1"])
        if s.poll(20):
            break
        assert time.monotonic() < deadline, "subscription never arrived"
    assert recv_within(s, 1) == [b"entry", b"1"]  # "other" was filtered out
    p.close()
    s.close()


# -- testing helpers ------------------------------------------------------------------------


@pytest.mark.parametrize("make", [loopback_pair, inproc_pair])
def test_pairs(ctx, make):
    a, b = make(ctx)
    assert opt(a, "LINGER") == 0 and opt(b, "LINGER") == 0
    b.send(b"ping", zmq.NOBLOCK)
    assert recv_within(a, 5) == [b"ping"]
    a.send(b"pong", zmq.NOBLOCK)
    assert recv_within(b, 5) == [b"pong"]
    a.close()
    b.close()


def test_recv_within_times_out(ctx):
    a, b = inproc_pair(ctx)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        recv_within(a, 0.05)
    assert time.monotonic() - start < 1.0
    a.close()
    b.close()


def test_free_tcp_addresses_are_distinct_bindable_and_below_the_ephemeral_range(ctx):
    from brokerless.testing import free_tcp_addresses

    addrs = free_tcp_addresses(60)
    assert len(set(addrs)) == 60
    ports = [int(a.rsplit(":", 1)[1]) for a in addrs]
    assert all(20000 <= p < 32000 for p in ports)
    socks = [sockets.router(ctx, a) for a in addrs[:5]]  # they bind
    for s in socks:
        s.close()


def test_send_frames_and_recv_frames_carry_a_multipart_message(ctx):
    from brokerless.sockets import recv_frames, send_frames
    from brokerless.testing import inproc_pair, recv_within

    a, b = inproc_pair(ctx, zmq.DEALER, zmq.DEALER)
    send_frames(a, [b"id", b"", b"body"])
    assert recv_within(b, 2) == [b"id", b"", b"body"]
    send_frames(a, [b"x", b"y"])
    assert b.poll(2000)
    assert recv_frames(b) == [b"x", b"y"]
    with pytest.raises(zmq.Again):
        recv_frames(b)
    a.close()
    b.close()


def test_drain_returns_every_waiting_message_in_order_up_to_the_limit(ctx):
    from brokerless.sockets import drain, readable, send_frames

    a, b = inproc_pair(ctx, zmq.DEALER, zmq.DEALER)
    assert not readable(b)
    assert drain(b, 10) == []  # nothing waiting: no exception, nothing read
    send_frames(a, [b"one"])
    assert b.poll(2000) and readable(b)
    assert drain(b, 10) == [[b"one"]] and not readable(b)
    for n in (1, 2, 7):  # one and two messages end on EVENTS; seven go on to zmq.Again
        for i in range(n):
            send_frames(a, [b"id%d" % i, b"", b"body%d" % i])
        assert b.poll(2000)
        assert drain(b, 100) == [[b"id%d" % i, b"", b"body%d" % i] for i in range(n)]
        assert drain(b, 100) == []
    for i in range(5):
        send_frames(a, [b"m%d" % i])
    assert drain(b, 3) == [[b"m0"], [b"m1"], [b"m2"]]
    assert drain(b, 3) == [[b"m3"], [b"m4"]]  # the rest stays queued for the next drain
    a.close()
    b.close()


def _io_thread_policies() -> dict[str, int]:
    """Scheduling policy of every thread of this process whose name is a ZeroMQ I/O thread's."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            name = f.read().strip()
        if name.startswith("ZMQbg/IO"):
            out[tid] = os.sched_getscheduler(int(tid))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread policies read from /proc")
def test_context_runs_its_io_thread_as_batch_and_leaves_the_caller_alone():
    before = set(_io_thread_policies())
    caller = os.sched_getscheduler(0)
    ctx = sockets.context()
    try:
        s = sockets.dealer(ctx, "tcp://127.0.0.1:1")  # the first socket starts the I/O thread
        deadline = time.monotonic() + 5
        new = {}
        while not new and time.monotonic() < deadline:
            new = {t: p for t, p in _io_thread_policies().items() if t not in before}
            time.sleep(0.01)
        assert new, "no I/O thread appeared"
        assert set(new.values()) == {os.SCHED_BATCH}
        assert os.sched_getscheduler(0) == caller  # the probe thread changed only itself
        s.close()
    finally:
        ctx.destroy(linger=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread policies read from /proc")
def test_context_without_batch_io_keeps_the_default_policy():
    before = set(_io_thread_policies())
    ctx = sockets.context(batch_io=False)
    try:
        s = sockets.dealer(ctx, "tcp://127.0.0.1:1")
        deadline = time.monotonic() + 5
        new = {}
        while not new and time.monotonic() < deadline:
            new = {t: p for t, p in _io_thread_policies().items() if t not in before}
            time.sleep(0.01)
        assert set(new.values()) == {os.SCHED_OTHER}
        s.close()
    finally:
        ctx.destroy(linger=0)
