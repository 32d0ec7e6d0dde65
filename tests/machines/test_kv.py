"""The built-in ``kv`` state machine: apply and query tables, bad input, snapshot/restore."""

from __future__ import annotations

import msgpack
import pytest

import cruise.machines.kv as kv_mod
from cruise.fsm import BadQuery, StateMachine
from cruise.machines import KVMachine

# (records applied in order, their results)
APPLY_TABLE = [
    ("put returns nil", [{"put": "a", "value": 1}], [None]),
    ("put overwrites", [{"put": "a", "value": 1}, {"put": "a", "value": "x"}], [None, None]),
    ("delete of a present key", [{"put": "a", "value": 1}, {"delete": "a"}], [None, True]),
    ("delete of an absent key", [{"delete": "a"}], [False]),
    ("delete twice", [{"put": "a", "value": 1}, {"delete": "a"}, {"delete": "a"}], [None, True, False]),
    ("cas expect nil on an absent key", [{"cas": "a", "expect": None, "value": 1}], [True]),
    (
        "cas expect nil on a present key",
        [{"put": "a", "value": 1}, {"cas": "a", "expect": None, "value": 2}],
        [None, False],
    ),
    (
        "cas expect nil on a key holding nil",
        [{"put": "a", "value": None}, {"cas": "a", "expect": None, "value": 2}],
        [None, True],
    ),
    (
        "cas with the present value",
        [{"put": "a", "value": 1}, {"cas": "a", "expect": 1, "value": 2}],
        [None, True],
    ),
    (
        "cas with a mismatch",
        [{"put": "a", "value": 1}, {"cas": "a", "expect": 3, "value": 2}],
        [None, False],
    ),
    ("cas expecting a value on an absent key", [{"cas": "a", "expect": 1, "value": 2}], [False]),
    (
        "cas: 1 is not 1.0 nor true",
        [
            {"put": "a", "value": 1},
            {"cas": "a", "expect": 1.0, "value": 2},
            {"cas": "a", "expect": True, "value": 2},
        ],
        [None, False, False],
    ),
    (
        "cas compares maps regardless of key order, arrays by content",
        [
            {"put": "a", "value": {"x": [1, 2], "y": b"\x00"}},
            {"cas": "a", "expect": {"y": b"\x00", "x": (1, 2)}, "value": "swapped"},
        ],
        [None, True],
    ),
    (
        "cas: a string is not the same bytes",
        [{"put": "a", "value": b"v"}, {"cas": "a", "expect": "v", "value": 1}],
        [None, False],
    ),
]

# (records applied, then query -> expected answer)
STATE_TABLE = [
    ("get of an absent key", [], {"get": "a"}, None),
    ("get after put", [{"put": "a", "value": {"n": [1, None]}}], {"get": "a"}, {"n": [1, None]}),
    ("get after delete", [{"put": "a", "value": 1}, {"delete": "a"}], {"get": "a"}, None),
    ("get after a swapping cas", [{"cas": "a", "expect": None, "value": 7}], {"get": "a"}, 7),
    (
        "get after a failed cas",
        [{"put": "a", "value": 1}, {"cas": "a", "expect": 2, "value": 7}],
        {"get": "a"},
        1,
    ),
    ("bytes values stay bytes", [{"put": "b", "value": b"\xff\x00"}], {"get": "b"}, b"\xff\x00"),
    ("a tuple is stored as msgpack's array", [{"put": "t", "value": (1, (2, 3))}], {"get": "t"}, [1, [2, 3]]),
    ("keys of an empty map", [], {"keys": ""}, []),
    (
        "keys: every key, sorted",
        [{"put": k, "value": 0} for k in ("b", "a/2", "a/1", "c", "a")],
        {"keys": ""},
        ["a", "a/1", "a/2", "b", "c"],
    ),
    (
        "keys with a prefix",
        [{"put": k, "value": 0} for k in ("b", "a/2", "a/1", "ab", "a")],
        {"keys": "a/"},
        ["a/1", "a/2"],
    ),
    ("keys with a prefix nothing has", [{"put": "a", "value": 0}], {"keys": "z"}, []),
    (
        "keys with nil means every key",
        [{"put": "b", "value": 0}, {"put": "a", "value": 0}],
        {"keys": None},
        ["a", "b"],
    ),
    ("keys leaves out deleted keys", [{"put": "a", "value": 0}, {"delete": "a"}], {"keys": ""}, []),
    ("the empty string is a key", [{"put": "", "value": 1}], {"get": ""}, 1),
]

BAD_RECORDS = [
    ("not a map", "put a 1", "must be a map, got string"),
    ("an array", ["put", "a"], "must be a map, got array"),
    ("nil", None, "must be a map, got nil"),
    ("no command", {"set": "a", "value": 1}, "names one command"),
    ("two commands", {"put": "a", "delete": "b", "value": 1}, "(got put, delete)"),
    ("a key that is not a string", {"put": 1, "value": 1}, "put: the key must be a string, got int"),
    ("a bytes key", {"delete": b"a"}, "delete: the key must be a string, got binary"),
    ("put without value", {"put": "a"}, "put: missing field 'value'"),
    ("cas without expect", {"cas": "a", "value": 1}, "cas: missing field 'expect'"),
    ("a misspelt field", {"put": "a", "vaule": 1}, "put: unknown field 'vaule'"),
    ("delete with a value", {"delete": "a", "value": 1}, "delete: unknown field 'value'"),
]

