"""cruise.api: request validation and reply builders (contract section 4).

REQ vs DEALER does not matter here: the member hands decode_request the body frames only.
"""

from __future__ import annotations

import msgpack
import pytest

from cruise import api
from cruise.api import (
    ENTRIES_DEFAULT_LIMIT,
    ENTRIES_MAX_LIMIT,
    AddMember,
    Entries,
    Health,
    PromoteMember,
    Query,
    ReadIndexReq,
    Record,
    RemoveMember,
    Status,
    TransferLeader,
    decode_reply,
    decode_request,
    encode,
    encode_request,
    entry_to_wire,
    error,
    ok,
    raise_for_reply,
)
from cruise.config import check_address, check_member_id
from cruise.errors import BAD_REQUEST, CODES, COMPACTED, TOO_LARGE, UNAVAILABLE, CruiseError

pytestmark = pytest.mark.timeout(30)

LIMIT = 1024
MEMBER = {
    "id": "n4",
    "raft": "tcp://127.0.0.1:7104",
    "client": "tcp://127.0.0.1:7204",
    "publish": "ipc:///tmp/n4",
}


def pack(obj) -> bytes:
    return msgpack.packb(obj)


def decode(obj, limit: int = LIMIT):
    return decode_request([pack(obj)], limit)


def refused(frames: list[bytes], limit: int = LIMIT) -> CruiseError:
    with pytest.raises(CruiseError) as e:
        decode_request(frames, limit)
    return e.value


# -- good requests of every op -------------------------------------------------------------------

GOOD = [
    ({"op": "record", "value": 1}, Record(1, None, None)),
    ({"op": "record", "value": None}, Record(None)),
    ({"op": "record", "value": {"put": "k", "value": [1, 2]}}, Record({"put": "k", "value": [1, 2]})),
    ({"op": "record", "value": b"\x00\xff"}, Record(b"\x00\xff")),
    ({"op": "record", "value": "x", "client": "c1", "seq": 7}, Record("x", "c1", 7)),
    ({"op": "record", "value": "x", "client": None, "seq": None}, Record("x")),
    ({"op": "record", "value": "x", "future_field": 1}, Record("x")),
    ({"op": "query", "query": {"get": "k"}}, Query({"get": "k"})),
    ({"op": "query", "query": None}, Query(None)),
    ({"op": "status"}, Status()),
    ({"op": "health"}, Health()),
    ({"op": "status", "verbose": True}, Status()),
    ({"op": "entries", "from": 0}, Entries(0, ENTRIES_DEFAULT_LIMIT)),
    ({"op": "entries", "from": 5, "limit": 3}, Entries(5, 3)),
    ({"op": "entries", "from": 5, "limit": None}, Entries(5, ENTRIES_DEFAULT_LIMIT)),
    ({"op": "entries", "from": 1, "limit": 10**9}, Entries(1, ENTRIES_MAX_LIMIT)),
    ({"op": "read_index"}, ReadIndexReq()),
    ({"op": "add_member", "member": MEMBER}, AddMember(MEMBER)),
    ({"op": "add_member", "member": {**MEMBER, "voter": True}}, AddMember(MEMBER)),
    ({"op": "add_member", "member": MEMBER, "learner": True}, AddMember(MEMBER, True)),
    ({"op": "remove_member", "id": "n2"}, RemoveMember("n2")),
    ({"op": "promote_member", "id": "n2"}, PromoteMember("n2")),
    ({"op": "transfer_leader", "to": "n3"}, TransferLeader("n3")),
]


@pytest.mark.parametrize(("msg", "expected"), GOOD, ids=[f"{m['op']}-{i}" for i, (m, _) in enumerate(GOOD)])
def test_good_request_decodes_to_its_dataclass(msg, expected):
    got = decode(msg)
    assert type(got) is type(expected)
    assert got == expected


def test_every_op_has_a_good_case():
    assert {m["op"] for m, _ in GOOD} == set(api.OPS)


def test_add_member_keeps_only_the_four_fields():
    req = decode({"op": "add_member", "member": {**MEMBER, "extra": [1]}})
    assert req.member == MEMBER
    assert req.id == "n4"


