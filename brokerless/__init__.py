"""brokerless: a small ZeroMQ messaging layer (no broker, no knowledge of what it carries).

Theory of operation
-------------------

* **Frames.** A message body is one msgpack value per frame (:func:`pack`, :func:`unpack`,
  :func:`unpack_map`). Input from the network is untrusted: decoding checks the size first and
  every failure is a :class:`FrameError` with a short ``reason``, never a msgpack exception.
* **Envelopes.** A ROUTER receives routing frames before the body. :func:`split_envelope`
  cuts them off; the reply is ``envelope + [reply]``, which reaches REQ and DEALER peers alike.
* **Sockets.** :func:`context` makes a context whose I/O thread does not preempt the
  service's loop (``SCHED_BATCH`` on Linux). :func:`router`, :func:`dealer`, :func:`pub`, :func:`sub`, :func:`req` make
  sockets with service defaults (``LINGER=0``, bounded HWMs, fast reconnect, ``IMMEDIATE`` on
  dealers); a failed bind is a :class:`BindError` naming the address.
* **Time.** Everything that needs "now" takes a :class:`Clock`. :class:`FakeClock` moves only
  when told, so :class:`Timers` and the :class:`Reactor` are tested without sleeping.
* **Loop.** :class:`Reactor` is one ``zmq.Poller`` whose timeout is the next timer deadline,
  plus timers and a callback queue that other threads may feed
  (:meth:`Reactor.call_soon_threadsafe`). It is single-threaded and callbacks' exceptions
  propagate to the owner.

Test helpers (socket pairs on random ports, driving a reactor with a fake clock) live in
:mod:`brokerless.testing`, which is not imported here.

This package depends on the standard library, pyzmq and msgpack only.
"""

from .clock import Clock, FakeClock, MonotonicClock
from .framing import FrameError, pack, split_envelope, unpack, unpack_map
from .reactor import Reactor
from .sockets import (
    BindError,
    bind_to_random_port,
    context,
    dealer,
    free_tcp_address,
    pub,
    req,
    router,
    sub,
    xpub,
)
from .timers import TimerHandle, Timers

__all__ = [
    "Reactor",
    "Clock",
    "MonotonicClock",
    "FakeClock",
    "Timers",
    "TimerHandle",
    "pack",
    "unpack",
    "unpack_map",
    "FrameError",
    "split_envelope",
    "BindError",
    "context",
    "router",
    "dealer",
    "pub",
    "xpub",
    "sub",
    "req",
    "bind_to_random_port",
    "free_tcp_address",
]
