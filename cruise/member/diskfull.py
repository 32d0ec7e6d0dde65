"""A full disk: the member stands still until its write goes through.

Theory of operation
-------------------
When the disk refuses a write of the Ready loop for want of space (``ENOSPC``, or a quota's
``EDQUOT``), nothing of that write happened: the WAL cuts a half-written record off before it
raises, and keeps no in-memory trace of it. The driver keeps the Ready where it stopped (a
:class:`Stall`) and the member stands still, as a paused process would: it feeds its core
nothing (peer messages are dropped, as a lossy network would; the core does not tick, so it
neither campaigns nor sends heartbeats), it answers records, reads, transfers and membership
changes at once with an error naming the full disk, and it still answers ``status``,
``health`` (unhealthy) and ``entries``. Every ``RETRY_SECONDS`` it tries the same write
again; once it goes through, the Ready is finished where it stopped and the member goes on as
after a pause: it hears the current leader, catches up, and answers again.

Standing still is what keeps this simple and safe: the core never sees a message between the
Ready it handed out and that Ready's ``advance``, so the order the driver keeps (persist, then
promise) holds across the stall. Raft already tolerates a member that stops for a while; the
rest of the cluster goes on without it (a stalled leader is replaced after an election
timeout). An fsync that fails is not this: the kernel may have dropped the pages, so that
still stops the member.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core import Message, Ready
from ..core.types import Entry
from .ports import Clock

if TYPE_CHECKING:
    from .driver import Driver

RETRY_SECONDS = 1.0
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

# Where in its Ready the driver stopped: the install of a leader's snapshot, or the append
# (entries and hard state). Everything before the phase is done; the phase and all after it
# are not.
INSTALL = "install"
WRITE = "write"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk refusing a write for want of space."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


@dataclass(slots=True)
class Stall:
    """A Ready whose write the disk refused, kept to be finished where it stopped."""

    rd: Ready
    phase: str
    leader: bool  # the member led when the Ready was handed out
    committed: list[Entry]  # still to apply after the write (a follower's)
    notices: list[Message] | None  # commit notices still to send after the install
    error: str


class Standstill:
    """The member's side of a stall: what it says, and when it tries the write again."""

    def __init__(self, driver: Driver, clock: Clock, log: Callable[..., None]) -> None:
        self.driver = driver
        self.clock = clock
        self.log = log
        self.retry_at = 0.0

    def halted(self) -> str | None:
        """The error a request gets while the member stands still; None when it does not."""
        return self.message() if self.driver.stalled is not None else None

    @property
    def error(self) -> str | None:
        """The error of the write a full disk refused; None while the member goes on."""
        stalled = self.driver.stalled
        return stalled.error if stalled is not None else None

    def message(self) -> str:
        """The error a request gets while the member stands still."""
        stalled = self.driver.stalled
        error = stalled.error if stalled is not None else ""
        return f"this member's disk is full ({error}): it takes no writes until space returns"

    def began(self, role: str) -> None:
        stalled = self.driver.stalled
        assert stalled is not None
        self.retry_at = self.clock.now() + RETRY_SECONDS
        self.log(
            "disk_full",
            error=stalled.error,
            at=stalled.phase,
            role=role,
            action=f"standing still, refusing writes, trying again every {RETRY_SECONDS:g} s",
        )

    def retry(self) -> bool:
        """Try again if it is time; True once the write went through (the member goes on)."""
        if self.clock.now() < self.retry_at:
            return False
        if self.driver.resume():
            self.log("disk_writable", action="going on where the write stopped")
            return True
        self.retry_at = self.clock.now() + RETRY_SECONDS
        return False
