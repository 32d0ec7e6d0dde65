"""The client protocol (contract section 4): request validation and reply builders. No sockets.

Theory of operation
-------------------
A client sends one frame, a msgpack map with an ``op``; the member answers one frame, a msgpack
map with ``ok``. The member's ROUTER strips the envelope and hands the body frames to
:func:`decode_request`, which either returns one of the frozen request dataclasses below or
raises :class:`~cruise.errors.CruiseError` with code ``bad_request`` or ``too_large``. The
member turns that error into a reply with ``err.reply()`` and keeps serving (style practice 10:
bad input from outside is a typed error, never a crash).

Decisions where the contract is silent:

* Unknown extra keys in a request are ignored, so a newer client can talk to an older member
  (forward compatible). Unknown *ops* are refused.
* ``record``: ``client`` and ``seq`` come together or not at all; a nil ``client``/``seq`` counts
  as absent (clients in other languages often send nulls). ``client`` is a non-empty string,
  ``seq`` an int (not a bool). ``value`` must be present (it may be nil).
* ``too_large`` applies to the ``record`` value. To stay cheap its size is checked only when
  the whole frame is over ``max_value_bytes``; then the value is re-packed and sized exactly.
  (Members should also cap the frame size on the socket, ``zmq.MAXMSGSIZE``.)
* ``entries``: ``from`` is required, an int >= 0; ``limit`` is optional, an int >= 1,
  default :data:`ENTRIES_DEFAULT_LIMIT`, and silently capped at :data:`ENTRIES_MAX_LIMIT`
  (the reply may hold fewer entries than asked for anyway; clients ask again from the last
  index + 1).
* ``add_member``: ``member`` is a map with string ``id``, ``raft``, ``client``, ``publish``;
  the id must be a plain name and the addresses ZeroMQ endpoints a peer can connect to, with
  no two the same, because a bad address would be committed to every member's configuration.
  Extra keys in ``member`` are ignored. The decoded member is a plain dict of those four keys.
* ``remove_member`` ``id`` and ``transfer_leader`` ``to`` are non-empty strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from cruise.addresses import check_address, check_member_id, check_public_key
from cruise.errors import BAD_REQUEST, CODES, TOO_LARGE, CruiseError

__all__ = [
    "ENTRIES_DEFAULT_LIMIT",
    "ENTRIES_MAX_LIMIT",
    "OPS",
    "AddMember",
    "Entries",
    "Health",
    "Query",
    "ReadIndexReq",
    "Record",
    "RemoveMember",
    "PromoteMember",
    "Request",
    "Status",
    "TransferLeader",
    "decode_reply",
    "decode_request",
    "encode",
    "encode_request",
    "entry_to_wire",
    "error",
    "ok",
    "raise_for_reply",
]

ENTRIES_DEFAULT_LIMIT = 1000  # entries per `entries` reply when the request names no limit
ENTRIES_MAX_LIMIT = 10000  # a larger `limit` is capped to this


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """``{"op": "record", "value": V, "client"?: str, "seq"?: int}``.

    Invariant: ``client`` and ``seq`` are both None or both set.
    """

    value: Any
    client: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """``{"op": "query", "query": Q}``: a linearizable read of the state machine."""

    query: Any


@dataclass(frozen=True, slots=True)
class Status:
    """``{"op": "status"}``: answered from the asked member's own state."""


@dataclass(frozen=True, slots=True)
class Entries:
    """``{"op": "entries", "from": I, "limit": N}``: committed entries from ``start`` on.

    Invariant: ``start >= 0`` and ``1 <= limit <= ENTRIES_MAX_LIMIT``.
    """

    start: int  # the wire field "from" (a Python keyword)
    limit: int = ENTRIES_DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class ReadIndexReq:
    """``{"op": "read_index"}``: the commit index, confirmed by a quorum (§6.4)."""


@dataclass(frozen=True, slots=True)
class AddMember:
    """``{"op": "add_member", "member": {"id", "raft", "client", "publish"}, "learner": bool}``.

    ``member`` holds those four keys, all strings, validated, and ``public_key`` (Z85) in a
    cluster secured with CURVE. ``learner`` (default
    false): stay a learner; otherwise the member is promoted to voter once caught up.
    """

    member: dict[str, str]
    learner: bool = False

    @property
    def id(self) -> str:
        return self.member["id"]


