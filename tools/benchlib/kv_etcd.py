"""etcd's load for the ``kv-put`` and ``kv-get`` workloads, over real gRPC (``grpc.aio``).

The same shape as cruise's (:mod:`benchlib.kv_cruise`): N load processes, K calls in flight each
(K coroutines on one event loop, as :func:`benchlib.etcd_side.closed_loop` does by default), the
same keys (:mod:`benchlib.kv_keys`) and values.

* :func:`put_loop` -- ``KV/Put`` of ``PutRequest{key, value}`` to the leader (a put is
  acknowledged once committed).
* :func:`get_loop` -- ``KV/Range`` of ``RangeRequest{key}`` to whichever member the bench names
  (it spreads the load processes over the three). ``serializable`` is left false, etcd's
  default: a linearizable read, which a follower serves after asking the leader for a read
  index. A reply counts when it carries the value the preload put there.

gRPC is imported only here, in the load processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .etcd_side import PUT, REQUEST_TIMEOUT, _varint, put_request
from .kv_keys import key, key_index
from .stats import Window

RANGE = "/etcdserverpb.KV/Range"


def range_request(k: bytes) -> bytes:
    """A serialized ``RangeRequest{key}``: one key, linearizable (field 7, ``serializable``,
    left at false)."""
    return b"\x0a" + _varint(len(k)) + k


def _keys(worker: int, workers: int, nkeys: int) -> Callable[[int], bytes]:
    return lambda n: key(key_index(worker, n, workers, nkeys)).encode()


def put_loop(
    target: str,
    worker: int,
    workers: int,
    nkeys: int,
    inflight: int,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
    max_records: int = 0,
) -> dict[str, Any]:
    """Keep ``inflight`` Puts outstanding; with ``max_records``, send exactly that many (the
    preload: every completion counts)."""
    k = _keys(worker, workers, nkeys)
    value = b"v" * value_bytes

    def req(n: int) -> bytes:
        return put_request(k(n), value)

    return _run(target, PUT, req, None, inflight, start_at, warmup, seconds, max_records)


def get_loop(
    target: str,
    worker: int,
    workers: int,
    nkeys: int,
    inflight: int,
    value_bytes: int,
    start_at: float,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    """Keep ``inflight`` linearizable Range calls (one key each) outstanding on ``target``."""
    k = _keys(worker, workers, nkeys)
    value = b"v" * value_bytes
    return _run(target, RANGE, lambda n: range_request(k(n)), value, inflight, start_at, warmup, seconds)


def _run(
    target: str,
    method: str,
    request: Callable[[int], bytes],
    expect: bytes | None,
    inflight: int,
    start_at: float,
    warmup: float,
    seconds: float,
    max_records: int = 0,
) -> dict[str, Any]:
    cpu0 = time.process_time()
    win, sent = asyncio.run(
        _aio_closed(target, method, request, expect, inflight, start_at, warmup, seconds, max_records)
    )
    return win.result(sent=sent, cpu_s=time.process_time() - cpu0, completed=win.completed)


async def _aio_closed(
    target: str,
    method: str,
    request: Callable[[int], bytes],
    expect: bytes | None,
    inflight: int,
    start_at: float,
    warmup: float,
    seconds: float,
    max_records: int,
) -> tuple[Window, int]:
    import grpc

    ch = grpc.aio.insecure_channel(target)
    await asyncio.wait_for(ch.channel_ready(), 10)
    call = ch.unary_unary(method)
    if max_records:
        start, end = 0.0, float("inf")
    else:
        start = start_at + warmup
        end = start + seconds
    win = Window(start, end)
    clock = time.monotonic
    sent = 0

    async def caller() -> None:
        nonlocal sent
        while True:
            t0 = clock()
            if t0 >= end or (max_records and sent >= max_records):
                return
            n = sent
            sent += 1
            try:
                raw = await call(request(n), timeout=REQUEST_TIMEOUT)
            except grpc.aio.AioRpcError as e:
                win.failure(clock(), str(e.code()))
                continue
            now = clock()
            if expect is not None and expect not in raw:
                win.failure(now, "wrong_result")
            else:
                win.success(now, now - t0)

    try:
        await asyncio.sleep(max(0.0, start_at - clock()))
        await asyncio.gather(*(caller() for _ in range(inflight)))
    finally:
        await ch.close()
    return win, sent
