"""Socket factories with defaults that suit a long-running service.

Every factory sets, before any bind or connect (so the options apply to every pipe):

* ``LINGER = 0`` (configurable): closing a socket never waits for unsent messages, so a
  process exits promptly even when a peer is gone.
* bounded high-water marks: ``hwm`` messages per pipe (10 000 for peer sockets, 100 000 for
  PUB/SUB). What happens at the mark depends on the socket type (see each factory).
* ``RECONNECT_IVL = 100`` ms doubling up to ``RECONNECT_IVL_MAX = 1000`` ms: a restarted
  member is found again within about a second.

A failed bind raises :class:`BindError` naming the address, and the half-made socket is
closed, instead of leaking a bare ``ZMQError``.
"""

from __future__ import annotations

import errno as _errno
import os as _os
import socket as _socket
import threading as _threading
from collections.abc import Iterable, Mapping
from typing import cast

import zmq

__all__ = [
    "BindError",
    "context",
    "PEER_HWM",
    "PUB_HWM",
    "RECONNECT_IVL_MS",
    "RECONNECT_IVL_MAX_MS",
    "router",
    "dealer",
    "pub",
    "sub",
    "req",
    "bind_to_random_port",
    "free_tcp_address",
]

PEER_HWM = 10_000
"""Default SNDHWM/RCVHWM for ROUTER, DEALER and REQ sockets (messages per peer pipe)."""
PUB_HWM = 100_000
"""Default SNDHWM/RCVHWM for PUB and SUB sockets."""
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000


def _batch_scheduling_allowed() -> bool:
    """Whether a thread of this process may switch itself to SCHED_BATCH.

    libzmq aborts the process if it cannot apply a scheduling policy to its I/O thread,
    so the policy is asked for only after a throwaway thread has managed the same switch.
    """
    if not hasattr(_os, "SCHED_BATCH") or not hasattr(zmq, "THREAD_SCHED_POLICY"):
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            _os.sched_setscheduler(0, _os.SCHED_BATCH, _os.sched_param(0))  # this thread only
            ok.append(True)
        except OSError:
            pass

    t = _threading.Thread(target=probe, name="brokerless-sched-probe")
    t.start()
    t.join()
    return bool(ok)


def context(batch_io: bool = True) -> zmq.Context:
    """A new ZeroMQ context for one service.

    With ``batch_io`` (the default) its I/O thread runs under ``SCHED_BATCH`` where the OS
    allows it (Linux). That thread only moves bytes between the sockets' queues and TCP;
    under the default policy every message that wakes it also preempts the thread that
    sent it, so a busy event loop keeps losing its CPU to it. As a batch thread it waits
    for the loop to block or for another core, and the loop is preempted less often.
    Nothing else about the context changes.
    """
    ctx = zmq.Context()
    if batch_io and _batch_scheduling_allowed():
        try:
            ctx.set(zmq.THREAD_SCHED_POLICY, _os.SCHED_BATCH)  # before the first socket starts the thread
        except zmq.ZMQError:
            pass
    return ctx


class BindError(OSError):
    """A socket could not bind its address (in use, bad interface, malformed endpoint...).

    Attributes:
        address: the endpoint that failed, e.g. ``"tcp://127.0.0.1:7101"``.
        reason: the cause as text, e.g. ``"Address already in use"``.
        errno: the OS/ZeroMQ error number when known (``errno.EADDRINUSE`` for a port in use),
            else ``None``.
    """

    def __init__(self, address: str, reason: str, errno: int | None = None) -> None:
        if errno is None:
            super().__init__(reason)
        else:
            super().__init__(errno, reason)
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot bind {self.address}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.address, self.reason, self.errno))


def _addresses(addrs: str | Iterable[str] | None) -> list[str]:
    if addrs is None:
        return []
    if isinstance(addrs, str):
        return [addrs]
    return list(addrs)


def _new(
    ctx: zmq.Context,
    kind: int,
    *,
    hwm: int,
    linger: int,
    identity: bytes | str | None = None,
    reconnect: bool = True,
    options: Mapping[int, int | bytes] | None = None,
) -> zmq.Socket:
    sock = ctx.socket(kind)
    try:
        # Before anything else and before bind/connect: security mechanisms (CURVE keys,
        # ZAP domains) apply only to connections made after they are set.
        for opt, value in (options or {}).items():
            sock.setsockopt(opt, value)
        sock.setsockopt(zmq.LINGER, linger)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        if reconnect:
            sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
        if identity is not None:
            if isinstance(identity, str):
                identity = identity.encode()
            if not identity or identity[0] == 0:
                raise ValueError("identity must be non-empty and must not start with a zero byte")
            sock.setsockopt(zmq.IDENTITY, identity)
    except BaseException:
        sock.close(0)
        raise
    return sock


def _bind_all(sock: zmq.Socket, addresses: list[str]) -> None:
    for address in addresses:
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise BindError(address, exc.strerror, exc.errno) from exc


