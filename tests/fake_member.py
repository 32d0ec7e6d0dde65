"""A fake cruise member for client tests: test scaffolding, not a Raft implementation.

:class:`FakeMember` speaks the contract's client protocol (section 4) on a ROUTER socket and
publishes committed entries (section 5) on a PUB socket, both bound to random loopback ports, from
its own thread. There is no consensus: every ``record`` is "committed" at once into a
:class:`FakeLog` that several fake members may share, and each of them publishes it, as real
members do. It can be told to misbehave so the client's recovery paths can be tested:

* ``drop_requests(n)``: read the next n requests and never answer (a dead or partitioned member);
* ``drop_replies(n)``: carry out the next n requests but lose the replies (a reply lost in flight);
* ``fail_next(code, n=1, **extra)``: answer the next n requests with ``{"ok": false, "error": code}``;
* ``skip_publish(*indexes)``: do not publish these entries (a subscriber must fill the gap);
* ``compact_before(index)``: answer ``entries`` below ``index`` with ``compacted``.

Every request received is kept in ``requests`` (decoded maps), so tests can check what a client
sent (for instance that a retried record carried the same ``seq``).

The integration tests run against real members; this fake only stands in for them in the
client's unit tests.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import zmq

from brokerless import FrameError, bind_to_random_port, pack, split_envelope, unpack_map

TERM = 2  # the fake cluster's term; entries carry it


class FakeLog:
    """The committed log and membership shared by the fake members of one fake cluster.

    Thread-safe: member threads and the test thread append to it.
    """

    def __init__(self, *, term: int = TERM, kv: bool = False) -> None:
        self.lock = threading.Lock()
        self.term = term
        self.kv: dict[str, Any] | None = {} if kv else None
        self.entries: list[dict[str, Any]] = []  # entries[i] has index i + 1
        self.applied: dict[tuple[str, int], tuple[int, int, Any]] = {}  # (client, seq) -> reply
        self.members: list[FakeMember] = []
        self.extra_members: list[dict[str, Any]] = []  # added by add_member
        self.leader: str | None = None
        self.compacted_before = 1  # entries below this index answer `compacted`

    def commit(
        self, value: Any, *, kind: str = "record", origin: tuple[str, int] | None = None
    ) -> tuple[int, int, Any]:
        """Append and "commit" an entry; publish it on every member. Returns (index, term, result).

        With ``origin`` = (client, seq) already applied, returns the first application's answer.
        """
        with self.lock:
            if origin is not None and origin in self.applied:
                return self.applied[origin]
            entry = {"index": len(self.entries) + 1, "term": self.term, "kind": kind, "value": value}
            self.entries.append(entry)
            result = self._apply(entry)
            answer = (entry["index"], entry["term"], result)
            if origin is not None:
                self.applied[origin] = answer
            for m in self.members:
                m._outbox.put(entry)
        return answer

    def _apply(self, entry: dict[str, Any]) -> Any:
        if self.kv is None or entry["kind"] != "record" or not isinstance(entry["value"], dict):
            return None
        v = entry["value"]
        if "put" in v:
            self.kv[v["put"]] = v.get("value")
            return None
        if "delete" in v:
            existed = v["delete"] in self.kv
            self.kv.pop(v["delete"], None)
            return existed
        if "cas" in v:
            if self.kv.get(v["cas"]) != v.get("expect"):
                return False
            self.kv[v["cas"]] = v.get("value")
            return True
        return None

    def query(self, q: Any) -> Any:
        with self.lock:
            if self.kv is None or not isinstance(q, dict):
                return None
            if "get" in q:
                return self.kv.get(q["get"])
            if "keys" in q:
                return sorted(k for k in self.kv if k.startswith(q["keys"] or ""))
            return None

    def values(self) -> list[Any]:
        with self.lock:
            return [e["value"] for e in self.entries if e["kind"] == "record"]


class FakeMember:
    """One fake member: a thread serving a ROUTER (client requests) and a PUB (entries).

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``client_address`` and
    ``publish_address`` are set once started.
    """

    def __init__(self, id: str = "f1", log: FakeLog | None = None, *, ctx: zmq.Context | None = None) -> None:
        self.id = id
        self.log = log if log is not None else FakeLog()
        self._ctx = ctx or zmq.Context.instance()
        self._lock = threading.Lock()
        self._drop_requests = 0
        self._drop_replies = 0
        self._failures: list[dict[str, Any]] = []
        self._skip: set[int] = set()
        self._outbox: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fake-member-{id}", daemon=True)
        self.requests: list[dict[str, Any]] = []
        self.published: list[int] = []
        self.client_address = ""
        self.publish_address = ""
        self.error: BaseException | None = None
        with self.log.lock:
            self.log.members.append(self)
            if self.log.leader is None:
                self.log.leader = id

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> FakeMember:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("fake member did not start")
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self.log.lock:
            if self in self.log.members:
                self.log.members.remove(self)

    def __enter__(self) -> FakeMember:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- controls (from the test thread) -------------------------------------------------------

    def drop_requests(self, n: int) -> None:
        with self._lock:
            self._drop_requests += n

    def drop_replies(self, n: int) -> None:
        with self._lock:
            self._drop_replies += n

    def fail_next(self, code: str, n: int = 1, message: str = "fake failure", **extra: Any) -> None:
        with self._lock:
            self._failures.extend({"ok": False, "error": code, "message": message, **extra} for _ in range(n))

    def skip_publish(self, *indexes: int) -> None:
        with self._lock:
            self._skip.update(indexes)

    def member_map(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "raft": f"inproc://{self.id}-raft-unused",  # the fake has no peers
            "client": self.client_address,
            "publish": self.publish_address,
            "voter": True,
        }

    # -- the member thread ---------------------------------------------------------------------

    def _run(self) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        try:
            _, self.client_address = bind_to_random_port(router)
            _, self.publish_address = bind_to_random_port(pub)
        except BaseException as e:  # reported by start()
            self.error = e
            router.close(0)
            pub.close(0)
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                if router.poll(10, zmq.POLLIN):
                    self._serve_one(router)
                self._publish_pending(pub)
        finally:
            router.close(0)
            pub.close(0)

    def _publish_pending(self, pub: zmq.Socket) -> None:
        while True:
            try:
                entry = self._outbox.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                if entry["index"] in self._skip:
                    continue
            pub.send_multipart([b"entry", pack(entry)])
            self.published.append(entry["index"])

    def _serve_one(self, router: zmq.Socket) -> None:
        frames = router.recv_multipart()
        envelope, body = split_envelope(frames)
        try:
            if len(body) != 1:
                raise FrameError("extra frames")
            request = unpack_map(body[0])
        except FrameError as e:
            router.send_multipart([*envelope, pack(_error("bad_request", str(e)))])
            return
        self.requests.append(request)
        with self._lock:
            if self._drop_requests > 0:
                self._drop_requests -= 1
                return
            failure = self._failures.pop(0) if self._failures else None
        reply = failure if failure is not None else self._answer(request)
        with self._lock:
            if self._drop_replies > 0:
                self._drop_replies -= 1
                return
        router.send_multipart([*envelope, pack(reply)])

    def _answer(self, r: dict[str, Any]) -> dict[str, Any]:
        op = r.get("op")
        log = self.log
        if op == "record":
            if "value" not in r:
                return _error("bad_request", "record needs a value")
            origin = None
            if "client" in r and "seq" in r:
                origin = (r["client"], r["seq"])
            index, term, result = log.commit(r["value"], origin=origin)
            return {"ok": True, "index": index, "term": term, "result": result}
        if op == "status":
            with log.lock:
                n = len(log.entries)
                members = [m.member_map() for m in log.members] + list(log.extra_members)
                return {
                    "ok": True,
                    "id": self.id,
                    "role": "leader" if log.leader == self.id else "follower",
                    "term": log.term,
                    "leader": log.leader,
                    "commit_index": n,
                    "applied_index": n,
                    "last_index": n,
                    "members": members,
                }
        if op == "entries":
            start, limit = r.get("from"), r.get("limit", 100)
            if type(start) is not int or type(limit) is not int or start < 0 or limit < 0:
                return _error("bad_request", "entries needs int from and limit")
            with log.lock:
                if start < log.compacted_before:
                    return {
                        **_error("compacted", f"entries before {log.compacted_before} are compacted"),
                        "snapshot_index": log.compacted_before - 1,
                    }
                lo = max(start, 1) - 1
                return {"ok": True, "entries": [dict(e) for e in log.entries[lo : lo + limit]]}
        if op == "query":
            if log.kv is None:  # as the stream state machine answers
                return _error("bad_request", "the stream state machine answers no queries; read the log")
            return {"ok": True, "result": log.query(r.get("query")), "index": len(log.entries)}
        if op == "read_index":
            return {"ok": True, "index": len(log.entries)}
        if op == "add_member":
            m = r.get("member")
            if not isinstance(m, dict) or not {"id", "raft", "client", "publish"} <= set(m):
                return _error("bad_request", "add_member needs member {id, raft, client, publish}")
            with log.lock:
                log.extra_members.append({**m, "voter": True})
            index, _, _ = log.commit({"add": m["id"]}, kind="config")
            return {"ok": True, "index": index}
        if op == "remove_member":
            with log.lock:
                known = [x["id"] for x in log.extra_members] + [x.id for x in log.members]
                if r.get("id") not in known:
                    return _error("not_member", f"{r.get('id')!r} is not a member")
                log.extra_members = [x for x in log.extra_members if x["id"] != r["id"]]
            index, _, _ = log.commit({"remove": r["id"]}, kind="config")
            return {"ok": True, "index": index}
        if op == "transfer_leader":
            with log.lock:
                if r.get("to") not in [x.id for x in log.members]:
                    return _error("not_member", f"{r.get('to')!r} is not a member")
                log.leader = r["to"]
            return {"ok": True, "leader": r["to"]}
        return _error("bad_request", f"unknown op {op!r}")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


class FakeCluster:
    """``n`` fake members sharing one :class:`FakeLog`; a context manager."""

    def __init__(self, n: int = 3, *, kv: bool = False, ctx: zmq.Context | None = None) -> None:
        self.log = FakeLog(kv=kv)
        self.members = [FakeMember(f"f{i + 1}", self.log, ctx=ctx) for i in range(n)]

    def __enter__(self) -> FakeCluster:
        try:
            for m in self.members:
                m.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    @property
    def client_addresses(self) -> list[str]:
        return [m.client_address for m in self.members]
