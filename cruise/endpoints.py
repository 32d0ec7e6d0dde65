"""The member's sockets: what it binds and connects, how it reads them, how it sends.

:class:`Endpoints` binds the ``raft`` ROUTER (peer RPCs), the ``client`` ROUTER (client
requests from REQ or DEALER sockets) and the ``publish`` XPUB (committed entries), and
connects a DEALER to each peer's ``raft`` address (Raft messages, with this member's id
as identity) and one to each peer's ``client`` address (forwarded requests). It is the
member's ``Transport``; its ``on_*`` readers turn frames into the member's inputs. They
decode, check that a peer message came on the connection of the member it names, and
wrap each client request in a :class:`~cruise.outlets.Waiter` holding its envelope.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import msgpack
import zmq

import brokerless
from brokerless import split_envelope
from brokerless.sockets import NOBLOCK as _NOBLOCK
from brokerless.sockets import NOBLOCK_MORE as _MORE
from brokerless.sockets import drain, readable, send_frames

from . import api, wire
from .config import ClusterConfig
from .core.messages import describe
from .errors import UNAVAILABLE, CruiseError
from .fsm import Applied
from .member import Member
from .outlets import CountedWaiter, Waiter
from .security import CLIENT_DOMAIN, RAFT_DOMAIN, MemberSecurity

MAX_DRAIN = 4096  # messages read from one socket per turn, so no socket starves the others
# Client requests read per turn: fewer, because a record needs a few turns to commit and a
# turn spent on thousands of a flooder's requests is a wait for everyone else's.
CLIENT_DRAIN = 512
# Requests one client connection may have in flight: past it, more are refused at once, so a
# flood stays that client's problem. The log is first come, first served, so a polite client's
# record waits behind whatever a flooder has in flight: the cap bounds that wait. It is one
# client's session window (a client never needs more); a follower's forwarding connection
# carries all of its clients' requests and gets FORWARDED_IN_FLIGHT (its own clients are each
# capped at the follower). A connection that calls itself a forwarder without being one gets
# no more than that; with CURVE only admitted keys connect at all.
CLIENT_IN_FLIGHT = 1024
FORWARDED_IN_FLIGHT = 16384
FORWARDER_PREFIX = b"cruise-forward:"
PEER_HEARTBEAT_MS = 500  # ZMTP PINGs on the connections to peers
PEER_SILENCE_MS = 2000  # a peer connection this long without a frame is reconnected
PEER_FRAME_BYTES = 64 << 20  # a peer frame larger than this is dropped
HWM = 100_000


class Endpoints:
    """Every socket of one member. Binding raises what ZeroMQ raises (an address in use),
    having closed what it opened."""

    def __init__(self, cfg: ClusterConfig, log: Any) -> None:
        me = cfg.me
        self.max_value_bytes = cfg.max_value_bytes
        self.log = log
        self._member: Member | None = None
        self.ctx = brokerless.context()  # its I/O thread yields to the member's loop (SCHED_BATCH)
        self.security: MemberSecurity | None = None
        try:
            if cfg.security is not None:  # before any socket: ZAP must be there to ask
                self.security = MemberSecurity(self.ctx, cfg, log)
            else:
                log.warning(
                    "unauthenticated",
                    message="security is off: anyone who reaches this member's addresses can speak "
                    "Raft to it and read every value; see `security` in the README",
                )
            # Bound where the member listens (``bind``, say ``tcp://0.0.0.0:PORT``), which may
            # not be reachable by anyone; peers and clients are only ever given the advertised
            # addresses, so every connect below uses those.
            # A peer that reconnects (its old connection went silent, see _connect) keeps its
            # member id as routing id: the new connection must take over from the old one,
            # which this side may not have noticed is dead (ROUTER_HANDOVER). Heartbeats close
            # such connections here too.
            self.raft = brokerless.router(
                self.ctx,
                me.bind_address("raft"),
                hwm=HWM,
                options={
                    zmq.ROUTER_HANDOVER: 1,
                    zmq.HEARTBEAT_IVL: PEER_HEARTBEAT_MS,
                    zmq.HEARTBEAT_TIMEOUT: PEER_SILENCE_MS,
                    **(self._server(RAFT_DOMAIN) or {}),
                },
            )
            self.raft.setsockopt(zmq.MAXMSGSIZE, PEER_FRAME_BYTES)
            self.client = brokerless.router(
                self.ctx, me.bind_address("client"), hwm=HWM, options=self._server(CLIENT_DOMAIN)
            )
            self.client.setsockopt(zmq.MAXMSGSIZE, cfg.max_value_bytes + (64 << 10))
            self.pub = brokerless.xpub(
                self.ctx, me.bind_address("publish"), options=self._server(CLIENT_DOMAIN)
            )
        except Exception:
            if self.security is not None:
                self.security.stop()
            self.ctx.destroy(linger=0)
            raise
        self._ident = me.id.encode()
        self._reactor: brokerless.Reactor | None = None
        self.peers: dict[str, zmq.Socket] = {}
        self.forwards: dict[str, zmq.Socket] = {}
        self._addrs: dict[str, tuple[str, str]] = {}
        for m in cfg.members:
            if m.id != me.id:
                self._connect(m.id, m.raft, m.client)
                self._addrs[m.id] = (m.raft, m.client)
        self.in_flight: dict[bytes, int] = {}  # client connection -> requests not yet answered
        # Topics someone subscribes to: while there are none, applying publishes nothing.
        self.topics: set[bytes] = set()

    @property
    def member(self) -> Member:
        assert self._member is not None, "attach() first"
        return self._member

    def _server(self, domain: str) -> dict[int, Any] | None:
        return None if self.security is None else self.security.server(domain)

    def _connect(self, id: str, raft: str, client: str) -> None:
        # ZMTP heartbeats: a connection that carried nothing for PEER_SILENCE_MS is closed and
        # made anew. Without them, a member cut off for a while kept its old TCP connections,
        # whose retransmission timer had backed off to tens of seconds: it stayed away from
        # the cluster about as long again after the network healed.
        opts: dict[int, Any] = {
            zmq.HEARTBEAT_IVL: PEER_HEARTBEAT_MS,
            zmq.HEARTBEAT_TIMEOUT: PEER_SILENCE_MS,
            zmq.HEARTBEAT_TTL: PEER_SILENCE_MS,
        }
        if self.security is not None:  # with CURVE each DEALER expects the key of the member it reaches
            opts.update(self.security.client(id))
        peer = self.peers[id] = brokerless.dealer(self.ctx, raft, identity=self._ident, hwm=HWM, options=opts)
        # Connected now, so it is ready by the time a request needs forwarding.
        # Its routing id tells the peer's client socket which connection forwards (a higher cap);
        # the random tail keeps it unique across this member's restarts.
        forwarder = FORWARDER_PREFIX + self._ident + b":" + os.urandom(6).hex().encode()
        sock = self.forwards[id] = brokerless.dealer(
            self.ctx, client, identity=forwarder, hwm=HWM, options=opts
        )
        if self._reactor is not None:
            self._reactor.add_reader(sock, self.on_forward_reply)
            self._reactor.add_reader(peer, functools.partial(self.on_peer_dealer, id))

    def attach(self, member: Member, reactor: brokerless.Reactor) -> None:
        """Feed ``member`` from these sockets, read on ``reactor``."""
        self._member = member
        self._reactor = reactor
        reactor.add_reader(self.raft, self.on_peer)
        reactor.add_reader(self.client, self.on_client)
        reactor.add_reader(self.pub, self.on_subscription)
        for sock in self.forwards.values():
            reactor.add_reader(sock, self.on_forward_reply)
        for id, peer in self.peers.items():
            reactor.add_reader(peer, functools.partial(self.on_peer_dealer, id))

    def close(self) -> None:
        if self.security is not None:
            self.security.stop()
        self.ctx.destroy(linger=0)

    # -- the member's Transport ---------------------------------------------------------------------
    def send(self, msgs: list, blobs: wire.EntryBlobCache) -> None:
        socks = self.peers
        encode, stamp = wire.encode, self.member.stamp
        for m in msgs:
            sock = socks.get(m.to)
            try:
                if sock is not None:
                    sock.send(encode(m, blobs, stamp(m.to)), _NOBLOCK)
                else:
                    # Not one of our members (yet): we are joining, or our configuration is
                    # behind the leader's. Answer on the connection it made to our ROUTER.
                    self.raft.send_multipart([m.to.encode(), encode(m, blobs, stamp(m.to))], _NOBLOCK)
            except zmq.Again:
                pass  # peer unreachable or its queue is full: Raft retries on its own

    def forward(self, to: str, rid: int, frame: bytes) -> bool:
        try:
            send_frames(self.forwards[to], [rid.to_bytes(8, "big"), b"", frame])
        except zmq.Again:
            return False
        return True

    def publishing(self) -> bool:
        return bool(self.topics)

    def set_members(self, peers: list[dict[str, Any]]) -> None:
        """Connect to members that joined; close the sockets of members that left. A member
        whose addresses changed is connected anew."""
        wanted = {m["id"]: m for m in peers}
        if self.security is not None:
            self.security.set_members(peers)
        for id in [i for i in self.peers if i not in wanted or self._addrs.get(i) != _addrs(wanted[i])]:
            for sock in (self.peers.pop(id), self.forwards.pop(id)):
                if self._reactor is not None:
                    self._reactor.remove_reader(sock)
                sock.close(linger=0)
            self._addrs.pop(id, None)
        for id, m in wanted.items():
            if id not in self.peers:
                self._connect(id, m["raft"], m["client"])
                self._addrs[id] = _addrs(m)

    def publish(self, entry: Applied) -> None:
        try:
            self.pub.send(b"entry", _MORE)
            self.pub.send(msgpack.packb(entry.to_wire(), use_bin_type=True), _NOBLOCK)
        except zmq.Again:
            pass  # a slow subscriber never slows the cluster; it refills gaps with `entries`

    # -- readers ------------------------------------------------------------------------------------
    def drain_peers(self) -> None:
        """Feed the peer messages that have arrived, if any (before the leader's fsync)."""
        if readable(self.raft):
            self.on_peer(self.raft)

    def on_peer(self, sock: zmq.Socket) -> None:
        on_peer, blobs = self.member.on_peer, self.member.driver.blobs
        for frames in drain(sock, MAX_DRAIN):
            if len(frames) != 2:
                self.log.warning("peer_frame_dropped", reason=f"{len(frames)} frames")
                continue
            ident, frame = frames
            try:
                msg, stamp = wire.decode(frame, blobs=blobs)
            except wire.WireError as e:
                self.log.warning("peer_frame_dropped", reason=str(e), peer=ident[:64])
                continue
            # A member id inside a message must match the connection it came on.
            if ident != msg.frm.encode() or not on_peer(msg, stamp):
                self.log.warning("peer_frame_dropped", reason="wrong sender or recipient", msg=describe(msg))

    def on_peer_dealer(self, id: str, sock: zmq.Socket) -> None:
        """Messages a member sent back on our own connection to it (see ``send``)."""
        on_peer, blobs = self.member.on_peer, self.member.driver.blobs
        for frames in drain(sock, MAX_DRAIN):
            if len(frames) != 1:
                continue
            try:
                msg, stamp = wire.decode(frames[0], blobs=blobs)
            except wire.WireError as e:
                self.log.warning("peer_frame_dropped", reason=str(e), peer=id)
                continue
            if msg.frm != id or not on_peer(msg, stamp):
                self.log.warning("peer_frame_dropped", reason="wrong sender or recipient", msg=describe(msg))

    def on_client(self, sock: zmq.Socket) -> None:
        member = self.member
        max_value = self.max_value_bytes
        deadline = member.deadline()  # one clock read per drain: the requests arrived together
        decode, record, submit_record, submit = (
            api.decode_request,
            api.Record,
            member.intake.take,
            member.submit,
        )
        counts = self.in_flight
        for frames in drain(sock, CLIENT_DRAIN):
            try:
                envelope, body = split_envelope(frames)
            except brokerless.FrameError:
                continue
            held = counts.get(envelope[0], 0)
            if held >= CLIENT_IN_FLIGHT and (
                held >= FORWARDED_IN_FLIGHT or not envelope[0].startswith(FORWARDER_PREFIX)
            ):
                Waiter(deadline, sock, envelope).reply(
                    api.error(UNAVAILABLE, f"{held} requests in flight on this connection; wait for answers")
                )
                continue
            waiter = CountedWaiter(deadline, sock, envelope, counts)
            try:
                req = decode(body, max_value)
            except CruiseError as e:
                waiter.reply(e.reply())
                continue
            if type(req) is record:  # the hot path, without the general dispatch
                submit_record(req, waiter, body[0])
            else:
                submit(req, waiter, body[0])
        member.kick()

    def on_subscription(self, sock: zmq.Socket) -> None:
        topics = self.topics
        for _ in range(MAX_DRAIN):
            try:
                msg = sock.recv(_NOBLOCK)
            except zmq.Again:
                break
            if msg[:1] == b"\x01":
                topics.add(msg[1:])
            elif msg[:1] == b"\x00":
                topics.discard(msg[1:])

    def on_forward_reply(self, sock: zmq.Socket) -> None:
        member = self.member
        for frames in drain(sock, MAX_DRAIN):
            if len(frames) != 3 or len(frames[0]) != 8:
                continue
            try:
                reply = api.decode_reply(frames[2])
            except CruiseError as e:
                reply = e.reply()
            member.on_forward_reply(int.from_bytes(frames[0], "big"), reply)


def _addrs(m: dict[str, Any]) -> tuple[str, str]:
    return (m["raft"], m["client"])