def _connect_all(sock: zmq.Socket, addresses: list[str]) -> None:
    for address in addresses:
        try:
            sock.connect(address)
        except BaseException:
            sock.close(0)
            raise


def router(
    ctx: zmq.Context,
    bind: str | Iterable[str] | None = None,
    *,
    hwm: int = PEER_HWM,
    mandatory: bool = False,
    identity: bytes | str | None = None,
    linger: int = 0,
    options: Mapping[int, int | bytes] | None = None,
) -> zmq.Socket:
    """Make a ROUTER socket, optionally bound.

    Without ``mandatory``, a message to an unknown identity or to a peer at its HWM is
    silently dropped. With ``mandatory=True`` (``ROUTER_MANDATORY``) the send raises
    instead: ``zmq.ZMQError`` with ``errno == zmq.EHOSTUNREACH`` for an unknown peer, and
    ``zmq.Again`` for a full pipe when sent with ``zmq.NOBLOCK``.

    Args:
        ctx: the ZeroMQ context.
        bind: one endpoint or several, bound in order; ``None`` to bind later.
        hwm: SNDHWM and RCVHWM, in messages per peer.
        mandatory: set ``ROUTER_MANDATORY``.
        identity: this socket's routing id (for ROUTER-to-ROUTER designs).
        linger: ``LINGER`` in milliseconds.
        options: more socket options, set first (e.g. CURVE keys).

    Returns:
        The socket.

    Raises:
        BindError: an endpoint could not be bound (the socket is closed).
    """
    sock = _new(ctx, zmq.ROUTER, hwm=hwm, linger=linger, identity=identity, options=options)
    if mandatory:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    _bind_all(sock, _addresses(bind))
    return sock


def dealer(
    ctx: zmq.Context,
    connect: str | Iterable[str] | None = None,
    *,
    identity: bytes | str | None = None,
    hwm: int = PEER_HWM,
    linger: int = 0,
    immediate: bool = True,
    options: Mapping[int, int | bytes] | None = None,
) -> zmq.Socket:
    """Make a DEALER socket, optionally connected.

    ``IMMEDIATE = 1`` (the default) queues messages only on completed connections. While no
    peer is connected, ``send(..., zmq.NOBLOCK)`` raises ``zmq.Again`` and nothing is kept,
    so an absent peer costs no memory. (A blocking send would wait for a peer: always send
    with ``zmq.NOBLOCK`` from an event loop.) Once connected, at most ``hwm`` messages queue
    for the peer; after that ``zmq.Again`` again.

    Args:
        ctx: the ZeroMQ context.
        connect: one endpoint or several; ``None`` to connect later.
        identity: this socket's routing id, as a ROUTER peer will see it.
        hwm: SNDHWM and RCVHWM, in messages.
        linger: ``LINGER`` in milliseconds.
        immediate: set ``IMMEDIATE`` (see above).
        options: more socket options, set first (e.g. CURVE keys).

    Returns:
        The socket.
    """
    sock = _new(ctx, zmq.DEALER, hwm=hwm, linger=linger, identity=identity, options=options)
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    _connect_all(sock, _addresses(connect))
    return sock


def pub(ctx: zmq.Context, bind: str | Iterable[str], *, hwm: int = PUB_HWM, linger: int = 0) -> zmq.Socket:
    """Make a bound PUB socket.

    A subscriber that falls ``hwm`` messages behind loses messages (PUB drops, never blocks),
    so a slow subscriber cannot slow the publisher. Publish sequence numbers if subscribers
    must notice the loss.

    Raises:
        BindError: an endpoint could not be bound (the socket is closed).
    """
    sock = _new(ctx, zmq.PUB, hwm=hwm, linger=linger)
    _bind_all(sock, _addresses(bind))
    return sock


def xpub(
    ctx: zmq.Context,
    bind: str | Iterable[str],
    *,
    hwm: int = PUB_HWM,
    linger: int = 0,
    options: Mapping[int, int | bytes] | None = None,
) -> zmq.Socket:
    """Make a bound XPUB socket: a PUB that also reports subscriptions.

    Reading it yields ``b"\\x01" + topic`` when the first subscriber to ``topic`` arrives and
    ``b"\\x00" + topic`` when the last one leaves (a subscriber that disconnects, even by
    crashing, unsubscribes). A publisher can skip the work of publishing while nobody listens.

    Raises:
        BindError: an endpoint could not be bound (the socket is closed).
    """
    sock = _new(ctx, zmq.XPUB, hwm=hwm, linger=linger, options=options)
    _bind_all(sock, _addresses(bind))
    return sock


