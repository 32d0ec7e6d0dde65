"""etcd's side of ``tools/bench_snapshot``: the bench's 3-member etcd cluster (every setting at its
default, so fsync on) with ``--snapshot-count`` set to the run's ``snapshot_every``.

etcd 3.4 snapshots every ``--snapshot-count`` applied entries and then compacts its raft log
keeping 5000 entries behind the snapshot (``SnapshotCatchUpEntries``, fixed in 3.4: cruise's
``retain_entries``); it compacts whether or not a follower is down. A follower whose next entry
is compacted gets the leader's whole backend (the bbolt file, every key's MVCC history, merged
with a raft snapshot) over its peer HTTP link, which it saves, then applies by swapping its
backend for it.

What the scenarios (:mod:`benchlib.snap_plan`) read here: ``Maintenance/Status`` (through a load
process: gRPC is never imported by the bench); a restarted follower's applied index from its
``/metrics`` (``etcd_server_proposals_applied_total``; each member serves them on a port of its
own, which answers from its start, where the client port opens only once the member has
published itself through raft); and the members' zap JSON logs (``msg``, ``ts``):
the leader's ``triggering snapshot`` / ``saved snapshot`` / ``compacted Raft logs``
(``compact-index``) and ``sending database snapshot`` (``bytes``) / ``sent database snapshot``;
the follower's ``received and saved database snapshot`` and ``applied snapshot``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .etcd_side import NAMES, EtcdCluster
from .pool import Pool
from .procs import BenchError, Processes, wait_for
from .snap_plan import events

_SNAP_EVENTS = {"triggering snapshot", "saved snapshot", "compacted Raft logs"}


class EtcdSide:
    system = "etcd"

    def __init__(self, root: Path, name: str, procs: Processes, pool: Pool, o: argparse.Namespace) -> None:
        self.pool = pool
        self.c = EtcdCluster(
            root, procs, pool, name=name, extra_args=["--snapshot-count", str(o.snapshot_every)], metrics=True
        )

    def start(self) -> str:
        return self.c.start()

    def leader(self) -> str:
        return self.c.check_leader()

    def followers(self) -> list[str]:
        lead = self.leader()
        return [n for n in NAMES if n != lead and n in self.c.popen]

    def status(self, member: str) -> dict[str, Any]:
        [[st]] = self.pool.run("benchlib.etcd_side:statuses", [{"targets": [self.c.client[member]]}], 30)
        if st is None:
            raise BenchError(f"etcd: {member} did not answer Status")
        return st

    def applied(self, member: str) -> int:
        return int(self.status(member)["raft_applied_index"])

    def stop_member(self, member: str) -> None:
        self.c.stop_member(member)

    def start_member(self, member: str) -> None:
        self.c.start_member(member)

    def target(self, member: str) -> str:
        return self.c.client[member]

    def watch_args(self, leader: str, follower: str) -> dict[str, Any]:
        m = self.c.metrics[follower]
        return {"leader": self.target(leader), "follower": self.target(follower), "follower_metrics": m}

    def put_job(self) -> tuple[str, dict[str, Any]]:
        return "benchlib.kv_etcd:put_loop", {"target": self.c.client[self.leader()]}

    def wait_compacted(self, past: int, timeout: float, newer_than: int = 0) -> dict[str, Any]:
        """Wait until the leader's newest snapshot event is a compaction of its raft log past
        ``past`` (no snapshot being taken, and a follower whose log ends at ``past`` needs one)
        after a snapshot past ``newer_than``."""
        lead = self.leader()
        log = self.c.log_path(lead)

        def settled() -> dict[str, Any] | None:
            evs = events(log, _SNAP_EVENTS, key="msg", ts="ts")
            saved = [e["snapshot-index"] for e in evs if e["msg"] == "saved snapshot"]
            last = evs[-1] if evs else {}
            if (
                last.get("msg") == "compacted Raft logs"
                and last["compact-index"] > past
                and saved[-1] > newer_than
            ):
                return evs
            return None

        evs, waited = wait_for(f"etcd: {lead}'s raft log compacted past {past}", settled, timeout, 0.2)
        saved = [e for e in evs if e["msg"] == "saved snapshot"]
        st = self.status(lead)
        return {
            "snapshot_index": saved[-1]["snapshot-index"] if saved else None,
            "first_index": evs[-1]["compact-index"] + 1,
            "applied_index": st["raft_applied_index"],
            "db_size": st["db_size"],
            "waited_s": round(waited, 1),
        }

    def transfer(self, leader: str, follower: str, since: float) -> dict[str, Any]:
        names = {"sending database snapshot", "sent database snapshot"}
        lead_ev = [e for e in events(self.c.log_path(leader), names, key="msg", ts="ts") if e["t"] >= since]
        fol_names = {"received and saved database snapshot", "applied snapshot"}
        fol_ev = [
            e for e in events(self.c.log_path(follower), fol_names, key="msg", ts="ts") if e["t"] >= since
        ]
        starts = [e for e in lead_ev if e["msg"] == "sending database snapshot"]
        ends = [e for e in lead_ev if e["msg"] == "sent database snapshot"]
        out: dict[str, Any] = {"streams": len(starts)}
        if starts and ends:
            first = max((s for s in starts if s["t"] <= ends[-1]["t"]), key=lambda e: e["t"])
            out.update(
                snapshot_index=first.get("snapshot-index"),
                snapshot_bytes=first.get("bytes"),
                transfer_started=first["t"],
                transfer_ended=ends[-1]["t"],
                transfer_s=ends[-1]["t"] - first["t"],
                transfer_started_s=first["t"] - since,
            )
        saved = [e for e in fol_ev if e["msg"] == "received and saved database snapshot"]
        if saved:
            out["snapshot_db_bytes"] = saved[0].get("incoming-snapshot-size-bytes")
        applied = [e for e in fol_ev if e["msg"] == "applied snapshot"]
        if applied:
            out["installed_s"] = applied[0]["t"] - since
        return out

    def rss(self) -> dict[str, float | None]:
        return self.c.rss()

    def pids(self) -> dict[str, int]:
        return self.c.pids()

    def stop(self) -> None:
        self.c.stop()
