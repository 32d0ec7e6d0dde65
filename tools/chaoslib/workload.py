"""The clients of a chaos run: threads that each hold one ``cruise.Client`` and record history.

Each client is a thread with its own :class:`cruise.Client` over every member's advertised
client address, starting at a different member so that followers forward too. A Client
retries through the next member on a timeout or an ``unavailable`` answer until its deadline,
as an application would; what the history records is the outcome of one whole call.

Every call is two events in the history (the format of :mod:`chaoslib.history`): an
``invoke`` before it is sent, and its completion:

- ``ok``: the cluster acknowledged it (a record's index, a read's value, a cas that swapped);
- ``fail``: it certainly had no effect: a cas answered "not swapped" (no ``error``), a read
  that got no answer (a read changes nothing), or a request refused as it stood
  (``bad_request``, ``too_large``: never expected here);
- ``info``: unknown. A write gave up (``unavailable``, no reply, ``stale``, ``not_member``),
  and a copy of it may still reach the log; the checkers must allow it either way.

One Client per thread for the whole run, never a new one after a failure: a Client numbers
its records ``(client, seq)`` for at-most-once retries, and a second Client under the same id
would start its seqs again at 1 and collide with the first's session.

The workloads:

- :class:`LogWorkload` (``state_machine: stream``): each client records the unique values
  ``{client}-{seq}`` one after the other (``f: record``);
- :class:`KvWorkload` (``state_machine: kv``): each client puts, gets (a linearizable
  ``query``) and compare-and-sets a few keys, with unique values, so a checker can tell every
  write apart.

Times are ``time.monotonic()`` seconds, the same clock as the fault schedule.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from chaoslib.history import Kind, Recorder
from cruise import Client, CruiseError

__all__ = ["DEFINITE", "KEYS", "KvWorkload", "LogWorkload", "Workload"]

# Codes that say the request was refused as it stood, so it cannot take effect later.
DEFINITE = frozenset({"bad_request", "too_large"})
KEYS = ("k0", "k1", "k2")  # few keys, so clients contend and cas both swaps and misses


class Outcome(Exception):
    """Raised by a call to end its op with a kind other than ``ok`` (a cas not swapped)."""

    def __init__(self, kind: Kind, index: int | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.index = index


class Workload:
    """N client threads running :meth:`step` until :meth:`stop`.

    Args:
        addrs: every member's advertised client address.
        clients: how many client threads.
        recorder: where events go (thread-safe).
        seed: the op mix of client k comes from ``random.Random(f"{seed}-{k}")``.
        timeout: the seconds one Client call may take, retries included.
        think: seconds a client waits between calls, to keep the CPU use of a run modest.
    """

    def __init__(
        self,
        addrs: Sequence[str],
        clients: int,
        recorder: Recorder,
        *,
        seed: int,
        timeout: float = 5.0,
        think: float = 0.01,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addrs = list(addrs)
        self.recorder = recorder
        self.timeout = timeout
        self.think = think
        self.now = now
        self.seed = seed
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(k,), name=f"chaos-c{k + 1}", daemon=True)
            for k in range(clients)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, wait: float) -> list[str]:
        """Ask every client to finish its call; the names of those still running after ``wait`` s.

        A call in flight ends by its own deadline, so ``wait`` a little over ``timeout`` is
        enough; a thread still alive is a daemon and is reported, never waited on forever.
        """
        self._stop.set()
        deadline = time.monotonic() + wait
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    def _run(self, k: int) -> None:
        name = f"c{k + 1}"
        rng = random.Random(f"{self.seed}-{k}")
        order = self.addrs[k % len(self.addrs) :] + self.addrs[: k % len(self.addrs)]
        with Client(order, timeout=self.timeout, retries=len(order), client_id=f"chaos-{name}") as client:
            seq = 0
            while not self._stop.is_set():
                seq += 1
                self.step(client, name, seq, rng)
                if self.think:
                    self._stop.wait(self.think)

    def step(self, client: Client, name: str, seq: int, rng: random.Random) -> None:
        """One call and its two events."""
        raise NotImplementedError

    def call(
        self,
        name: str,
        f: str,
        key: str | None,
        value: Any,
        do: Callable[[], tuple[Any, int | None]],
    ) -> None:
        """Record the invoke, run ``do`` (it returns the ok value and index), record the end.

        A write that gave up is ``info`` (it may still commit); a read that gave up is
        ``fail`` (a read takes no effect, so it constrains nothing).
        """
        self.recorder.invoke(name, f, key=key, value=value, t=self.now())
        try:
            got, index = do()
        except Outcome as o:
            self.recorder.complete(name, o.kind, index=o.index, t=self.now())
        except CruiseError as e:
            kind: Kind = "fail" if e.code in DEFINITE or f == "get" else "info"
            self.recorder.complete(name, kind, error=e.code, t=self.now())
        except Exception as e:  # noqa: BLE001 -- a socket error is an unknown outcome, not a crash
            kind = "fail" if f == "get" else "info"
            self.recorder.complete(name, kind, error=type(e).__name__, t=self.now())
        else:
            self.recorder.complete(name, "ok", value=got, index=index, t=self.now())


class LogWorkload(Workload):
    """Unique values ``{client}-{seq}`` recorded one after the other (``state_machine: stream``)."""

    def step(self, client: Client, name: str, seq: int, rng: random.Random) -> None:
        value = f"{name}-{seq}"

        def do() -> tuple[Any, int | None]:
            return value, client.record(value).index

        self.call(name, "record", None, value, do)


class KvWorkload(Workload):
    """put, get and cas on :data:`KEYS` (``state_machine: kv``).

    A value is ``{client}-{seq}``, unique in the run. A cas expects the value this client last
    saw for the key (read, written or swapped in), which is often stale under contention, so
    both outcomes occur; one answered "not swapped" completes as ``fail`` without ``error``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def step(self, client: Client, name: str, seq: int, rng: random.Random) -> None:
        key = rng.choice(KEYS)
        roll = rng.random()
        new = f"{name}-{seq}"
        if roll < 0.4:
            self.call(name, "get", key, None, lambda: self._get(client, name, key))
        elif roll < 0.7:
            self.call(name, "put", key, new, lambda: self._put(client, name, key, new))
        else:
            with self._lock:
                expect = self._seen.get((name, key))
            self.call(name, "cas", key, [expect, new], lambda: self._cas(client, name, key, expect, new))

    def _remember(self, name: str, key: str, value: Any) -> None:
        with self._lock:
            self._seen[(name, key)] = value

    def _get(self, client: Client, name: str, key: str) -> tuple[Any, int | None]:
        reply = client.request("query", query={"get": key})
        value = reply.get("result")
        self._remember(name, key, value)
        return value, reply.get("index")

    def _put(self, client: Client, name: str, key: str, new: str) -> tuple[Any, int | None]:
        r = client.record({"put": key, "value": new})
        self._remember(name, key, new)
        return None, r.index

    def _cas(self, client: Client, name: str, key: str, expect: Any, new: str) -> tuple[Any, int | None]:
        r = client.record({"cas": key, "expect": expect, "value": new})
        if r.result is not True:
            raise Outcome("fail", r.index)
        self._remember(name, key, new)
        return None, r.index