def sub(
    ctx: zmq.Context,
    connect: str | Iterable[str],
    topics: Iterable[bytes | str] = (b"",),
    *,
    hwm: int = PUB_HWM,
    linger: int = 0,
    options: Mapping[int, int | bytes] | None = None,
) -> zmq.Socket:
    """Make a SUB socket subscribed to ``topics`` (prefixes; ``b""`` is everything) and connected.

    Subscriptions are set before connecting. Remember the slow-joiner effect: messages
    published before the subscription reaches the publisher are not delivered.

    Args:
        connect: one endpoint or several.
        topics: topic prefixes, ``bytes`` or ``str`` (encoded as UTF-8). Empty for none yet.
    """
    sock = _new(ctx, zmq.SUB, hwm=hwm, linger=linger, options=options)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode() if isinstance(topic, str) else topic)
    _connect_all(sock, _addresses(connect))
    return sock


def req(
    ctx: zmq.Context,
    connect: str | Iterable[str],
    *,
    hwm: int = PEER_HWM,
    linger: int = 0,
    options: Mapping[int, int | bytes] | None = None,
) -> zmq.Socket:
    """Make a connected REQ socket.

    For the Lazy Pirate pattern: poll for the reply with a timeout, and on timeout close this
    socket (``LINGER`` is already 0) and make a new one.
    """
    sock = _new(ctx, zmq.REQ, hwm=hwm, linger=linger, options=options)
    _connect_all(sock, _addresses(connect))
    return sock


def bind_to_random_port(sock: zmq.Socket, host: str = "tcp://127.0.0.1") -> tuple[int, str]:
    """Bind ``sock`` to a port the OS picks, on ``host``.

    Uses ZeroMQ's own wildcard port (``host:*``), so there is no window in which another
    process could take the port.

    Args:
        sock: the socket to bind (options such as HWM should already be set).
        host: ``"tcp://" + interface``.

    Returns:
        ``(port, address)``, where ``address`` is the endpoint peers connect to.

    Raises:
        BindError: the bind failed (the socket is left open; it belongs to the caller).
    """
    wildcard = f"{host}:*"
    try:
        sock.bind(wildcard)
    except zmq.ZMQError as exc:
        raise BindError(wildcard, exc.strerror, exc.errno) from exc
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    port = int(endpoint.rsplit(":", 1)[1])
    return port, f"{host}:{port}"


def free_tcp_address(host: str = "127.0.0.1") -> str:
    """Return ``"tcp://host:port"`` for a port that was free a moment ago.

    For writing config files before starting processes. Another process can take the port
    between this call and the bind; prefer :func:`bind_to_random_port` when you hold the
    socket.

    Raises:
        BindError: the OS refused to give a port on ``host``.
    """
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    try:
        with _socket.socket(family, _socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    except OSError as exc:
        raise BindError(f"tcp://{host}:0", exc.strerror or str(exc), exc.errno or _errno.EINVAL) from exc
    if family == _socket.AF_INET6:
        return f"tcp://[{host}]:{port}"
    return f"tcp://{host}:{port}"


# -- fast multipart I/O ----------------------------------------------------------------------

NOBLOCK = 1  # zmq.NOBLOCK as a plain int: pyzmq's enum arithmetic costs more than a small send
NOBLOCK_MORE = 3  # NOBLOCK | SNDMORE


def recv_frames(sock: zmq.Socket) -> list[bytes]:
    """``recv_multipart(NOBLOCK)`` at a lower cost; raises ``zmq.Again`` when nothing waits."""
    f = sock.recv(NOBLOCK, copy=False)
    out = [f.bytes]
    while f.more:
        f = sock.recv(NOBLOCK, copy=False)
        out.append(f.bytes)
    return out


_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def readable(sock: zmq.Socket) -> bool:
    """Whether a message waits on ``sock`` now (its ``EVENTS``: no exception, no wait)."""
    # EVENTS is an int option; pyzmq types ``get`` as ``int | bytes`` for every option.
    return bool(cast(int, sock.get(_EVENTS)) & _POLLIN)


def drain(sock: zmq.Socket, limit: int) -> list[list[bytes]]:
    """Every message waiting on ``sock`` (at most ``limit``), each as its list of frames.

    For a socket the poller reported readable. Reading until ``zmq.Again`` costs an
    exception per drain, and raising one is dear in a process that has just woken from
    poll, where most drains find one or two messages. So after each of the first two
    messages the socket's ``EVENTS`` (a cheaper check) says whether another waits; a
    longer drain goes on until ``zmq.Again``.
    """
    out: list[list[bytes]] = []
    try:
        while len(out) < limit:
            out.append(recv_frames(sock))
            if len(out) < 3 and not readable(sock):
                break
    except zmq.Again:
        pass
    return out


def send_frames(sock: zmq.Socket, frames: list[bytes]) -> None:
    """``send_multipart(NOBLOCK)`` without its per-call overhead (integer flags, no per-frame
    checks): this runs for every message. Raises ``zmq.Again`` before the first frame if it
    cannot queue."""
    last = len(frames) - 1
    for i, f in enumerate(frames):
        sock.send(f, NOBLOCK if i == last else NOBLOCK_MORE)
