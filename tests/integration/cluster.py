"""A real cluster of member processes on loopback, for integration tests.

Every member is ``python -m cruise run CONFIG --id ID`` with its log in a file;
ports are free loopback ports, data dirs live under the test's temp dir, and
``close()`` SIGKILLs whatever is still running. Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import yaml
import zmq

from brokerless.testing import free_tcp_addresses

ROOT = Path(__file__).resolve().parents[2]


def request(
    addr: str, msg: dict | bytes, timeout: float = 2.0, ctx: zmq.Context | None = None
) -> dict | None:
    """One REQ round trip; None when nothing answers in time."""
    ctx = ctx or zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(addr)
    try:
        s.send(msg if isinstance(msg, bytes) else msgpack.packb(msg, use_bin_type=True))
        if not s.poll(int(timeout * 1000)):
            return None
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close()


class Cluster:
    def __init__(self, tmp: Path, n: int = 3, *, extra_env: dict | None = None, **settings: Any) -> None:
        self.tmp = Path(tmp)
        self.extra_env = extra_env or {}
        self.ids = [f"n{i + 1}" for i in range(n)]
        addrs = iter(free_tcp_addresses(3 * n))  # distinct, and never a connection's source port
        self.members = [
            {"id": i, "raft": next(addrs), "client": next(addrs), "publish": next(addrs)} for i in self.ids
        ]
        cfg = {
            "members": self.members,
            "data_dir": str(self.tmp / "data" / "{id}"),
            "heartbeat_ms": 20,
            "election_timeout_ms": [150, 300],
            "request_timeout_ms": 3000,
        }
        cfg.update(settings)
        self.config_path = self.tmp / "cluster.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        (self.tmp / "logs").mkdir(exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def member(self, id: str) -> dict:
        return next(m for m in self.members if m["id"] == id)

    def client_addr(self, id: str) -> str:
        return self.member(id)["client"]

    def publish_addr(self, id: str) -> str:
        return self.member(id)["publish"]

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.extra_env)
        return env

    def start(self, *ids: str) -> None:
        for i in ids or self.ids:
            log = open(self.tmp / "logs" / f"{i}.log", "ab")
            self.procs[i] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cruise",
                    "run",
                    str(self.config_path),
                    "--id",
                    i,
                    "--log-format",
                    "json",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=str(self.tmp),
            )
            log.close()

    def kill(self, id: str, sig: int = signal.SIGKILL) -> int:
        p = self.procs.pop(id)
        p.send_signal(sig)
        return p.wait(10)

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def log_text(self, id: str) -> str:
        return (self.tmp / "logs" / f"{id}.log").read_text(errors="replace")

    def status(self, id: str, timeout: float = 1.0) -> dict | None:
        return request(self.client_addr(id), {"op": "status"}, timeout)

    def wait_leader(self, among: list[str] | None = None, timeout: float = 15.0) -> str:
        """The id every live member agrees leads, once they do."""
        among = among or list(self.procs)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            sts = [self.status(i, 0.5) for i in among]
            last = sts
            leaders = {s["leader"] for s in sts if s}
            if all(sts) and len(leaders) == 1 and None not in leaders:
                lead = leaders.pop()
                # The leader must be one of the live members asked, and know it leads.
                if lead in among and next(s for s in sts if s["id"] == lead)["role"] == "leader":
                    return lead
            time.sleep(0.05)
        raise AssertionError(f"no agreed leader within {timeout}s: {json.dumps(last)}\n{self._logs_tail()}")

    def wait_applied(self, index: int, among: list[str] | None = None, timeout: float = 15.0) -> None:
        among = among or list(self.procs)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = [self.status(i, 0.5) for i in among]
            if all(s and s["applied_index"] >= index for s in sts):
                return
            time.sleep(0.05)
        raise AssertionError(f"not every member applied {index} within {timeout}s: {sts}")

    def entries(self, id: str, start: int = 1) -> list[dict]:
        out: list[dict] = []
        while True:
            r = request(self.client_addr(id), {"op": "entries", "from": start, "limit": 1000}, 3.0)
            assert r and r["ok"], r
            if not r["entries"]:
                return out
            out.extend(r["entries"])
            start = out[-1]["index"] + 1

    def _logs_tail(self) -> str:
        parts = []
        for i in self.ids:
            p = self.tmp / "logs" / f"{i}.log"
            if p.exists():
                parts.append(f"--- {i}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)
