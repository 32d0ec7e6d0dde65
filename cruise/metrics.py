"""A member's Prometheus endpoint, ``http://HOST:PORT/metrics``, when its entry sets ``metrics``.

Theory of operation
-------------------
The exposition is prometheus_client's: each member has its own ``CollectorRegistry`` (several
embedded members may share a process, and the library's global registry belongs to the host
program) and its own prometheus_client HTTP server, which answers on a daemon thread of its own.

Two kinds of figures:

- **the member's state** (term, indexes, role, leader, requests in flight, and the counts the
  driver keeps) is read when Prometheus scrapes, by :class:`MemberCollector`. The member's loop
  runs on another thread and never waits for a scrape, so the collector reads only single
  attributes that hold ints or strings, and the lengths of builtin containers: each read is
  atomic under the GIL, and nothing iterates over a container the loop changes. Figures read
  one after another may come from different loop turns; ``applied`` is read before
  ``commit`` so that a scrape never shows applied past commit;
- **durations** are observed where they happen, into histograms: the WAL's fsyncs (on the loop
  through the driver's ``Observer``, or on the fsync thread through ``SyncWorker.observe``),
  each batch of committed entries applied (the driver), and each snapshot written
  (``SnapshotWorker.observe``). The member itself reads no clock: the timing is this module's.

Peer round trips are not measured: the core's messages carry no send time, and matching an
append to its acknowledgement would take a change to the core's protocol.
"""

from __future__ import annotations

import errno
import ssl
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from .config import METRICS_TLS_KEYS, ClusterConfig, ConfigError, MetricsTLS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .member import Member
    from .outlets import SnapshotWorker, SyncWorker

__all__ = ["MemberCollector", "MemberMetrics", "serve_metrics"]

ROLES = ("follower", "candidate", "leader")  # as ``status`` shows them (pre-candidates as candidates)

# Bucket bounds in seconds, doubling: an fsync from a fast SSD's half millisecond to a stalled
# disk's seconds (about the span of etcd's WAL fsync histogram); a batch applied from a tenth of a
# millisecond; a snapshot from a small state's milliseconds to a large one's tens of seconds.
FSYNC_BUCKETS = tuple(0.0005 * 2**i for i in range(14))
APPLY_BUCKETS = tuple(0.0001 * 2**i for i in range(16))
SNAPSHOT_BUCKETS = tuple(0.01 * 2**i for i in range(13))


class MemberCollector:
    """The member's state, read when scraped (see the module docstring for what may be read)."""

    def __init__(self, member_id: str, member: Member) -> None:
        self._id = member_id
        from . import __version__  # here: the package imports this module's importers first

        self._member = member
        self._info = {"id": member_id, "version": __version__}

    def collect(self) -> Iterator[Metric]:
        m = self._member
        raft = m.raw.raft
        applied = m.applier.applied  # before commit: applied <= commit in every scrape
        commit = raft.log.committed
        term = raft.term
        role = m.raw.role
        lead = raft.lead
        driver = m.driver
        in_flight = len(m.proposals) + len(m.forwarding) + len(m.reads)  # what max_pending bounds

        yield InfoMetricFamily("cruise_member", "This member's id and cruise version", value=self._info)
        yield GaugeMetricFamily("cruise_term", "The member's current Raft term", value=term)
        yield GaugeMetricFamily("cruise_commit_index", "The highest log index known committed", value=commit)
        yield GaugeMetricFamily("cruise_applied_index", "The highest log index applied here", value=applied)
        yield GaugeMetricFamily(
            "cruise_is_leader", "1 when this member leads, else 0", value=1 if role == "leader" else 0
        )
        yield GaugeMetricFamily(
            "cruise_has_leader",
            "1 when this member knows a leader, else 0",
            value=1 if lead is not None else 0,
        )
        roles = GaugeMetricFamily(
            "cruise_role", "1 for the member's current role, 0 for the others", labels=["role"]
        )
        for r in ROLES:
            roles.add_metric([r], 1 if r == role else 0)
        yield roles
        yield CounterMetricFamily(
            "cruise_leader_changes_seen",
            "Times this member learned of a leader other than the last one it knew",
            value=driver.leader_changes,
        )
        yield CounterMetricFamily(
            "cruise_proposals_committed",
            "Records this member proposed as leader that were committed and applied",
            value=driver.proposals_committed,
        )
        yield CounterMetricFamily(
            "cruise_proposals_failed",
            "Records this member proposed as leader whose index another term's entry took, "
            "or that were refused as older than their client's session",
            value=driver.proposals_failed,
        )
        yield GaugeMetricFamily(
            "cruise_requests_in_flight",
            "Requests waiting for a commit, a leader, a forward or a read",
            value=in_flight,
        )
        yield GaugeMetricFamily(
            "cruise_snapshot_index",
            "The index of the newest snapshot this member holds",
            value=m.snapshots.last,
        )