@dataclass(frozen=True, slots=True)
class RemoveMember:
    """``{"op": "remove_member", "id": ID}``."""

    id: str


@dataclass(frozen=True, slots=True)
class PromoteMember:
    """``{"op": "promote_member", "id": ID}``: a caught-up learner becomes a voter."""

    id: str


@dataclass(frozen=True, slots=True)
class TransferLeader:
    """``{"op": "transfer_leader", "to": ID}``."""

    to: str


@dataclass(frozen=True, slots=True)
class Health:
    """``{"op": "health"}``: whether the asked member knows a leader a quorum has heard recently."""


Request = (
    Record
    | Query
    | Status
    | Entries
    | ReadIndexReq
    | AddMember
    | RemoveMember
    | PromoteMember
    | TransferLeader
    | Health
)

# Requests without fields are shared instances: decoding them allocates nothing.
_STATUS = Status()
_HEALTH = Health()
_READ_INDEX = ReadIndexReq()

# A frozen dataclass's __init__ sets each field through object.__setattr__. On the hot path
# (one Record per client request) a Record is built by setting its slots directly, which
# skips that detour and yields the same frozen, comparable object.
_new_object = object.__new__
_set_record_value = Record.__dict__["value"].__set__
_set_record_client = Record.__dict__["client"].__set__
_set_record_seq = Record.__dict__["seq"].__set__


def _fast_record(value: Any, client: str | None, seq: int | None) -> Record:
    """``Record(value, client, seq)``, without the frozen-dataclass __init__ overhead."""
    r = _new_object(Record)
    _set_record_value(r, value)
    _set_record_client(r, client)
    _set_record_seq(r, seq)
    return r


# -- decoding ----------------------------------------------------------------------------------

_unpackb = msgpack.unpackb
_packb = msgpack.packb
_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


def decode_request(frames: list[bytes], max_value_bytes: int) -> Request:
    """Validate one client request.

    Args:
        frames: the body frames (the ROUTER envelope already removed). Exactly one is valid.
        max_value_bytes: the configured limit on a record value's packed size.

    Returns:
        One of :class:`Record`, :class:`Query`, :class:`Status`, :class:`Entries`,
        :class:`ReadIndexReq`, :class:`AddMember`, :class:`RemoveMember`, :class:`TransferLeader`.

    Raises:
        CruiseError: ``bad_request`` (extra frames, not msgpack, not a map, missing or unknown
            op, a field missing or of the wrong type) or ``too_large`` (record value over
            ``max_value_bytes``).
    """
    if len(frames) != 1:
        raise CruiseError(BAD_REQUEST, f"expected one frame, got {len(frames)}")
    frame = frames[0]
    try:
        msg = _unpackb(frame, raw=False, strict_map_key=False)
    except _UNPACK_ERRORS as e:
        raise CruiseError(BAD_REQUEST, f"not a msgpack message: {e}") from None
    if type(msg) is not dict:
        raise CruiseError(BAD_REQUEST, f"expected a msgpack map, got {_type_name(msg)}")
    op = msg.get("op")
    if op == "record":  # the hot path first
        return _decode_record(msg, len(frame), max_value_bytes)
    decoder = _DECODERS.get(op) if type(op) is str else None
    if decoder is None:
        if op is None:
            raise CruiseError(BAD_REQUEST, "missing field 'op'")
        if type(op) is not str:
            raise CruiseError(BAD_REQUEST, f"field 'op' must be a string, got {_type_name(op)}")
        raise CruiseError(BAD_REQUEST, f"unknown op {op[:40]!r} (expected one of: {', '.join(OPS)})")
    return decoder(msg)