def test_requests_are_frozen():
    req = decode({"op": "record", "value": 1})
    with pytest.raises(AttributeError):
        req.value = 2


def test_frames_may_be_any_buffer():
    assert decode_request([memoryview(pack({"op": "status"}))], LIMIT) == Status()


# -- bad frames ----------------------------------------------------------------------------------

BAD = [
    # (name, frames, code, words in the message)
    ("no frame", [], BAD_REQUEST, "expected one frame, got 0"),
    ("extra frame", [pack({"op": "status"}), b""], BAD_REQUEST, "expected one frame, got 2"),
    ("garbage bytes", [b"\xc1garbage"], BAD_REQUEST, "not a msgpack"),
    ("empty frame", [b""], BAD_REQUEST, "not a msgpack"),
    ("truncated map", [pack({"op": "record", "value": "abcdef"})[:-2]], BAD_REQUEST, "not a msgpack"),
    ("trailing bytes", [pack({"op": "status"}) + b"\x00"], BAD_REQUEST, "not a msgpack"),
    ("bad utf-8 string", [b"\x81\xa2op\xa2\xff\xfe"], BAD_REQUEST, "not a msgpack"),
    ("unhashable map key", [b"\x81\x90\x01"], BAD_REQUEST, "not a msgpack"),
    ("an int", [pack(3)], BAD_REQUEST, "expected a msgpack map, got int"),
    ("a list", [pack(["record", 1])], BAD_REQUEST, "got array"),
    ("a string", [pack("status")], BAD_REQUEST, "got string"),
    ("nil", [pack(None)], BAD_REQUEST, "got nil"),
    ("missing op", [pack({"value": 1})], BAD_REQUEST, "missing field 'op'"),
    ("op not a string", [pack({"op": 1})], BAD_REQUEST, "'op' must be a string, got int"),
    ("op as binary", [pack({"op": b"status"})], BAD_REQUEST, "'op' must be a string, got binary"),
    ("unknown op", [pack({"op": "fly"})], BAD_REQUEST, "unknown op 'fly'"),
    ("unknown long op", [pack({"op": "x" * 10000})], BAD_REQUEST, "unknown op 'xxxx"),
    ("deeply nested", [b"\x91" * 5000 + b"\x00"], BAD_REQUEST, "not a msgpack"),
    ("record without value", [pack({"op": "record"})], BAD_REQUEST, "missing field 'value'"),
    ("seq without client", [pack({"op": "record", "value": 1, "seq": 1})], BAD_REQUEST, "go together"),
    ("client without seq", [pack({"op": "record", "value": 1, "client": "c"})], BAD_REQUEST, "go together"),
    ("client an int", [pack({"op": "record", "value": 1, "client": 5, "seq": 1})], BAD_REQUEST, "'client' must be"),
    ("client empty", [pack({"op": "record", "value": 1, "client": "", "seq": 1})], BAD_REQUEST, "'client' must be"),
    ("seq a string", [pack({"op": "record", "value": 1, "client": "c", "seq": "1"})], BAD_REQUEST, "'seq' must be an int"),
    ("seq a bool", [pack({"op": "record", "value": 1, "client": "c", "seq": True})], BAD_REQUEST, "'seq' must be an int, got bool"),
    ("seq a float", [pack({"op": "record", "value": 1, "client": "c", "seq": 1.0})], BAD_REQUEST, "'seq' must be an int"),
    ("query without query", [pack({"op": "query"})], BAD_REQUEST, "missing field 'query'"),
    ("entries without from", [pack({"op": "entries"})], BAD_REQUEST, "missing field 'from'"),
    ("entries from negative", [pack({"op": "entries", "from": -1})], BAD_REQUEST, "'from' must be an int >= 0, got -1"),
    ("entries from a string", [pack({"op": "entries", "from": "1"})], BAD_REQUEST, "'from' must be an int"),
    ("entries from a bool", [pack({"op": "entries", "from": True})], BAD_REQUEST, "got True"),
    ("entries from a float", [pack({"op": "entries", "from": 1.5})], BAD_REQUEST, "'from' must be an int"),
    ("entries limit zero", [pack({"op": "entries", "from": 1, "limit": 0})], BAD_REQUEST, "'limit' must be an int >= 1"),
    ("entries limit a bool", [pack({"op": "entries", "from": 1, "limit": True})], BAD_REQUEST, "'limit'"),
    ("add_member without member", [pack({"op": "add_member"})], BAD_REQUEST, "missing field 'member'"),
    ("add_member member a list", [pack({"op": "add_member", "member": ["n4"]})], BAD_REQUEST, "must be a map, got array"),
    ("add_member missing publish", [pack({"op": "add_member", "member": {k: v for k, v in MEMBER.items() if k != "publish"}})], BAD_REQUEST, "member.publish missing"),
    ("add_member id an int", [pack({"op": "add_member", "member": {**MEMBER, "id": 4}})], BAD_REQUEST, "member.id must be a string"),
    ("add_member id a path", [pack({"op": "add_member", "member": {**MEMBER, "id": "../x"}})], BAD_REQUEST, "member.id"),
    ("add_member bad address", [pack({"op": "add_member", "member": {**MEMBER, "raft": "localhost:7104"}})], BAD_REQUEST, "member.raft"),
    ("add_member wildcard", [pack({"op": "add_member", "member": {**MEMBER, "client": "tcp://*:7204"}})], BAD_REQUEST, "member.client"),
    ("add_member same addresses", [pack({"op": "add_member", "member": {**MEMBER, "client": MEMBER["raft"]}})], BAD_REQUEST, "three different"),
    ("remove_member without id", [pack({"op": "remove_member"})], BAD_REQUEST, "field 'id' missing"),
    ("remove_member id an int", [pack({"op": "remove_member", "id": 2})], BAD_REQUEST, "'id' must be a non-empty string, got 2"),
    ("promote_member without id", [pack({"op": "promote_member"})], BAD_REQUEST, "field 'id' missing"),
    ("add_member learner not a bool", [pack({"op": "add_member", "member": MEMBER, "learner": "yes"})], BAD_REQUEST, "'learner' must be a boolean"),
    ("transfer_leader to empty", [pack({"op": "transfer_leader", "to": ""})], BAD_REQUEST, "'to' must be a non-empty string"),
    ("value over limit", [pack({"op": "record", "value": "x" * (LIMIT + 1)})], TOO_LARGE, "over the limit of 1024"),
    ("binary value over limit", [pack({"op": "record", "value": b"x" * 5000})], TOO_LARGE, "5003 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("frames", "code", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request_gets_the_right_code(frames, code, words):
    err = refused(frames)
    assert err.code == code
    assert words in err.message
    assert len(err.message) < 300  # never echoes a large request back
    reply = err.reply()
    assert reply["ok"] is False
    assert reply["error"] == code
    # The reply itself always encodes and decodes (the member keeps serving).
    assert decode_reply(encode(reply)) == reply


def test_value_at_the_limit_is_accepted_and_measured_exactly():
    # The frame is over the limit, the value alone is exactly at it: accepted.
    value = "x" * (LIMIT - 3)  # str8/str16 header: 3 bytes for this length
    assert len(msgpack.packb(value)) == LIMIT
    frame = pack({"op": "record", "value": value, "client": "c", "seq": 1})
    assert len(frame) > LIMIT
    assert decode_request([frame], LIMIT) == Record(value, "c", 1)
    err = refused([pack({"op": "record", "value": value + "x"})])
    assert err.code == TOO_LARGE


def test_too_large_only_for_record_values():
    # A large query is not a record value; the socket's MAXMSGSIZE bounds frames.
    assert decode({"op": "query", "query": "q" * 5000}) == Query("q" * 5000)


# -- replies -------------------------------------------------------------------------------------


def test_ok_and_error_builders():
    assert ok(index=3, term=1, result=None) == {"ok": True, "index": 3, "term": 1, "result": None}
    assert ok() == {"ok": True}
    assert error(UNAVAILABLE, "no leader", leader="n2") == {
        "ok": False,
        "error": "unavailable",
        "message": "no leader",
        "leader": "n2",
    }
    with pytest.raises(ValueError):
        error("oops", "not a code")
    for code in CODES:
        assert error(code, "m")["error"] == code


def test_error_builder_matches_cruise_error_reply():
    assert CruiseError(COMPACTED, "gone", snapshot_index=9).reply() == error(
        COMPACTED, "gone", snapshot_index=9
    )


def test_encode_roundtrip_and_entry_to_wire():
    entry = entry_to_wire(4, 2, "record", {"a": b"\x00"})
    assert entry == {"index": 4, "term": 2, "kind": "record", "value": {"a": b"\x00"}}
    reply = ok(entries=[entry])
    assert msgpack.unpackb(encode(reply)) == reply
    assert decode_reply(encode(reply)) == reply


def test_encode_request_roundtrips_through_decode_request():
    assert decode_request([encode_request("record", value=[1], client="c", seq=2)], LIMIT) == Record(
        [1], "c", 2
    )
    assert decode_request([encode_request("entries", from_=7, limit=2)], LIMIT) == Entries(7, 2)
    assert decode_request([encode_request("add_member", member=MEMBER)], LIMIT) == AddMember(MEMBER)
    assert decode_request([encode_request("status")], LIMIT) is decode_request(
        [encode_request("status")], LIMIT
    )
    with pytest.raises(ValueError):
        encode_request("fly")


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",
        msgpack.packb([1]),
        msgpack.packb({"result": 1}),
        msgpack.packb({"ok": 1}),
        msgpack.packb({"ok": False}),
    ],
)
def test_decode_reply_refuses_malformed(frame):
    with pytest.raises(CruiseError) as e:
        decode_reply(frame)
    assert e.value.code == BAD_REQUEST
    assert "malformed reply" in e.value.message


