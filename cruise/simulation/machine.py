"""The simulation's state machine: a digest of everything applied, so that a member
restored from a snapshot can be checked against members that applied every entry."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from ..fsm import StateMachine


class DigestMachine(StateMachine):
    """State: how many records were applied and a crc32 chained over each (index, value)."""

    def __init__(self) -> None:
        self.count = 0
        self.digest = 0

    def apply(self, value: Any, index: int) -> Any:
        self.count += 1
        self.digest = zlib.crc32(msgpack.packb([index, value], use_bin_type=True), self.digest)
        return self.count

    def query(self, q: Any) -> Any:
        return [self.count, self.digest]

    def snapshot(self) -> bytes:
        return msgpack.packb([self.count, self.digest])

    def snapshot_later(self) -> Callable[[], Iterator[bytes]]:
        frozen = self.snapshot()
        return lambda: iter((frozen,))

    def restore(self, data: bytes) -> None:
        self.count, self.digest = msgpack.unpackb(data)