BAD_QUERIES = [
    ("not a map", "a", "got string"),
    ("an unknown query", {"scan": "a"}, 'a kv query is {"get": KEY} or {"keys": PREFIX}'),
    ("two queries", {"get": "a", "keys": ""}, "got a map of 2 fields"),
    ("a key that is not a string", {"get": 1}, "get: the key must be a string, got int"),
    ("a prefix that is not a string", {"keys": 1}, "keys: the prefix must be a string or nil"),
]


def _applied(records: list) -> tuple[KVMachine, list]:
    m = KVMachine()
    return m, [m.apply(r, i) for i, r in enumerate(records, start=1)]


@pytest.mark.parametrize("name,records,results", APPLY_TABLE, ids=[t[0] for t in APPLY_TABLE])
def test_apply_results(name, records, results):
    _, got = _applied(records)
    assert got == results
    assert [type(x) for x in got] == [type(x) for x in results]  # True, not 1


@pytest.mark.parametrize("name,records,q,answer", STATE_TABLE, ids=[t[0] for t in STATE_TABLE])
def test_queries_see_the_applied_state(name, records, q, answer):
    m, _ = _applied(records)
    assert m.query(q) == answer
    assert type(m.query(q)) is type(answer)


@pytest.mark.parametrize("name,record,message", BAD_RECORDS, ids=[t[0] for t in BAD_RECORDS])
def test_a_record_kv_does_not_understand_changes_nothing_and_says_why(name, record, message):
    m, _ = _applied([{"put": "a", "value": 1}])
    before = m.snapshot()
    result = m.apply(record, 2)
    assert isinstance(result, dict) and list(result) == ["error"]
    assert message in result["error"]
    assert m.snapshot() == before
    # The same record gives the same answer on every member, whatever its Python form.
    assert KVMachine().apply(record, 2) == KVMachine().apply(record, 9)


def test_a_bad_record_reads_the_same_whether_decoded_as_list_or_tuple():
    # Peers may decode arrays as tuples, clients' requests as lists: the answer must not differ.
    assert KVMachine().apply(["put", "a"], 1) == KVMachine().apply(("put", "a"), 1)


@pytest.mark.parametrize("name,q,message", BAD_QUERIES, ids=[t[0] for t in BAD_QUERIES])
def test_a_query_kv_does_not_understand_raises_bad_query(name, q, message):
    with pytest.raises(BadQuery) as e:
        KVMachine().query(q)
    assert message in str(e.value)


def test_a_stored_value_does_not_change_with_the_callers_object():
    # An embedded Node.record hands the leader's machine the caller's own object.
    value = {"list": [1, 2]}
    m = KVMachine()
    m.apply({"put": "a", "value": value}, 1)
    value["list"].append(3)
    assert m.query({"get": "a"}) == {"list": [1, 2]}


def test_is_a_state_machine():
    assert isinstance(KVMachine(), StateMachine)


def test_snapshot_restore_round_trip():
    m, _ = _applied(
        [
            {"put": "b", "value": b"\x00\xff"},
            {"put": "a", "value": {"nested": [1, 2.5, None, True], "m": {"k": "v"}}},
            {"put": "c", "value": None},
            {"put": "d", "value": 1},
            {"delete": "d"},
            {"cas": "e", "expect": None, "value": "new"},
        ]
    )
    data = m.snapshot()
    assert isinstance(data, bytes)
    parts = msgpack.unpackb(data, raw=False)  # msgpack: an array of maps, the whole map together
    assert {k: v for p in parts for k, v in p.items()} == m.data

    other, _ = _applied([{"put": "stale", "value": 1}])
    other.restore(data)
    assert other.data == m.data
    assert other.query({"keys": ""}) == ["a", "b", "c", "e"]
    assert other.query({"get": "b"}) == b"\x00\xff"
    assert other.query({"get": "stale"}) is None  # replaced, not merged
    assert other.snapshot() == data
    # Restored state goes on applying as the original would.
    for machine in (m, other):
        assert machine.apply({"cas": "e", "expect": "new", "value": 2}, 7) is True
    assert other.data == m.data


def test_the_same_puts_give_the_same_snapshot():
    puts = [{"put": f"k{i % 7}", "value": i} for i in range(20)] + [{"delete": "k3"}]
    a, _ = _applied(puts)
    b, _ = _applied(puts)
    assert a.snapshot() == b.snapshot()


def test_a_snapshot_taken_later_holds_the_state_when_it_was_asked_for():
    m = KVMachine()
    for i in range(3 * kv_mod._PIECE + 5):
        m.apply({"put": f"k{i}", "value": i}, i + 1)
    later = m.snapshot_later()
    want = m.snapshot()
    m.apply({"put": "k0", "value": "changed"}, 10**6)  # apply goes on meanwhile
    m.apply({"delete": "k1"}, 10**6 + 1)
    pieces = list(later())
    assert len(pieces) == 1 + 4  # the array header, then maps of at most _PIECE keys
    assert b"".join(pieces) == want
    other = KVMachine()
    other.restore(b"".join(pieces))
    assert other.query({"get": "k0"}) == 0 and other.query({"get": "k1"}) == 1


def test_restore_of_an_empty_map_and_of_a_non_map():
    m, _ = _applied([{"put": "a", "value": 1}])
    m.restore(KVMachine().snapshot())
    assert m.query({"keys": ""}) == []
    with pytest.raises(ValueError):
        m.restore(msgpack.packb([1, 2]))
    with pytest.raises(ValueError):
        m.restore(msgpack.packb({1: "int key"}))