def _decode_record(msg: dict[Any, Any], frame_size: int, max_value_bytes: int) -> Record:
    try:
        value = msg["value"]
    except KeyError:
        raise CruiseError(BAD_REQUEST, "record: missing field 'value'") from None
    client = msg.get("client")
    seq = msg.get("seq")
    if client is not None or seq is not None:
        if client is None or seq is None:
            raise CruiseError(BAD_REQUEST, "record: 'client' and 'seq' go together")
        if type(client) is not str or not client:
            raise CruiseError(
                BAD_REQUEST, f"record: 'client' must be a non-empty string, got {_type_name(client)}"
            )
        if type(seq) is not int:
            raise CruiseError(BAD_REQUEST, f"record: 'seq' must be an int, got {_type_name(seq)}")
    if frame_size > max_value_bytes:
        # Only now pay for an exact measure: the value alone, re-packed.
        try:
            size = len(_packb(value))
        except (TypeError, ValueError, OverflowError) as e:  # pragma: no cover - decoded values re-pack
            raise CruiseError(BAD_REQUEST, f"record: value cannot be packed: {e}") from None
        if size > max_value_bytes:
            raise CruiseError(
                TOO_LARGE, f"record: value is {size} bytes, over the limit of {max_value_bytes}"
            )
    return _fast_record(value, client, seq)


def _decode_query(msg: dict[Any, Any]) -> Query:
    if "query" not in msg:
        raise CruiseError(BAD_REQUEST, "query: missing field 'query'")
    return Query(msg["query"])


def _decode_status(msg: dict[Any, Any]) -> Status:
    return _STATUS


def _decode_health(msg: dict[Any, Any]) -> Health:
    return _HEALTH


def _decode_read_index(msg: dict[Any, Any]) -> ReadIndexReq:
    return _READ_INDEX


def _decode_entries(msg: dict[Any, Any]) -> Entries:
    if "from" not in msg:
        raise CruiseError(BAD_REQUEST, "entries: missing field 'from'")
    start = msg["from"]
    if type(start) is not int or start < 0:
        raise CruiseError(BAD_REQUEST, f"entries: 'from' must be an int >= 0, got {_show(start)}")
    limit = msg.get("limit")
    if limit is None:
        return Entries(start, ENTRIES_DEFAULT_LIMIT)
    if type(limit) is not int or limit < 1:
        raise CruiseError(BAD_REQUEST, f"entries: 'limit' must be an int >= 1, got {_show(limit)}")
    return Entries(start, min(limit, ENTRIES_MAX_LIMIT))


_MEMBER_FIELDS = ("id", "raft", "client", "publish")


def _decode_add_member(msg: dict[Any, Any]) -> AddMember:
    member = msg.get("member")
    if type(member) is not dict:
        what = (
            "missing field 'member'"
            if member is None
            else f"'member' must be a map, got {_type_name(member)}"
        )
        raise CruiseError(BAD_REQUEST, f"add_member: {what}")
    clean: dict[str, str] = {}
    for k in _MEMBER_FIELDS:
        v = member.get(k)
        if type(v) is not str:
            what = "missing" if v is None else f"must be a string, got {_type_name(v)}"
            raise CruiseError(BAD_REQUEST, f"add_member: member.{k} {what}")
        clean[k] = v
    problem = check_member_id(clean["id"])
    if problem:
        raise CruiseError(BAD_REQUEST, f"add_member: member.id {problem}")
    for k in _MEMBER_FIELDS[1:]:
        problem = check_address(clean[k])
        if problem:
            raise CruiseError(BAD_REQUEST, f"add_member: member.{k}: {problem}")
    if len({clean["raft"], clean["client"], clean["publish"]}) != 3:
        raise CruiseError(
            BAD_REQUEST, "add_member: raft, client and publish must be three different addresses"
        )
    key = member.get("public_key")
    if key is not None:  # a secured cluster: how the others will know the new member
        problem = check_public_key(key)
        if problem:
            raise CruiseError(BAD_REQUEST, f"add_member: member.public_key {problem}")
        clean["public_key"] = key
    learner = msg.get("learner", False)
    if type(learner) is not bool:
        raise CruiseError(BAD_REQUEST, f"add_member: 'learner' must be a boolean, got {_type_name(learner)}")
    return AddMember(clean, learner)


def _decode_remove_member(msg: dict[Any, Any]) -> RemoveMember:
    return RemoveMember(_name(msg, "remove_member", "id"))


def _decode_promote_member(msg: dict[Any, Any]) -> PromoteMember:
    return PromoteMember(_name(msg, "promote_member", "id"))


def _decode_transfer_leader(msg: dict[Any, Any]) -> TransferLeader:
    return TransferLeader(_name(msg, "transfer_leader", "to"))


