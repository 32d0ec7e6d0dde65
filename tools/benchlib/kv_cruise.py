"""cruise's load for the ``kv-put`` and ``kv-get`` workloads (members run ``state_machine: kv``).

Each function runs in one load process (:mod:`benchlib.pool`) and keeps K requests in flight on
one DEALER, as :func:`benchlib.cruise_side.closed_loop` does (it is the same loop,
:func:`benchlib.cruise_side.run_closed`), with other request bodies:

* :func:`put_loop` -- ``{"op": "record", "value": {"put": KEY, "value": V}, "client": C,
  "seq": S}``, byte for byte what ``cruise.Client(...).record({"put": KEY, "value": V})`` sends
  (:class:`PutBodies`; ``--no-client-seq`` drops ``client``/``seq``), to the leader. A reply
  counts when it is ``ok`` with a nil ``result`` (the kv machine's answer to a put it applied;
  a put it refused answers ``{"error": ...}``).
* :func:`get_loop` -- ``{"op": "query", "query": {"get": KEY}}``, what
  ``cruise.Client(...).query({"get": KEY})`` sends (:class:`GetBodies`), to whichever member
  the bench names: the bench spreads the load processes over the three members, since followers
  serve linearizable reads too (each asks the leader for a read index). A reply counts when it
  is ``ok`` and carries the value the preload put there.

Keys: :mod:`benchlib.kv_keys`. Values: ``--value-bytes`` bytes, as msgpack ``bin``.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgpack

from .cruise_side import run_closed
from .kv_keys import key, key_index

_pack = msgpack.Packer(use_bin_type=True).pack
PUT_OK = _pack("result") + _pack(None)  # in every reply to a put the kv machine applied


def value_of(value_bytes: int) -> bytes:
    return b"v" * value_bytes


class PutBodies:
    """The msgpack bodies of one client's kv puts, as :class:`cruise.Client` builds them.

    The map's bytes around the key and the seq are built once; each body is those pieces and
    the packed key and seq, which is exactly ``msgpack.packb`` of the map
    (``cruise.api.encode_request("record", value={"put": KEY, "value": V}, client=C, seq=S)``).
    """

    def __init__(
        self,
        value_bytes: int,
        worker: int = 0,
        workers: int = 1,
        nkeys: int = 1,
        client_seq: bool = True,
        client_id: str | None = None,
    ) -> None:
        self.worker, self.workers, self.nkeys = worker, workers, nkeys
        self.n = 0  # requests made so far
        self.seq = 0
        value = value_of(value_bytes)
        head = [_pack(k) for k in ("op", "record", "value")]
        tail = _pack("value") + _pack(value)
        if client_seq:
            self.client: str | None = client_id or uuid.uuid4().hex
            self._head = b"\x84" + b"".join(head) + b"\x82" + _pack("put")
            self._mid = tail + _pack("client") + _pack(self.client) + _pack("seq")
        else:
            self.client = None
            self._head = b"\x82" + b"".join(head) + b"\x82" + _pack("put")
            self._mid = tail

    def next(self) -> bytes:
        k = _pack(key(key_index(self.worker, self.n, self.workers, self.nkeys)))
        self.n += 1
        if self.client is None:
            return self._head + k + self._mid
        self.seq += 1
        return self._head + k + self._mid + _pack(self.seq)


class GetBodies:
    """The msgpack bodies of kv gets: ``{"op": "query", "query": {"get": KEY}}``."""

    _HEAD = b"\x82" + _pack("op") + _pack("query") + _pack("query") + b"\x81" + _pack("get")

    def __init__(self, worker: int = 0, workers: int = 1, nkeys: int = 1) -> None:
        self.worker, self.workers, self.nkeys = worker, workers, nkeys
        self.n = 0

    def next(self) -> bytes:
        k = key(key_index(self.worker, self.n, self.workers, self.nkeys))
        self.n += 1
        return self._HEAD + _pack(k)


def put_loop(
    addr: str,
    worker: int,
    workers: int,
    nkeys: int,
    inflight: int,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    client_seq: bool = True,
    max_records: int = 0,
) -> dict[str, Any]:
    """Keep ``inflight`` kv puts outstanding; with ``max_records``, send exactly that many
    (the preload: every completion counts)."""
    body = PutBodies(value_bytes, worker, workers, nkeys, client_seq).next
    return run_closed(addr, inflight, body, start_at, warmup, seconds, max_records, expect=PUT_OK)


def get_loop(
    addr: str,
    worker: int,
    workers: int,
    nkeys: int,
    inflight: int,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    """Keep ``inflight`` linearizable kv gets outstanding on the member at ``addr``."""
    body = GetBodies(worker, workers, nkeys).next
    expect = _pack(value_of(value_bytes))
    return run_closed(addr, inflight, body, start_at, warmup, seconds, expect=expect)