class MemberMetrics:
    """One member's registry, the hooks that feed it, and its HTTP server."""

    def __init__(self, member_id: str, member: Member) -> None:
        self.registry = CollectorRegistry()
        self._member = member
        reg = self.registry
        self.fsync_seconds = Histogram(
            "cruise_wal_fsync_duration_seconds",
            "Time each fsync of the WAL took",
            buckets=FSYNC_BUCKETS,
            registry=reg,
        )
        self.apply_seconds = Histogram(
            "cruise_apply_duration_seconds",
            "Time to apply a batch of committed entries and answer their requests",
            buckets=APPLY_BUCKETS,
            registry=reg,
        )
        self.snapshot_seconds = Histogram(
            "cruise_snapshot_save_duration_seconds",
            "Time to encode, write and sync a snapshot this member took",
            buckets=SNAPSHOT_BUCKETS,
            registry=reg,
        )
        self.snapshots_taken = Counter(
            "cruise_snapshots_taken", "Snapshots this member wrote of its own state", registry=reg
        )
        self.snapshots_installed = Counter(
            "cruise_snapshots_installed", "Snapshots this member installed from a leader", registry=reg
        )
        self.snapshot_bytes = Gauge(
            "cruise_snapshot_bytes", "Size in bytes of the last snapshot this member wrote", registry=reg
        )
        reg.register(MemberCollector(member_id, member))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def attach(self, *, sync_worker: SyncWorker | None, snapshot_worker: SnapshotWorker | None) -> None:
        """Hook the timings in. Call before the member's loop runs: the loop reads the hooks
        without a lock."""
        self._member.driver.observer = self
        if sync_worker is not None:
            sync_worker.observe = self.fsync_seconds.observe
        if snapshot_worker is not None:
            snapshot_worker.observe = self._snapshot_written
        self._member.on_restore.append(lambda index: self.snapshots_installed.inc())

    # The driver's Observer, called on the member's loop.
    def now(self) -> float:
        return time.perf_counter()

    def synced(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def applied(self, entries: int, seconds: float) -> None:
        self.apply_seconds.observe(seconds)

    def _snapshot_written(self, size: int, seconds: float) -> None:
        self.snapshots_taken.inc()
        self.snapshot_bytes.set(size)
        self.snapshot_seconds.observe(seconds)

    def serve(self, host: str, port: int, tls: MetricsTLS | None = None) -> None:
        """Answer ``/metrics`` at ``host:port`` on a thread of the server's own; over HTTPS
        with ``tls`` (and only to scrapers with a certificate its CA signed, if it names one).

        Raises:
            OSError: the address cannot be listened on (``EADDRINUSE``: in use), or a TLS file
                cannot be read (``ssl.SSLError`` is an OSError too).
        """
        https: dict[str, Any] = {}
        if tls is not None:
            ca = None if tls.client_ca_file is None else str(tls.client_ca_file)
            https = {
                "certfile": str(tls.cert_file),
                "keyfile": str(tls.key_file),
                "client_cafile": ca,
                "client_auth_required": ca is not None,
            }
        self._server, self._thread = start_http_server(port, host, registry=self.registry, **https)

    @property
    def port(self) -> int | None:
        """The port listened on, or None when not serving."""
        return None if self._server is None else self._server.server_port

    def stop(self) -> None:
        """Stop serving and free the port; idempotent. ``shutdown`` waits for the server's poll
        loop to notice (at most half a second)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5.0)


def serve_metrics(
    config: ClusterConfig,
    member: Member,
    *,
    sync_worker: SyncWorker | None = None,
    snapshot_worker: SnapshotWorker | None = None,
) -> MemberMetrics:
    """Start the endpoint ``config.me.metrics`` names for ``member``, hooks attached.

    Raises:
        ConfigError: the address cannot be listened on, naming the member's ``metrics`` key
            (``members[0].metrics: 127.0.0.1:9101 is in use``). Nothing is left running.
    """
    me = config.me
    address = me.metrics
    assert address is not None, "serve_metrics needs a member whose metrics key is set"
    key = f"{_member_key(config, me.id)}.metrics"
    host, _, port = address.rpartition(":")
    tls = config.metrics_tls
    if tls is not None:
        for name in METRICS_TLS_KEYS:
            path = getattr(tls, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"metrics_tls.{name}", f"{path}: no such file", config.path)
    metrics = MemberMetrics(me.id, member)
    try:
        metrics.serve(host.strip("[]"), int(port), tls)  # "[::1]:9101" listens on ::1
    except ssl.SSLError as e:
        raise ConfigError("metrics_tls", f"cannot use the certificate or key: {e}", config.path) from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(key, f"{address} is in use", config.path) from None
        raise ConfigError(key, f"cannot listen on {address}: {e.strerror or e}", config.path) from None
    metrics.attach(sync_worker=sync_worker, snapshot_worker=snapshot_worker)
    return metrics


def _member_key(config: ClusterConfig, id: str) -> str:
    for i, m in enumerate(config.members):
        if m.id == id:
            return f"members[{i}]"
    return "members"