def test_raise_for_reply():
    good = ok(index=1)
    assert raise_for_reply(good) is good
    with pytest.raises(CruiseError) as e:
        raise_for_reply(error(UNAVAILABLE, "no quorum", leader="n3"))
    assert (e.value.code, e.value.message, e.value.extra) == (UNAVAILABLE, "no quorum", {"leader": "n3"})
    with pytest.raises(CruiseError) as e:
        raise_for_reply(decode_reply(encode(error(COMPACTED, "compacted", snapshot_index=40))))
    assert e.value.extra == {"snapshot_index": 40}


# -- api and config agree on ids and addresses ---------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:7101", "tcp://[::1]:1", "tcp://host-a:65535", "ipc:///tmp/a", "inproc://a",
     "tcp://h", "tcp://h:0", "tcp://h:65536", "tcp://*:1", "tcp://h:*", "tcp://h :1", "ipc://", "inproc://",
     "h:1", "udp://h:1", ""],
)  # fmt: skip
def test_add_member_address_rule_matches_config(address):
    msg = {"op": "add_member", "member": {**MEMBER, "raft": address}}
    accepted_by_api = True
    try:
        decode(msg)
    except CruiseError:
        accepted_by_api = False
    assert accepted_by_api == (check_address(address) is None)


@pytest.mark.parametrize("member_id", ["n1", "a.b-c_d", "9", "", "-x", ".", "a/b", "a b", "é"])
def test_add_member_id_rule_matches_config(member_id):
    msg = {"op": "add_member", "member": {**MEMBER, "id": member_id}}
    accepted_by_api = True
    try:
        decode(msg)
    except CruiseError:
        accepted_by_api = False
    assert accepted_by_api == (check_member_id(member_id) is None)


def test_fast_record_builds_a_complete_frozen_record():
    req = decode({"op": "record", "value": [1], "client": "c", "seq": 3})
    assert req == Record([1], "c", 3)
    assert repr(req) == repr(Record([1], "c", 3))
    assert Record.__slots__ == ("value", "client", "seq")  # _fast_record sets exactly these
    with pytest.raises(AttributeError):
        req.seq = 4
