"""Hostile input: the peer and client decoders and the member behind them, fuzzed.

Frames are valid frames mutated (bit flips, truncation, bytes spliced in) or msgpack arrays
built with a wrong type or a wild value in any one field. What must hold:

- a decoder raises only its own error (``WireError``, ``CruiseError``), never anything else;
- a frame the peer decoder refuses never reaches the member, so it changes nothing;
- a frame it accepts, however wild its values (negative indexes, huge terms, a sender that
  is no member, entries far past the log), is stepped into a live member without raising.

Bounded for CI by hypothesis' example counts (``max_examples``); ``FUZZ_EXAMPLES`` raises
them for a long run.
"""

from __future__ import annotations

import os
import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerless.clock import FakeClock
from cruise import api, wire
from cruise.core import CoreConfig
from cruise.core.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    SnapshotAck,
    SnapshotChunk,
    TimeoutNow,
    VoteResponse,
)
from cruise.core.types import Entry
from cruise.errors import CruiseError
from cruise.fsm import StreamMachine
from cruise.member import Member, MemberConfig
from cruise.simulation.world import SimDisk

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


class Out:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, msgs, blobs) -> None:
        self.sent.extend(msgs)

    def forward(self, to, rid, frame) -> bool:
        return True

    def publishing(self) -> bool:
        return False

    def set_members(self, peers) -> None:
        pass

    def publish(self, entry) -> None:
        pass


def member(lead: bool = False) -> Member:
    ids = ("n1", "n2", "n3")
    core = CoreConfig("n1", ids, election_ticks=(10, 20), heartbeat_ticks=2, rng=random.Random(1))
    members = tuple(
        {
            "id": i,
            "raft": f"tcp://127.0.0.1:{7100 + k}",
            "client": f"tcp://127.0.0.1:{7200 + k}",
            "publish": f"tcp://127.0.0.1:{7300 + k}",
            "voter": True,
        }
        for k, i in enumerate(ids)
    )
    m = Member(
        MemberConfig(core, ("n2", "n3"), members),
        SimDisk(),
        StreamMachine(),
        Out(),
        FakeClock(),
        schedule=lambda: None,
        rng=random.Random(2),
    )
    if lead:  # a leader with a few entries: the state hostile responses could damage most
        m.raw.campaign()
        m.process()
        for p in ("n2", "n3"):
            m.on_peer(VoteResponse(1, p, "n1", True))
        m.process()
    return m


def samples() -> list[bytes]:
    """One valid frame of every peer message type."""
    e = (Entry(5, 1, "record", {"v": 1}, ["c", 1]), Entry(6, 1, "noop", None, None))
    msgs = [
        RequestVote(2, "n2", "n1", 4, 1, False, False),
        VoteResponse(2, "n2", "n1", True, False),
        AppendEntries(2, "n2", "n1", 4, 1, e, 3),
        AppendResponse(1, "n2", "n1", 6, False, 0, 0),
        Heartbeat(2, "n2", "n1", 3, b"ctx", False),
        HeartbeatResponse(1, "n2", "n1", b"ctx"),
        ReadIndex(1, "n2", "n1", b"ctx"),
        ReadIndexResponse(2, "n2", "n1", 7, b"ctx", False),
        TimeoutNow(2, "n2", "n1"),
        InstallSnapshot(2, "n2", "n1", 10, 1, None),
        SnapshotChunk(2, "n2", "n1", 10, 1, 0, 4, 0, b"data", None),
        SnapshotAck(1, "n2", "n1", 10, 4, False, False, False),
    ]
    return [wire.encode(m, None, wire.Stamp(7, 9, 0)) for m in msgs]


SAMPLES = samples()
INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
WILD = st.one_of(
    INT64,
    st.sampled_from([-1, 0, 1, 2**31, 2**62]),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.lists(INT64, max_size=3),
    st.dictionaries(st.text(max_size=3), INT64, max_size=2),
)


