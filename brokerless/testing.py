"""Helpers for tests of code built on brokerless (pyzmq's ``create_bound_pair``, trio's ``MockClock``).

Socket pairs come with ``LINGER=0`` so a failing test never hangs on close. :func:`drive`
moves a :class:`~brokerless.clock.FakeClock` and turns the reactor without sleeping.
"""

from __future__ import annotations

import itertools
import math
import os
import time

import zmq

from .clock import FakeClock
from .reactor import Reactor
from .sockets import bind_to_random_port

__all__ = ["loopback_pair", "inproc_pair", "drive", "recv_within", "send_within"]

_inproc_ids = itertools.count()


def _socket(ctx: zmq.Context, kind: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def loopback_pair(
    ctx: zmq.Context, kind_a: int = zmq.PAIR, kind_b: int = zmq.PAIR, *, host: str = "tcp://127.0.0.1"
) -> tuple[zmq.Socket, zmq.Socket]:
    """Return ``(a, b)``: ``a`` bound to a random loopback TCP port, ``b`` connected to it.

    Both have ``LINGER=0``; the caller closes them. The connection completes asynchronously:
    poll with a timeout before relying on delivery (and mind the slow joiner with PUB/SUB).
    """
    a = _socket(ctx, kind_a)
    try:
        _port, address = bind_to_random_port(a, host)
        b = _socket(ctx, kind_b)
    except BaseException:
        a.close(0)
        raise
    try:
        b.connect(address)
    except BaseException:
        a.close(0)
        b.close(0)
        raise
    return a, b


def inproc_pair(
    ctx: zmq.Context, kind_a: int = zmq.PAIR, kind_b: int = zmq.PAIR
) -> tuple[zmq.Socket, zmq.Socket]:
    """Return ``(a, b)`` over a fresh ``inproc://`` address: ``a`` bound, ``b`` connected.

    Both have ``LINGER=0``. Inproc only works within one context.
    """
    address = f"inproc://brokerless-test-{os.getpid()}-{next(_inproc_ids)}"
    a = _socket(ctx, kind_a)
    b = _socket(ctx, kind_b)
    try:
        a.bind(address)
        b.connect(address)
    except BaseException:
        a.close(0)
        b.close(0)
        raise
    return a, b


def drive(reactor: Reactor, fake_clock: FakeClock, seconds: float, step: float = 0.01) -> None:
    """Advance ``fake_clock`` by ``seconds`` in steps of ``step``, turning ``reactor`` after each.

    Turns once with ``run_once(0)`` before the first step (for work already due), then after
    every step; the last step is shortened so the clock ends exactly ``seconds`` later. Never
    sleeps. Exceptions from callbacks propagate, as from ``run_once``.

    Raises:
        ValueError: ``seconds`` is negative or ``step`` is not positive.
    """
    if seconds < 0:
        raise ValueError("time can't go backwards")
    if not step > 0:
        raise ValueError("step must be positive")
    start = fake_clock.now()
    end = start + seconds
    reactor.run_once(0)
    k = 0
    while fake_clock.now() < end:
        k += 1
        # start + k * step rather than repeated += step, which drifts (ten 0.05 steps < 0.5).
        fake_clock.set(min(start + k * step, end))
        reactor.run_once(0)


def recv_within(sock: zmq.Socket, timeout: float = 5.0) -> list[bytes]:
    """Receive one multipart message, waiting at most ``timeout`` real seconds.

    Raises:
        TimeoutError: nothing arrived in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no message within {timeout} s")
        if sock.poll(math.ceil(left * 1000), zmq.POLLIN):
            try:
                return sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:  # readiness can be spurious; wait again
                continue


def send_within(sock: zmq.Socket, frames: list[bytes], timeout: float = 5.0) -> None:
    """Send one multipart message, waiting at most ``timeout`` real seconds for room.

    Useful with ``IMMEDIATE`` dealers, which refuse to send until connected.

    Raises:
        TimeoutError: the socket did not accept the message in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            return
        except zmq.Again:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"could not send within {timeout} s")
        sock.poll(min(50, math.ceil(left * 1000)), zmq.POLLOUT)


def free_tcp_addresses(n: int, host: str = "127.0.0.1", low: int = 20000, high: int = 32000) -> list[str]:
    """``n`` distinct ``tcp://host:port`` addresses, free a moment ago, for config files.

    Ports come from ``[low, high)``, below Linux's ephemeral range (32768 and up), so no
    outgoing connection (say, a member's DEALER retrying a peer not yet started) can be
    holding one as its source port, and a connect can never land on itself. Every
    candidate is bound until all ``n`` are chosen, so none repeats.

    Raises:
        RuntimeError: ``n`` free ports were not found in the range.
    """
    import random
    import socket

    rng = random.Random()
    held: list[socket.socket] = []
    try:
        for _ in range(20 * n + 100):
            if len(held) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, rng.randrange(low, high)))
            except OSError:
                s.close()
                continue
            held.append(s)
        if len(held) < n:
            raise RuntimeError(f"found only {len(held)} free ports in [{low}, {high}) on {host}")
        return [f"tcp://{host}:{s.getsockname()[1]}" for s in held]
    finally:
        for s in held:
            s.close()
