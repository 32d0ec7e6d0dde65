"""cruise's side of ``tools/bench_snapshot``: a 3-member ``state_machine: kv`` cluster with the
run's ``snapshot_every`` / ``retain_entries`` (/ ``wal_segment_bytes``), fsync on, members
logging JSON at ``info`` (their snapshot events: ``snapshot_started``, ``snapshot_saved``,
``snapshot_stream_started``, ``snapshot_stream_ended``, ``snapshot_installed``).

What the scenarios (:mod:`benchlib.snap_plan`) read here:

* the member's ``status``: ``applied_index``, ``commit_index``, ``snapshot_index`` (the newest
  snapshot saved), ``first_index`` (the log's first entry after compaction);
* the transfer, from the logs: the leader's ``snapshot_stream_started`` (``bytes``: the
  snapshot's state, what is streamed) and ``snapshot_stream_ended``, the follower's
  ``snapshot_installed``; the snapshot file (``snapshot-<index>.snap``) in the leader's data dir;
* :meth:`CruiseSide.pause`: the snapshot pause of the *memory* scenario.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .cruise_side import IDS, CruiseCluster, request
from .pool import Pool
from .procs import BenchError, Processes, progress, wait_for
from .snap_plan import Probes, _ms, events, put_many
from .snap_probe import phase

ROOM_PER_S = 2000  # entries the probes could add per second, at most (the writer: about 500)


class CruiseSide:
    system = "cruise"

    def __init__(self, root: Path, name: str, procs: Processes, repo: Path, o: argparse.Namespace) -> None:
        settings: dict[str, Any] = {"snapshot_every": o.snapshot_every, "retain_entries": o.retain_entries}
        if o.wal_segment_bytes:
            settings["wal_segment_bytes"] = o.wal_segment_bytes
        self.every = o.snapshot_every
        self.c = CruiseCluster(
            root, name, procs, repo, fsync=True, state_machine="kv", settings=settings, log_level="info"
        )

    def start(self) -> str:
        return self.c.start()

    def leader(self) -> str:
        return self.c.check_leader()

    def followers(self) -> list[str]:
        lead = self.leader()
        return [m for m in IDS if m != lead and m in self.c.popen]

    def status(self, member: str, timeout: float = 2.0) -> dict[str, Any]:
        st = request(self.c.ctx, self.c.client_addr(member), {"op": "status"}, timeout)
        if not st or not st.get("ok"):
            raise BenchError(f"cruise: {member} did not answer status")
        return st

    def applied(self, member: str) -> int:
        return int(self.status(member)["applied_index"])

    def stop_member(self, member: str) -> None:
        self.c.stop_member(member)

    def start_member(self, member: str) -> None:
        self.c.start_member(member)

    def target(self, member: str) -> str:
        return self.c.client_addr(member)

    def watch_args(self, leader: str, follower: str) -> dict[str, Any]:
        return {"leader": self.target(leader), "follower": self.target(follower)}

    def put_job(self) -> tuple[str, dict[str, Any]]:
        return "benchlib.kv_cruise:put_loop", {"addr": self.c.client_addr(self.leader()), "client_seq": True}

    def wait_compacted(self, past: int, timeout: float, newer_than: int = 0) -> dict[str, Any]:
        """Wait until the leader has no snapshot due or being written, its newest is past
        ``newer_than`` and its log starts after ``past`` (so a follower whose log ends at
        ``past`` needs the snapshot)."""
        lead = self.leader()

        def settled() -> dict[str, Any] | None:
            st = self.status(lead)
            snap, applied = st["snapshot_index"], st["applied_index"]
            if snap > newer_than and applied - snap < self.every and st["first_index"] > past + 1:
                return st
            return None

        st, waited = wait_for(f"cruise: {lead}'s snapshot and compaction past {past}", settled, timeout, 0.2)
        return {
            "snapshot_index": st["snapshot_index"],
            "first_index": st["first_index"],
            "applied_index": st["applied_index"],
            "waited_s": round(waited, 1),
        }

    def transfer(self, leader: str, follower: str, since: float) -> dict[str, Any]:
        names = {"snapshot_stream_started", "snapshot_stream_ended"}
        lead_ev = [
            e for e in events(self.c.log_path(leader), names) if e["t"] >= since and e.get("to") == follower
        ]
        starts = [e for e in lead_ev if e["event"] == "snapshot_stream_started"]
        ends = [e for e in lead_ev if e["event"] == "snapshot_stream_ended"]
        inst = [e for e in events(self.c.log_path(follower), {"snapshot_installed"}) if e["t"] >= since]
        out: dict[str, Any] = {
            "streams": len(starts),
            "streams_failed": sum(1 for e in ends if not e.get("ok")),
        }
        ok = [e for e in ends if e.get("ok")]
        if starts and ok:
            last = max(
                (s for s in starts if s["t"] <= ok[-1]["t"]), key=lambda e: e["t"]
            )  # the one that completed
            index = last.get("index")
            out.update(
                snapshot_index=index,
                snapshot_bytes=last.get("bytes"),
                snapshot_file_bytes=_file_size(self.c.data_dir(leader), index),
                transfer_started=last["t"],
                transfer_ended=ok[-1]["t"],
                transfer_s=ok[-1]["t"] - last["t"],
                transfer_started_s=last["t"] - since,
            )
        if inst:
            out["installed_s"] = inst[0]["t"] - since
        return out

    def rss(self) -> dict[str, float | None]:
        return self.c.rss()

    def pids(self) -> dict[str, int]:
        return self.c.pids()

    def stop(self) -> None:
        self.c.stop()

    # -- the snapshot pause (memory scenario) ---------------------------------------------------
    def pause(self, pool: Pool, probes: Probes, o: argparse.Namespace) -> dict[str, Any]:
        """The leader's loop while it snapshots ``--keys`` keys with only the probes running.

        A writer and a status pinger on the leader; ``--before`` quiet seconds; then puts that
        overwrite keys until ``--margin`` entries are left before the leader's next snapshot,
        which the writer's own puts then cross. Each member snapshots at about the same index:
        the figures are the pinger's and the writer's replies within the leader's
        ``snapshot_started`` .. ``snapshot_saved`` (the state is frozen just before
        ``snapshot_started``; a reply held up by the freeze was in flight at that moment, so
        :func:`phase` counts it), and the writer's within all three members' windows (a
        follower's freeze holds up the acknowledgements a put waits for)."""
        lead = self.leader()
        st = self.status(lead)
        threshold = st["snapshot_index"] + self.every
        while threshold - st["applied_index"] < ROOM_PER_S * o.before + 2 * o.margin:
            threshold += self.every  # the probes alone must not reach it in the quiet seconds
        addr = self.c.client_addr(lead)
        writer_job = {"kind": "writer", "system": "cruise", "where": addr}
        writer_job.update(nkeys=o.keys, value_bytes=o.value_bytes)
        jobs = [writer_job, {"kind": "pinger", "addr": addr, "interval": o.ping_ms / 1000}]
        t_probes = probes.start(jobs, o.before + o.keys / 1000 + 2 * 60)
        time.sleep(o.before)
        t_quiet = time.time()
        while (left := threshold - self.status(lead)["applied_index"]) > 2 * o.margin:
            put_many(pool, self, o, left - o.margin, f"overwrite up to {o.margin} short of {threshold}")
        progress(f"cruise: {left} entries before the snapshot at {threshold}; the writer crosses them")
        windows, _ = wait_for(
            "cruise: every member's snapshot after the quiet seconds",
            lambda: self._windows(t_quiet),
            120.0,
            0.2,
        )
        time.sleep(0.5)
        writer, pinger = probes.stop()
        t0, t1 = windows[lead]
        first, last = min(w[0] for w in windows.values()), max(w[1] for w in windows.values())
        index = self._started_index(lead, t_quiet)
        w = {
            "snapshot_index": index,
            "snapshot_s": t1 - t0,
            "snapshot_file_bytes": _file_size(self.c.data_dir(lead), index),
            "entries_short_when_probes_alone": left,
            "members_snapshot_s": {m: round(b - a, 3) for m, (a, b) in windows.items()},
            "members_snapshots_span_s": last - first,
            "writer_quiet": phase(writer, t_probes + 0.5, t_quiet),
            "writer_snapshot": phase(writer, t0, t1),
            "writer_snapshots": phase(writer, first, last),
            "pinger_quiet": phase(pinger, t_probes + 0.5, t_quiet),
            "pinger_snapshot": phase(pinger, t0, t1),
        }
        progress(
            f"cruise: snapshot at {index} took {w['snapshot_s']:.2f} s; status max "
            f"{_ms(w['pinger_snapshot']['max_ms'])} in it (quiet {_ms(w['pinger_quiet']['max_ms'])}), "
            f"writer max {_ms(w['writer_snapshot']['max_ms'])} (quiet {_ms(w['writer_quiet']['max_ms'])}, "
            f"all members' snapshots {_ms(w['writer_snapshots']['max_ms'])})"
        )
        return w

    def _windows(self, since: float) -> dict[str, tuple[float, float]] | None:
        """Each member's first snapshot started after ``since``: (started, saved), once every
        member's is saved."""
        out = {}
        for m in IDS:
            evs = [
                e
                for e in events(self.c.log_path(m), {"snapshot_started", "snapshot_saved"})
                if e["t"] >= since
            ]
            started = [e for e in evs if e["event"] == "snapshot_started"]
            saved = [
                e
                for e in evs
                if started and e["event"] == "snapshot_saved" and e["index"] == started[0]["index"]
            ]
            if not saved:
                return None
            out[m] = (started[0]["t"], saved[0]["t"])
        return out

    def _started_index(self, member: str, since: float) -> int:
        evs = [e for e in events(self.c.log_path(member), {"snapshot_started"}) if e["t"] >= since]
        return int(evs[0]["index"])


def _file_size(data_dir: Path, index: int | None) -> int | None:
    if index is None:
        return None
    p = data_dir / f"snapshot-{index:020d}.snap"
    try:
        return p.stat().st_size
    except OSError:
        return None
