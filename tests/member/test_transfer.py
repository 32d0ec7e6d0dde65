"""The follower's side of a snapshot transfer, message by message."""

import zlib

from cruise.core import CoreConfig, MemoryStorage, RawNode
from cruise.core.messages import SnapshotAck, SnapshotChunk
from cruise.member.transfer import Incoming


class Sent:
    def __init__(self) -> None:
        self.acks: list[SnapshotAck] = []

    def send(self, msgs, blobs) -> None:
        self.acks.extend(msgs)


DATA = b"abcdef"


def chunk(offset: int, n: int = 1) -> SnapshotChunk:
    return SnapshotChunk(
        2, "n1", "n2", 10, 2, offset, len(DATA), zlib.crc32(DATA), DATA[offset : offset + n], None
    )


def incoming() -> tuple[Incoming, Sent]:
    out = Sent()
    raw = RawNode(CoreConfig("n2", ("n1", "n2", "n3")), MemoryStorage())
    return Incoming("n2", raw, out), out  # type: ignore[arg-type]


def test_a_repeat_is_answered_with_what_the_follower_holds():
    """The leader resends from its last acknowledgement when later ones were lost; a
    follower that kept quiet about repeats left it resending the same chunks forever."""
    inc, out = incoming()
    for off in range(3):
        inc.on_chunk(chunk(off))
    assert [a.offset for a in out.acks] == [1, 2, 3]
    out.acks.clear()
    inc.on_chunk(chunk(1))  # the leader went back to byte 1: our acks for 2 and 3 were lost
    assert [(a.offset, a.gap, a.done) for a in out.acks] == [(3, False, False)]


def test_a_gap_asks_for_what_is_missing_and_the_whole_installs_once_checked():
    inc, out = incoming()
    inc.on_chunk(chunk(0, 2))
    inc.on_chunk(chunk(4, 2))  # bytes 2-3 lost
    assert (out.acks[-1].offset, out.acks[-1].gap) == (2, True)
    inc.on_chunk(chunk(2, 2))
    inc.on_chunk(chunk(4, 2))
    assert out.acks[-1].done and out.acks[-1].offset == len(DATA)
    assert list(inc.complete.values()) == [bytearray(DATA)]
