"""Public errors of the client protocol (contract section 4), shared by member and client.

Every failure a member answers is ``{"ok": false, "error": CODE, "message": TEXT, ...}``.
On the client side the same failure is raised as :class:`CruiseError`, carrying the
code, the message and any extra fields (``leader``, ``snapshot_index``).
"""

from __future__ import annotations

from typing import Any

BAD_REQUEST = "bad_request"  # not msgpack, not a map, unknown op, wrong field type, extra frame
TOO_LARGE = "too_large"  # value over max_value_bytes
UNAVAILABLE = "unavailable"  # no leader or no quorum within the request timeout (may carry "leader")
COMPACTED = "compacted"  # entries below what the member still holds (carries "snapshot_index")
NOT_MEMBER = "not_member"  # the asked member is not (or no longer) in the configuration
# A record's seq is older than its client's session remembers: this request applied nothing
# (an earlier copy of it may have been applied).
STALE = "stale"

CODES = (BAD_REQUEST, TOO_LARGE, UNAVAILABLE, COMPACTED, NOT_MEMBER, STALE)


class CruiseError(Exception):
    """A request failed; ``code`` is one of the contract's error codes."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.extra = extra

    def reply(self) -> dict[str, Any]:
        """The contract's failure reply for this error."""
        return {"ok": False, "error": self.code, "message": self.message, **self.extra}