def _name(msg: dict[Any, Any], op: str, key: str) -> str:
    v = msg.get(key)
    if type(v) is not str or not v:
        what = "missing" if v is None else f"must be a non-empty string, got {_show(v)}"
        raise CruiseError(BAD_REQUEST, f"{op}: field {key!r} {what}")
    return v


# Every op but "record", which decode_request handles first (it also needs the frame size).
_DECODERS: dict[str, Any] = {
    "query": _decode_query,
    "status": _decode_status,
    "health": _decode_health,
    "entries": _decode_entries,
    "read_index": _decode_read_index,
    "add_member": _decode_add_member,
    "remove_member": _decode_remove_member,
    "promote_member": _decode_promote_member,
    "transfer_leader": _decode_transfer_leader,
}
OPS = ("record", *_DECODERS)


# The member-id and address rules of cruise.config (check_member_id, check_address), restated
# here because the module map keeps api and config independent; tests/test_api.py checks that
# both accept and refuse the same inputs.
def _type_name(value: Any) -> str:
    """The msgpack name of a value's type, for messages."""
    if value is None:
        return "nil"
    return _WIRE_TYPES.get(type(value), type(value).__name__)


_WIRE_TYPES = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    bytes: "binary",
    list: "array",
    dict: "map",
}


def _show(value: Any) -> str:
    """A short rendering of a wrong value: the value itself for scalars, else its type."""
    if value is None or type(value) in (bool, int, float) or (type(value) is str and len(value) <= 40):
        return repr(value)
    return _type_name(value)


# -- replies -----------------------------------------------------------------------------------


def ok(**fields: Any) -> dict[str, Any]:
    """A success reply: ``{"ok": True, **fields}``."""
    return {"ok": True, **fields}


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A failure reply: ``{"ok": False, "error": code, "message": message, **extra}``.

    Raises:
        ValueError: ``code`` is not one of the contract's codes (a bug in the caller).
    """
    if code not in CODES:
        raise ValueError(f"unknown error code {code!r}")
    return {"ok": False, "error": code, "message": message, **extra}


def encode(reply: dict[str, Any]) -> bytes:
    """One reply frame. Raises TypeError when a field cannot be msgpack-packed."""
    return _packb(reply)


def entry_to_wire(index: int, term: int, kind: str, value: Any) -> dict[str, Any]:
    """An entry as ``entries`` replies and the publish stream carry it (contract sections 4, 5)."""
    return {"index": index, "term": term, "kind": kind, "value": value}


# -- the client side ---------------------------------------------------------------------------


def encode_request(op: str, **fields: Any) -> bytes:
    """One request frame for ``op``.

    A trailing underscore is dropped from field names, so the Python keyword ``from`` can be
    passed as ``encode_request("entries", from_=1, limit=100)``.

    Raises:
        ValueError: ``op`` is not an op of the protocol (a bug in the caller).
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}")
    msg: dict[str, Any] = {"op": op}
    for k, v in fields.items():
        msg[k[:-1] if k.endswith("_") else k] = v
    return _packb(msg)


def decode_reply(frame: bytes) -> dict[str, Any]:
    """Decode one reply frame.

    Raises:
        CruiseError: ``bad_request`` when the frame is not a msgpack map with a bool ``ok``
            (and, for a failure, a string ``error``).
    """
    try:
        reply = _unpackb(frame, raw=False, strict_map_key=False)
    except _UNPACK_ERRORS as e:
        raise CruiseError(BAD_REQUEST, f"malformed reply: not msgpack: {e}") from None
    if type(reply) is not dict:
        raise CruiseError(BAD_REQUEST, f"malformed reply: expected a map, got {_type_name(reply)}")
    okay = reply.get("ok")
    if type(okay) is not bool:
        raise CruiseError(BAD_REQUEST, "malformed reply: 'ok' missing or not a bool")
    if not okay and type(reply.get("error")) is not str:
        raise CruiseError(BAD_REQUEST, "malformed reply: a failure without a string 'error'")
    return reply


def raise_for_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """Return a success reply unchanged; raise a failure as CruiseError(code, message, **extra)."""
    if reply.get("ok") is True:
        return reply
    extra = {k: v for k, v in reply.items() if k not in ("ok", "error", "message")}
    raise CruiseError(str(reply.get("error", BAD_REQUEST)), str(reply.get("message", "")), **extra)