@st.composite
def mutated_frames(draw) -> bytes:
    frame = bytearray(draw(st.sampled_from(SAMPLES)))
    how = draw(st.sampled_from(["flip", "truncate", "splice", "field"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        frame = frame[: draw(st.integers(0, len(frame) - 1))]
    elif how == "splice":
        i = draw(st.integers(0, len(frame)))
        frame[i:i] = draw(st.binary(min_size=1, max_size=16))
    else:  # one field replaced by a value of another type, or a wild one of the right type
        row = list(msgpack.unpackb(bytes(frame[1:]), raw=False, strict_map_key=False))
        i = draw(st.integers(0, len(row) - 1))
        row[i] = draw(WILD)
        frame = bytearray(frame[:1] + msgpack.packb(row, use_bin_type=True))
    return bytes(frame)


def state(m: Member) -> tuple:
    raft = m.raw.raft
    return (raft.term, raft.vote, raft.role, raft.log.last_index(), raft.log.committed, m.applier.applied)


@FUZZ
@given(frame=mutated_frames(), lead=st.booleans())
def test_peer_frames_never_escape_the_member(frame: bytes, lead: bool):
    m = member(lead)
    before = state(m)
    try:
        msg, stamp = wire.decode(frame)
    except wire.WireError:
        assert state(m) == before  # refused frames reach nothing
        return
    m.on_peer(msg, stamp)  # accepted: however wild, the member steps it without raising
    m.process()
    m.tick()
    m.process()
    assert m.failed is None


@FUZZ
@given(frame=mutated_frames())
def test_the_peer_decoder_raises_only_its_own_error(frame: bytes):
    try:
        wire.decode(frame)
    except wire.WireError:
        pass


CLIENT_SAMPLES = [
    msgpack.packb(r, use_bin_type=True)
    for r in (
        {"op": "record", "value": {"x": 1}, "client": "c1", "seq": 3},
        {"op": "query", "query": {"get": "k"}},
        {"op": "status"},
        {"op": "entries", "from": 1, "limit": 10},
        {
            "op": "add_member",
            "member": {
                "id": "n4",
                "raft": "tcp://127.0.0.1:1",
                "client": "tcp://127.0.0.1:2",
                "publish": "tcp://127.0.0.1:3",
            },
            "learner": True,
        },
        {"op": "remove_member", "id": "n2"},
        {"op": "transfer_leader", "to": "n2"},
    )
]


@st.composite
def client_frames(draw) -> list[bytes]:
    frame = bytearray(draw(st.sampled_from(CLIENT_SAMPLES)))
    how = draw(st.sampled_from(["flip", "truncate", "field", "frames"]))
    if how == "flip":
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        frame = frame[: draw(st.integers(0, len(frame) - 1))]
    elif how == "field":
        req = msgpack.unpackb(bytes(frame), raw=False)
        key = draw(st.sampled_from([*req, "op", "extra"]))
        req[key] = draw(WILD)
        frame = bytearray(msgpack.packb(req, use_bin_type=True))
    else:
        return [bytes(frame)] * draw(st.integers(0, 3))  # zero or several body frames
    return [bytes(frame)]


@FUZZ
@given(frames=client_frames())
def test_the_client_decoder_raises_only_its_own_error(frames: list[bytes]):
    try:
        req = api.decode_request(frames, 1 << 20)
    except CruiseError:
        return
    m = member(lead=True)

    class Waiter:
        deadline = 1e9
        answers: list = []

        def ok(self, index, term, result):
            self.answers.append(("ok", index))

        def reply(self, reply):
            self.answers.append(reply)

    m.submit(req, Waiter())  # a request that decoded is served (or refused) without raising
    m.process()
    assert m.failed is None


@pytest.mark.parametrize("frame", SAMPLES)
def test_every_sample_is_valid(frame: bytes):
    """The fuzz starts from frames the decoder accepts (else it fuzzes only the refusal)."""
    wire.decode(frame)
