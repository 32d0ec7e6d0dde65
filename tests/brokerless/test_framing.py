"""Frames from the network are untrusted: every failure is a FrameError with a reason."""

import pickle
import threading
import time

import pytest
import zmq

from brokerless import FrameError, pack, sockets, split_envelope, unpack, unpack_map
from brokerless.testing import recv_within, send_within

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -1,
        2**64 - 1,
        1.5,
        "héllo",
        b"\x00\xff",
        [1, [2, [3]]],
        {"op": "record", "value": {"nested": [b"x", None]}},
        {1: "int key", b"k": "bytes key"},
    ],
)
def test_roundtrip(value):
    assert unpack(pack(value)) == value


def test_bytes_stay_bytes_and_str_stays_str():
    out = unpack(pack({"s": "text", "b": b"text"}))
    assert type(out["s"]) is str
    assert type(out["b"]) is bytes


def test_tuples_come_back_as_lists():
    assert unpack(pack((1, 2))) == [1, 2]


@pytest.mark.parametrize(
    "garbage",
    [
        b"",  # nothing at all
        b"\xc1",  # the one byte msgpack never uses
        pack({"a": 1})[:-1],  # truncated
        b"\xa2\xff\xfe",  # str with invalid UTF-8
        b"\x81\x90\x01",  # map whose key is an array (unhashable)
        b"\x91" * 100_000,  # nesting too deep
        b"\xdd\xff\xff\xff\xff",  # array header claiming 4 billion items
        b"\xc6\xff\xff\xff\xffxx",  # bin header claiming 4 GiB
    ],
    ids=["empty", "c1", "truncated", "bad-utf8", "unhashable-key", "deep", "huge-array", "huge-bin"],
)
def test_garbage_is_frame_error(garbage):
    with pytest.raises(FrameError) as info:
        unpack(garbage)
    assert info.value.reason == "invalid msgpack"
    assert isinstance(info.value, ValueError)


def test_trailing_bytes_are_refused():
    with pytest.raises(FrameError) as info:
        unpack(pack(1) + pack(2))
    assert info.value.reason == "trailing bytes"


def test_size_limit_is_checked_before_decoding():
    frame = pack(b"x" * 100)
    assert unpack(frame, max_bytes=len(frame)) == b"x" * 100
    with pytest.raises(FrameError) as info:
        unpack(frame, max_bytes=len(frame) - 1)
    assert info.value.reason == "too large"
    # Garbage over the limit is refused for its size, so decoding never started.
    with pytest.raises(FrameError) as info:
        unpack(b"\xc1" * 10, max_bytes=5)
    assert info.value.reason == "too large"


def test_not_bytes():
    with pytest.raises(FrameError) as info:
        unpack("a string")
    assert info.value.reason == "not bytes"


def test_memoryview_and_bytearray_accepted():
    frame = pack({"a": 1})
    assert unpack(memoryview(frame)) == {"a": 1}
    assert unpack(bytearray(frame)) == {"a": 1}


@pytest.mark.parametrize("value", [1, "map", [1, 2], None, b"\x80"])
def test_unpack_map_refuses_non_maps(value):
    with pytest.raises(FrameError) as info:
        unpack_map(pack(value))
    assert info.value.reason == "not a map"


def test_unpack_map_accepts_map_and_checks_limits():
    assert unpack_map(pack({"op": "status"})) == {"op": "status"}
    with pytest.raises(FrameError) as info:
        unpack_map(pack({"v": b"x" * 50}), max_bytes=10)
    assert info.value.reason == "too large"
    with pytest.raises(FrameError) as info:
        unpack_map(b"\xc1")
    assert info.value.reason == "invalid msgpack"


def test_frame_error_carries_reason_and_pickles():
    err = FrameError("not a map", "int")
    assert str(err) == "not a map: int"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.detail) == ("not a map", "int")


def test_pack_refuses_unknown_types():
    with pytest.raises(TypeError):
        pack(object())
    assert pack({"ok": 1}) == pack({"ok": 1})  # the packer recovered


