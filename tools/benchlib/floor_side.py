"""The floor: what this machine allows a single writer, measured in the same run.

A replicated write acknowledged by a quorum of 3 costs at least four network hops and one
durable write: client -> leader -> follower (writes the record, fdatasync) -> leader ->
client. The *floor* workload runs exactly that chain with nothing else in it, so a single
writer's p50 can be read as a multiple of what the machine (its loopback, its ZeroMQ, its
scheduler waking sleeping Python processes, its disk's fdatasync) gives anyone:

* a "leader" process: a ROUTER bound for the client and a DEALER connected to the follower,
  both in one blocking ``zmq.Poller.poll`` (the process sleeps between messages, as a cruise
  member does). A request from the client goes on to the follower unchanged; the
  follower's answer comes back to the client as a cruise success reply.
* a "follower" process: a ROUTER, a blocking poll; each request's bytes (with a 4-byte
  length) are written at the next offset of a file in the bench's temp dir, then
  ``os.fdatasync``, then it answers. The file is zero-filled (and synced) ahead when it is
  created, as cruise's WAL segments are, so each fdatasync flushes the data block and not
  the file's size; past its end the offset wraps to 0. (With the bench's ``--no-fsync``
  the follower skips the fdatasync, as cruise's members then do.)
* the client is cruise's own single writer (:func:`benchlib.cruise_side.single_writer`, one
  REQ, one record at a time, the same ``client``/``seq`` bodies) in a load process, so only
  the chain differs from cruise's *single* figure.

When *single* runs too, the floor is measured inside its rounds (system ``machine``), so
drift on a shared machine hits both alike; its figures are reported under ``floor``.

Run as ``python -m benchlib.floor_side leader|follower ...`` for the two chain processes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from .cruise_side import request
from .procs import BenchError, Processes, child_env, free_ports, progress, rss_mb, wait_for

FILE_BYTES = 8 * 1024 * 1024  # zero-filled ahead once; offsets wrap past it
_REPLY = msgpack.packb({"ok": True, "index": 1, "term": 1, "result": None}, use_bin_type=True)
_POLL_MS = 1000  # wake once a second to notice an orphaned process; otherwise asleep in poll


class FloorChain:
    """The leader and follower processes of the floor chain."""

    def __init__(self, root: Path, procs: Processes, tools_dir: Path, fsync: bool = True) -> None:
        self.dir = root / "floor"
        self.fsync = fsync
        (self.dir / "logs").mkdir(parents=True)
        self.procs = procs
        self.tools_dir = tools_dir
        front, back = free_ports(2)
        self.addr = f"tcp://127.0.0.1:{front}"  # where the client sends
        self.follower_addr = f"tcp://127.0.0.1:{back}"
        self.popen: dict[str, Any] = {}
        self.ctx = zmq.Context()

    def start(self, timeout: float = 20.0) -> None:
        t0 = time.monotonic()
        # The repo root too: benchlib.cruise_side imports brokerless, which need not be installed.
        env = child_env(str(self.tools_dir.parent), str(self.tools_dir))
        progress("floor: starting the leader and follower processes...")
        for role, args in (
            (
                "follower",
                ["--bind", self.follower_addr, "--file", str(self.dir / "follower.log")]
                + ([] if self.fsync else ["--no-fsync"]),
            ),
            ("leader", ["--bind", self.addr, "--follower", self.follower_addr]),
        ):
            cmd = [sys.executable, "-m", "benchlib.floor_side", role, *args]
            self.popen[role] = self.procs.spawn(
                f"floor {role}", cmd, self.dir / "logs" / f"{role}.log", env=env, cwd=str(self.dir)
            )

        def answered() -> bool | None:
            dead = [f"{r} exited with {p.poll()}" for r, p in self.popen.items() if p.poll() is not None]
            if dead:
                raise BenchError(f"floor: {', '.join(dead)}; logs in {self.dir / 'logs'}")
            reply = request(self.ctx, self.addr, {"op": "record", "value": b"ping"}, 1.0)
            return True if reply and reply.get("ok") else None

        wait_for("floor: a round trip through the chain", answered, timeout)
        progress(f"floor: ready ({time.monotonic() - t0:.1f} s)")

    def pids(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.popen.items()}

    def rss(self) -> dict[str, float | None]:
        return {role: rss_mb(pid) for role, pid in self.pids().items()}

    def stop(self) -> None:
        for p in self.popen.values():
            self.procs.stop(p)
        self.ctx.destroy(linger=0)


# -- the chain processes ----------------------------------------------------------------------


def _orphaned(parent: int) -> bool:
    return os.getppid() != parent


def _leader(bind: str, follower: str) -> int:
    parent = os.getppid()
    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    front.setsockopt(zmq.LINGER, 0)
    front.bind(bind)
    back = ctx.socket(zmq.DEALER)
    back.setsockopt(zmq.LINGER, 0)
    back.connect(follower)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    while True:
        events = dict(poller.poll(_POLL_MS))
        if not events:
            if _orphaned(parent):
                return 0
            continue
        if front in events:
            back.send_multipart(front.recv_multipart())  # [client id, "", body] on to the follower
        if back in events:
            frames = back.recv_multipart()  # [client id, "", ack]
            frames[-1] = _REPLY
            front.send_multipart(frames)


def _follower(bind: str, path: str, fsync: bool = True) -> int:
    parent = os.getppid()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    zeros = bytes(1 << 20)
    for _ in range(FILE_BYTES // len(zeros)):
        os.write(fd, zeros)
    os.fsync(fd)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(bind)
    offset = 0
    while True:
        if not sock.poll(_POLL_MS):
            if _orphaned(parent):
                return 0
            continue
        frames = sock.recv_multipart()  # [leader id, client id, "", body]
        body = frames[-1]
        data = len(body).to_bytes(4, "big") + body
        if offset + len(data) > FILE_BYTES:
            offset = 0
        os.pwrite(fd, data, offset)
        if fsync:
            os.fdatasync(fd)
        offset += len(data)
        frames[-1] = b"ok"
        sock.send_multipart(frames)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="floor_side")
    sub = ap.add_subparsers(dest="role", required=True)
    lead = sub.add_parser("leader")
    lead.add_argument("--bind", required=True)
    lead.add_argument("--follower", required=True)
    fol = sub.add_parser("follower")
    fol.add_argument("--bind", required=True)
    fol.add_argument("--file", required=True)
    fol.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args(argv)
    if args.role == "leader":
        return _leader(args.bind, args.follower)
    return _follower(args.bind, args.file, args.fsync)


if __name__ == "__main__":
    sys.exit(_main())