class _YieldingDict(dict):
    """A dict whose items() lets other threads run mid-pack (as any Python-level hook can)."""

    def items(self):
        for k, v in super().items():
            time.sleep(0)
            yield k, v


def test_pack_is_thread_safe():
    values = [_YieldingDict({f"k{i}": [t] * 20 for i in range(20)}) for t in range(4)]
    expected = [pack(dict(v)) for v in values]
    bad = []

    def work(t):
        for _ in range(100):
            if pack(values[t]) != expected[t]:
                bad.append(t)
                return

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert not bad


# -- split_envelope -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, envelope, body",
    [
        ([b"id", b"", b"req"], [b"id", b""], [b"req"]),  # REQ peer
        ([b"id", b"msg"], [b"id"], [b"msg"]),  # DEALER peer
        ([b"id", b"m1", b"m2"], [b"id"], [b"m1", b"m2"]),  # DEALER, several body frames
        ([b"id", b"", b"m1", b"m2"], [b"id", b""], [b"m1", b"m2"]),  # DEALER emulating REQ
        ([b"id2", b"id1", b"", b"req"], [b"id2", b"id1", b""], [b"req"]),  # through a proxy
        ([b"id"], [b"id"], []),  # nothing after the identity
        ([b"id", b""], [b"id", b""], []),  # REQ-shaped, empty body
        ([b"id", b"m", b"", b"x"], [b"id", b"m", b""], [b"x"]),  # first empty frame wins
    ],
)
def test_split_envelope_shapes(frames, envelope, body):
    assert split_envelope(frames) == (envelope, body)


def _split_by_the_rule(frames):
    """The documented rule, written out: up to and including the first empty frame after frame 0."""
    for i in range(1, len(frames)):
        if frames[i] == b"":
            return list(frames[: i + 1]), list(frames[i + 1 :])
    return list(frames[:1]), list(frames[1:])


def test_split_envelope_follows_the_rule_for_every_shape():
    # Every message of 1-6 frames, each frame empty or not: the fast paths change nothing.
    for n in range(1, 7):
        for mask in range(1 << n):
            frames = [b"" if mask >> i & 1 else b"f%d" % i for i in range(n)]
            assert split_envelope(frames) == _split_by_the_rule(frames), frames
            got = split_envelope(tuple(frames))
            assert got == _split_by_the_rule(frames) and all(type(p) is list for p in got), frames


def test_split_envelope_empty_message():
    with pytest.raises(FrameError) as info:
        split_envelope([])
    assert info.value.reason == "empty message"


def test_router_replies_reach_req_and_dealer_clients():
    """A ROUTER server that echoes the envelope answers REQ and DEALER clients alike."""
    ctx = zmq.Context()
    server = sockets.router(ctx)
    try:
        _port, address = sockets.bind_to_random_port(server)
        req_client = sockets.req(ctx, address)
        dealer_client = sockets.dealer(ctx, address, identity=b"dealer-1")
        try:
            req_client.send(pack({"op": "status", "from": "req"}), zmq.NOBLOCK)
            # IMMEDIATE: the dealer refuses to send until connected; send_within waits (bounded).
            send_within(dealer_client, [pack({"op": "status", "from": "dealer"})], 5)

            seen = {}
            for _ in range(2):
                envelope, body = split_envelope(recv_within(server, 5))
                assert len(body) == 1
                request = unpack_map(body[0])
                seen[request["from"]] = envelope
                server.send_multipart(envelope + [pack({"ok": True, "to": request["from"]})])

            assert seen["req"][-1] == b"" and len(seen["req"]) == 2
            assert seen["dealer"] == [b"dealer-1"]
            assert unpack(recv_within(req_client, 5)[0]) == {"ok": True, "to": "req"}
            assert recv_within(dealer_client, 5) == [pack({"ok": True, "to": "dealer"})]
        finally:
            req_client.close(0)
            dealer_client.close(0)
    finally:
        server.close(0)
        ctx.term()
