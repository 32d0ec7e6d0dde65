"""The Raft state machine: one node's view of elections, replication and reads.

Theory of operation
-------------------
``Raft`` is driven by three inputs and does no I/O:

- ``tick()``: one unit of logical time passed. Followers and candidates count
  toward an election (§5.2); leaders count toward a heartbeat and a
  check-quorum round (dissertation §6.2).
- ``step(msg)``: a message from a peer. ``step`` settles the term rules once
  for every message (§5.1: a higher term makes us a follower; a lower term is
  stale and is dropped or answered so the sender learns the term), handles
  votes (the same for every role), then calls ``self._step``, the function of
  the current role: ``_step_leader``, ``_step_candidate`` or ``_step_follower``.
- local requests: ``propose``, ``read_index``, ``transfer_leader``, ``campaign``.

Its outputs accumulate in ``msgs`` (to send), the log's unstable tail (to
persist), ``committed`` (to apply) and ``read_states``; ``RawNode`` packages them
as a ``Ready``. A leader does not send AppendEntries as each proposal or
acknowledgement arrives: it marks followers dirty and ``flush()`` sends one
append per follower, carrying everything new, when the runtime asks for a
Ready. That is the batching of the fast path: one message per follower per
loop turn, however many proposals the turn held.

Roles change only through ``become_*``, which set ``role``, ``_step`` and
``_tick`` together and reset the timers. An impossible transition (a leader
becoming a candidate) is an ``AssertionError``.

Elections use pre-vote (dissertation §9.6): a node whose election timer fires
first asks "would you vote for me in term T+1?" without changing any term, and
only campaigns for real once a majority says yes. A partitioned node therefore
cannot inflate terms and depose a healthy leader when it returns. With
check-quorum, a follower that heard from a leader within the minimum election
timeout ignores vote requests (the leader lease, §4.2.3), unless the request
comes from a leadership transfer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from . import quorum
from .confchange import ConfState, conf_of
from .config import CoreConfig
from .errors import Compacted, NotLeader, ProposalDropped, TransferInProgress
from .log import RaftLog
from .messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)
from .progress import PROBE, REPLICATE, SNAPSHOT, Progress
from .storage import Storage
from .types import CONFIG, NOOP, RECORD, Entry, NodeId, ReadState, Role, SnapshotMeta

Logger = Callable[..., None]


_MAX_READ_BATCHES = 4096  # a follower's read batches awaiting the leader's answer


def _no_log(event: str, **kw: Any) -> None:
    pass


class Raft:
    def __init__(
        self, config: CoreConfig, storage: Storage, applied: int = 0, logger: Logger | None = None
    ) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self.log = RaftLog(storage, applied)
        # The configuration in force (``confchange``): the log's last config entry, else the
        # snapshot's, else the initial one. Everything that counts a majority reads
        # ``voters``; learners get appends and count for nothing.
        self.voters: tuple[NodeId, ...] = ()
        self.learners: tuple[NodeId, ...] = ()
        self._followers: tuple[NodeId, ...] = ()  # every member but us: who a leader sends to
        self._conf_version = -1
        # Leader only: the index of the last config entry it appended. Invariant: no new one
        # is proposed while this is past the commit index (one change at a time, §4.1).
        self.pending_conf_index = 0
        self._log_event: Logger = logger or _no_log

        hs = storage.initial_state()
        # Latest term seen. Invariant: never decreases; persisted before any message of this term leaves.
        self.term = hs.term
        # Candidate voted for in ``term`` (None: no vote yet). Invariant: at most one per term.
        self.vote: NodeId | None = hs.vote
        # Term known to be on stable storage (updated by ``on_persisted``); leaders
        # may send appends before their disk write only in a durable term.
        self.durable_term = hs.term

        self.role = Role.FOLLOWER
        self.lead: NodeId | None = None
        # Leader only: one Progress per voter (itself included; its match is what it has persisted).
        self.prs: dict[NodeId, Progress] = {}
        # Candidate only: votes received in this election.
        self.votes: dict[NodeId, bool] = {}
        # Outgoing messages; RawNode moves them into a Ready.
        self.msgs: list[Message] = []
        # Confirmed read indexes for local read requests; RawNode moves them into a Ready.
        self.read_states: list[ReadState] = []

        # Ticks since the last election timeout reset (followers, candidates) or since
        # the last check-quorum round (leaders).
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        # Leader only: the follower leadership is being handed to, or None (§3.10).
        self.lead_transferee: NodeId | None = None

        # Leader only: read-index bookkeeping (§6.4). A read must wait until an
        # entry of the current term is committed; then each batch of reads gets a
        # round number carried in heartbeats and is released once a quorum acks.
        self._reads_waiting_commit: list[tuple[NodeId, Any]] = []
        self._read_round = 0
        self._reads_next_round: list[tuple[NodeId, Any]] = []
        self._read_rounds: dict[int, tuple[int, list[tuple[NodeId, Any]], set[NodeId]]] = {}
        # Leader only: followers owed an append at the next flush().
        self._dirty: set[NodeId] = set()
        # Follower only: reads of this loop turn, asked of the leader as one ReadIndex at the
        # next flush(); and the batches asked, by the ctx their ReadIndex carried (the first
        # read's), oldest first. Kept across term changes (a late answer still confirms its
        # reads: the leader checked its quorum after they arrived), and bounded.
        self._follower_reads: list[Any] = []
        self._read_batches: OrderedDict[Any, list[Any]] = OrderedDict()

        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._check_conf()
        self.become_follower(self.term, None)

    # -- helpers ----------------------------------------------------------------
    @property
    def promotable(self) -> bool:
        """Whether this member may campaign: it votes in the configuration in force, or in the
        committed one. The second case is a leader whose uncommitted entry removed it and
        which then lost its lease: it may hold that entry alone, and its vote would go to no
        one with a shorter log, so it must be able to win (counting the new configuration's
        votes, not its own), commit the change and step down."""
        if self.id in self.voters:
            return True
        value = self.log.conf_at(self.log.committed)
        if value is None:
            return self.id in self.config.voters
        cs = conf_of(value)
        return cs is not None and self.id in cs.voters

    def conf_state(self) -> ConfState:
        value = self.log.conf()
        if value is None:
            return ConfState(tuple(self.config.voters), tuple(self.config.learners))
        return conf_of(value) or ConfState((), ())

    def _check_conf(self) -> None:
        """Put the log's configuration in force if it changed (it takes effect when its
        entry is appended, §4.1, and is undone when that entry is truncated)."""
        if self._conf_version == self.log.conf_version:
            return
        self._conf_version = self.log.conf_version
        cs = self.conf_state()
        if (cs.voters, cs.learners) == (self.voters, self.learners):
            return
        self.voters, self.learners = cs.voters, cs.learners
        self._followers = tuple(m for m in cs.members if m != self.id)
        self._log_event("conf_changed", term=self.term, voters=list(cs.voters), learners=list(cs.learners))
        if self.role != Role.LEADER:
            return
        last = self.log.last_index()
        for m in self._followers:
            if m not in self.prs:
                pr = self.prs[m] = Progress(last + 1, self.config.max_inflight)
                pr.recent_active = True
                self._dirty.add(m)
        for m in [m for m in self.prs if m != self.id and m not in cs.members]:
            del self.prs[m]
            self._dirty.discard(m)
        if self.lead_transferee is not None and self.lead_transferee not in self.voters:
            self.lead_transferee = None

    def _send(self, msg: Message) -> None:
        self.msgs.append(msg)

    def _reset(self, term: int) -> None:
        """Common part of every role change: a new term forgets the vote (§5.1; the seed
        never cleared it), and all role-specific state (votes, progress, pending reads, a
        transfer) is dropped. The election timeout is drawn anew from ``[lo, hi]`` (§5.2).
        """
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        lo, hi = self.config.election_ticks
        self.randomized_election_timeout = self.config.rng.randint(lo, hi)
        self.votes = {}
        self.lead_transferee = None
        self.prs = {}
        self._dirty = set()
        self._reads_waiting_commit = []
        self._reads_next_round = []
        self._read_rounds = {}

    # -- role transitions ---------------------------------------------------------
    def become_follower(self, term: int, lead: NodeId | None) -> None:
        """Follow ``lead`` (None: not known yet) in ``term``. Legal from every role."""
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election
        self._log_event("became_follower", term=term, leader=lead)

    def become_pre_candidate(self) -> None:
        """Start a pre-vote round (dissertation §9.6). Term and vote stay as they are."""
        assert self.role != Role.LEADER, "invalid transition [leader -> pre-candidate]"
        # Pre-vote changes neither term nor vote: losing it leaves no trace.
        self.votes = {}
        self.lead = None
        self.role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._log_event("became_pre_candidate", term=self.term)

    def become_candidate(self) -> None:
        """§5.2: "increment currentTerm, vote for self"; the vote is persisted before any
        RequestVote leaves (they are in ``Ready.messages``, sent after the sync)."""
        assert self.role != Role.LEADER, "invalid transition [leader -> candidate]"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._log_event("became_candidate", term=self.term)

    def become_leader(self) -> None:
        """§5.3: "reinitialize nextIndex to leader last log index + 1". Every follower
        starts in PROBE; the leader's own match is what it has already persisted, because
        only durable copies count toward a commit."""
        assert self.role != Role.FOLLOWER, "invalid transition [follower -> leader]"
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        last = self.log.last_index()
        for v in (self.id, *self._followers):
            pr = Progress(last + 1, self.config.max_inflight)
            pr.recent_active = True
            self.prs[v] = pr
        # No configuration change until the no-op below commits: a config entry of an earlier
        # term may still be uncommitted, and a leader that changes the configuration before
        # an entry of its own term commits can lose committed entries (the single-server
        # change bug, Ongaro, raft-dev 2015; the dissertation's fix).
        self.pending_conf_index = last + 1
        me = self.prs[self.id]
        me.match = self.log.stable_last_index()
        me.state = REPLICATE
        # §8: a no-op of the new term lets the leader learn the commit index
        # (only entries of the current term commit by counting, §5.4.2).
        self._append([Entry(last + 1, self.term, NOOP)])
        self._log_event("became_leader", term=self.term, last_index=last + 1)

    # -- inputs -------------------------------------------------------------------
    def tick(self) -> None:
        self._tick()

    def _tick_election(self) -> None:
        """Followers and candidates: "if election timeout elapses without receiving
        AppendEntries from current leader or granting vote to candidate: convert to
        candidate" (§5.2, Figure 2), through a pre-vote round when configured."""
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.campaign(pre=self.config.pre_vote)

    def _tick_heartbeat(self) -> None:
        """Leaders: heartbeat every ``heartbeat_ticks`` (§5.2) and, every minimum election
        timeout, check that a quorum was heard from (§6.2), or step down so that clients
        stop waiting on a leader that can commit nothing. A transfer not done by then is
        abandoned (§3.10)."""
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks[0]:
            self.election_elapsed = 0
            if self.config.check_quorum:
                active = [v for v, pr in self.prs.items() if pr.recent_active or v == self.id]
                if not quorum.has_quorum(active, self.voters):
                    self._log_event("check_quorum_failed", term=self.term, active=sorted(active))
                    self.become_follower(self.term, None)
                    return
                for v, pr in self.prs.items():
                    pr.recent_active = v == self.id
            if self.lead_transferee is not None:
                # A transfer must finish within one election timeout (§3.10).
                self._log_event("transfer_aborted", term=self.term, to=self.lead_transferee)
                self.lead_transferee = None
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(None)

    def campaign(self, pre: bool = False, transfer: bool = False) -> None:
        """Start an election (``pre``: a pre-vote round first). No-op for non-voters."""
        if not self.promotable or self.role == Role.LEADER:
            return
        if pre:
            self.become_pre_candidate()
            term = self.term + 1
        else:
            self.become_candidate()
            term = self.term
        self.votes[self.id] = True
        if quorum.vote_result(self.votes, self.voters) == quorum.WON:
            # A cluster of one: no one else to ask.
            if pre:
                self.campaign(pre=False)
            else:
                self.become_leader()
            return
        li, lt = self.log.last_index(), self.log.last_term()
        for v in self.voters:
            if v != self.id:
                self._send(RequestVote(term, self.id, v, li, lt, pre=pre, transfer=transfer))

    def step(self, m: Message) -> None:
        """Feed one peer message in. Stale or unexpected messages are dropped, never raised."""
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = (
                    self.config.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.config.election_ticks[0]
                )
                if in_lease and not m.transfer:
                    # §4.2.3: we heard from a leader recently; this candidate is disruptive.
                    self._log_event(
                        "vote_ignored_in_lease", term=self.term, candidate=m.frm, their_term=m.term
                    )
                    return
            if (isinstance(m, RequestVote) and m.pre) or (
                isinstance(m, VoteResponse) and m.pre and m.granted
            ):
                # Pre-votes speak of a term nobody has entered yet; they change no term.
                pass
            elif isinstance(m, AppendEntries | Heartbeat | TimeoutNow | InstallSnapshot):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, None)
        elif m.term < self.term:
            if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot) and (
                self.config.check_quorum or self.config.pre_vote
            ):
                # A stale leader, perhaps cut off while we moved on: tell it our term so
                # it steps down (otherwise, with pre-vote, it might never learn it). The
                # answer carries our term and nothing else (etcd-raft's lower-term
                # MsgAppResp): no consistency check ran, so it must claim no match. The
                # sender may by now lead our term, and must not count our last index as
                # matching its log; index 0 moves neither its progress nor its commit
                # (see _step_leader).
                self._send(AppendResponse(self.term, self.id, m.frm, 0))
            elif isinstance(m, RequestVote) and m.pre:
                self._send(VoteResponse(self.term, self.id, m.frm, False, pre=True))
            return

        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
            return
        self._step(m)
        if self.log.conf_version != self._conf_version:
            self._check_conf()

    def _handle_vote_request(self, m: RequestVote) -> None:
        """§5.2 and §5.4.1: grant at most one vote per term, first come first served, and
        only to a candidate whose log is at least as up to date as ours. A pre-vote is
        granted on the same log check, for a term we have not entered, and changes nothing.
        Granting a real vote resets the election timer (we should not campaign against it).
        """
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.lead is None)
            # A pre-vote for a future term: we may vote then, whatever we did in this one.
            or (m.pre and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self._send(VoteResponse(m.term, self.id, m.frm, True, pre=m.pre))
            if not m.pre:
                self.election_elapsed = 0
                self.vote = m.frm
            self._log_event("vote_granted", term=self.term, candidate=m.frm, pre=m.pre)
        else:
            self._send(VoteResponse(self.term, self.id, m.frm, False, pre=m.pre))

    # -- followers ------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        """Followers: accept appends and heartbeats from the leader of this term (and
        remember who leads, for forwarding), start an election at once on TimeoutNow, and
        pass confirmed read indexes from the leader on as ReadStates."""
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.lead = m.frm
            self.log.commit_to(min(m.commit, self.log.last_index()))
            if not m.quiet:
                self._send(HeartbeatResponse(self.term, self.id, m.frm, m.ctx))
        elif isinstance(m, TimeoutNow):
            self._log_event("timeout_now", term=self.term, frm=m.frm)
            self.campaign(pre=False, transfer=True)
        elif isinstance(m, ReadIndexResponse):
            batch = self._read_batches.pop(m.ctx, None)
            if batch is not None and not m.reject:
                self.read_states.extend(ReadState(m.index, ctx) for ctx in batch)
        elif isinstance(m, ReadIndex):
            self._send(ReadIndexResponse(self.term, self.id, m.frm, 0, m.ctx, reject=True))
        # VoteResponse, AppendResponse, HeartbeatResponse: stale leftovers of an older role.

    def _handle_append(self, m: AppendEntries) -> None:
        """§5.3 AppendEntries receiver implementation, rules 2-5.

        Answers are always sent (a success acknowledges ``prev_index + len(entries)``,
        never more, because entries past that may still conflict with the leader's log).
        Appends below our commit index are answered with the commit index: everything up to
        there is committed and so matches any leader (§5.4)."""
        if m.prev_index < self.log.committed:
            # Everything up to our commit index matches any leader's log (§5.4).
            self._send(AppendResponse(self.term, self.id, m.frm, self.log.committed))
            return
        last_new = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            self._send(AppendResponse(self.term, self.id, m.frm, last_new))
            return
        # Mismatch: point the leader at the last index that may match, skipping
        # every entry of a term newer than the leader's prev_term in one step.
        hint = self.log.find_conflict_by_term(min(m.prev_index, self.log.last_index()), m.prev_term)
        self._send(
            AppendResponse(
                self.term,
                self.id,
                m.frm,
                m.prev_index,
                reject=True,
                hint_index=hint,
                hint_term=self.log.term(hint),
            )
        )

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        """§7 InstallSnapshot receiver. A snapshot at or below our commit index tells us
        nothing; one whose last entry we already hold (same index and term) only moves the
        commit index, since the log behind it matches (log matching). Otherwise the log is
        replaced by the snapshot and the runtime restores its state from it before the
        answer goes (the answer is in ``Ready.messages``). The answer claims the commit
        index or the snapshot's index, never entries past it that might still conflict."""
        if m.index <= self.log.committed:
            self._send(AppendResponse(self.term, self.id, m.frm, self.log.committed))
            return
        if self.log.match_term(m.index, m.snap_term):
            self.log.commit_to(m.index)
            self._send(AppendResponse(self.term, self.id, m.frm, self.log.committed))
            return
        self._log_event("snapshot_restore", term=self.term, index=m.index, snap_term=m.snap_term)
        self.log.restore(SnapshotMeta(m.index, m.snap_term, m.conf))
        self._send(AppendResponse(self.term, self.id, m.frm, m.index))

    # -- candidates -------------------------------------------------------------------
    def _step_candidate(self, m: Message) -> None:
        """Pre-candidates and candidates: count votes of the matching kind (a real vote
        does not count toward a pre-vote round, nor the reverse); follow anyone who shows
        it won this term."""
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            # Someone won this term (§5.2): follow it.
            self.become_follower(m.term, m.frm)
            self._step_follower(m)
        elif isinstance(m, VoteResponse):
            pre = self.role == Role.PRE_CANDIDATE
            if m.pre != pre:
                return
            self.votes.setdefault(m.frm, m.granted)
            result = quorum.vote_result(self.votes, self.voters)
            if result == quorum.WON:
                if pre:
                    self.campaign(pre=False)
                else:
                    self.become_leader()
            elif result == quorum.LOST:
                self.become_follower(self.term, None)
        elif isinstance(m, ReadIndex):
            self._send(ReadIndexResponse(self.term, self.id, m.frm, 0, m.ctx, reject=True))

    # -- leaders ------------------------------------------------------------------------
    def _step_leader(self, m: Message) -> None:
        """Leaders: track each follower's progress from its answers.

        A rejection moves ``next`` back using the follower's conflict hint and switches the
        follower to PROBE; a success may advance ``match`` (and the commit index), turns a
        probing follower into a streaming one, owes the follower the commit index it has not
        been sent, and completes a transfer once the target has everything. Any answer marks
        the follower active for check-quorum (the index-0 answer to an append of an older
        term does nothing else); heartbeat answers also acknowledge read-index rounds and
        unstick a follower whose appends or acknowledgements were lost (it gets a forced
        append, which it will reject if it has a gap)."""
        pr = self.prs.get(m.frm)
        if isinstance(m, AppendResponse):
            if pr is None:
                return
            pr.recent_active = True
            if not m.reject and m.index == 0:
                # The answer to an append we sent in an older term (see ``step``): the
                # follower is alive in our term, and that is all it says. A real success
                # is never 0 (a leader's log holds at least its no-op), so this is no
                # match, and no rejection to probe back from either.
                return
            if m.reject:
                probe = m.hint_index
                if m.hint_term > 0:
                    probe = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
                if pr.maybe_decr_to(m.index, probe):
                    self._dirty.add(m.frm)
                return
            old_paused = pr.is_paused()
            if pr.maybe_update(m.index):
                if pr.state == PROBE or (pr.state == SNAPSHOT and pr.match + 1 >= self.log.first_index()):
                    pr.become_replicate()
                self._maybe_commit()
                if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                    self._send(TimeoutNow(self.term, self.id, m.frm))
                    self._log_event("transfer_timeout_now", term=self.term, to=m.frm)
            if pr.next <= self.log.last_index() or old_paused or pr.sent_commit < self.log.committed:
                self._dirty.add(m.frm)
        elif isinstance(m, HeartbeatResponse):
            if pr is None:
                return
            pr.recent_active = True
            if m.ctx is not None:
                self._ack_read_round(m.ctx, m.frm)
            if pr.state == SNAPSHOT:
                return  # the snapshot transfer reports back; nothing else goes meanwhile
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.is_paused():
                # Appends may have been lost; let one more through to find out.
                pr.inflight.popleft()
            if pr.match < self.log.last_index():
                self._send_append(m.frm, force=True)
        elif isinstance(m, ReadIndex):
            self.read_index(m.ctx, requester=m.frm)
        # Votes and responses from a lost election, TimeoutNow (we lead already): ignore.

    def _append(self, entries: list[Entry], records: bool = False) -> None:
        """Add entries to our log and owe every follower an append (sent by ``flush``)."""
        self.log.append(entries, records)
        self._dirty.update(self._followers)
        if self.log.conf_version != self._conf_version:
            self._check_conf()

    def _maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the highest index a majority matches, if it is of our term."""
        match = {v: pr.match for v, pr in self.prs.items()}
        mci = quorum.committed_index(match, self.voters)
        if mci > self.log.committed and self.log.term(mci) == self.term:
            self.log.commit_to(mci)
            for v in self._followers:
                if self.prs[v].sent_commit < mci:
                    self._dirty.add(v)
            self._release_reads_waiting_commit()
            if self.id not in self.voters and mci >= self.pending_conf_index:
                self._step_down_removed()
            return True
        return False

    def _step_down_removed(self) -> None:
        """The configuration that removed us (or made us a learner) is committed: hand over to
        the most caught-up voter (it campaigns at once, §3.10) and stop leading (§4.2.2)."""
        best = max(self.voters, key=lambda v: self.prs[v].match if v in self.prs else -1, default=None)
        self._log_event("leader_removed", term=self.term, handing_to=best)
        self._flush_dirty()
        if best is not None:
            self._send(TimeoutNow(self.term, self.id, best))
        self.become_follower(self.term, None)

    def _send_append(self, to: NodeId, force: bool = False) -> bool:
        # Invariant: prev = pr.next - 1 is an index the follower may match; entries from
        # pr.next are bounded by max_msg_bytes; the commit index sent is ours, which the
        # follower caps at the last entry of this message (receiver rule 5).
        """Send ``to`` what it lacks (or, with ``force``, at least an empty append)."""
        pr = self.prs[to]
        if pr.state == SNAPSHOT or (pr.is_paused() and not force):
            return False
        last = self.log.last_index()
        prev = pr.next - 1
        ents: list[Entry] = []
        try:
            prev_term = self.log.term(prev)
            if pr.next <= last:
                ents = self.log.slice(pr.next, last + 1, self.config.max_msg_bytes)
        except Compacted:
            return self._send_snapshot(to, pr)
        if not ents and not force:
            if pr.sent_commit >= self.log.committed:
                return False
            if pr.match == last:
                # Only the commit index is new, and the follower acknowledged everything.
                commit = self.log.committed
                self._send(Heartbeat(self.term, self.id, to, min(pr.match, commit), None, quiet=True))
                pr.sent_commit = commit
                return True
            if pr.state == REPLICATE:
                # Only the commit index is new and appends are in flight: the commit index
                # goes when their acknowledgement comes back (see _step_leader), not as a
                # message and an answer of its own.
                return False
        commit = self.log.committed
        self._send(AppendEntries(self.term, self.id, to, prev, prev_term, tuple(ents), commit))
        pr.sent_commit = commit
        pr.sent(prev + len(ents), len(ents))
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        """The entries ``to`` needs are compacted: send our newest snapshot instead (§7).
        Only to a follower heard from lately (a dead one would tie up a transfer for
        nothing); the follower waits in SNAPSHOT until it answers or the runtime reports
        the transfer failed."""
        if not pr.recent_active:
            return False
        snap = self.log.storage.snapshot()
        assert snap.index >= self.log.first_index() - 1, "compacted entries no snapshot covers"
        self._send(InstallSnapshot(self.term, self.id, to, snap.index, snap.term, snap.conf))
        pr.become_snapshot(snap.index)
        self._log_event("snapshot_sent", term=self.term, to=to, index=snap.index)
        return True

    def report_snapshot(self, to: NodeId, ok: bool) -> None:
        """The runtime's transfer of a snapshot to ``to`` finished (``ok``) or failed. Either
        way the follower is probed next: after a success its answer moves it to
        REPLICATE; after a failure the probe finds the entries compacted and sends a
        snapshot again."""
        pr = self.prs.get(to) if self.role == Role.LEADER else None
        if pr is None or pr.state != SNAPSHOT:
            return
        pending = pr.pending_snapshot
        pr.become_probe()
        if ok:
            pr.next = max(pr.next, pending + 1)
        # Wait for the follower's answer (or a heartbeat's) before sending more.
        pr.probe_sent = True
        self._log_event("snapshot_reported", term=self.term, to=to, ok=ok)

    def flush(self) -> None:
        """Send each dirty follower one append with everything new (and more while the window allows),
        and start one read-index round for every read that arrived since the last flush. A
        follower asks the leader for the reads of the turn with one ReadIndex."""
        if self.role != Role.LEADER:
            if self._follower_reads:
                self._ask_leader_for_reads()
            return
        if self._reads_next_round:
            reqs, self._reads_next_round = self._reads_next_round, []
            self._start_read_round(reqs)
        self._flush_dirty()

    def _flush_dirty(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for to in sorted(dirty):
            if to not in self.prs:
                continue
            sent = self._send_append(to)
            # REPLICATE streams: keep filling the window if one message was not enough.
            pr = self.prs[to]
            while sent and pr.state == REPLICATE and pr.next <= self.log.last_index():
                sent = self._send_append(to)

    def _bcast_heartbeat(self, ctx: Any) -> None:
        """A heartbeat to every follower; ``ctx`` names a read-index round, or None.

        The commit index sent is capped at the follower's match: a heartbeat carries no
        entries, so it must not let a follower commit entries it may not hold."""
        for v in self._followers:
            pr = self.prs[v]
            self._send(Heartbeat(self.term, self.id, v, min(pr.match, self.log.committed), ctx))

    # -- local requests ---------------------------------------------------------------------
    def propose(self, values: list[tuple[str, Any, tuple[str, int] | None]]) -> tuple[int, int]:
        """Append ``(kind, value, origin)`` proposals as one batch; returns (first index, term).

        Raises:
            NotLeader: this node does not lead (the caller forwards to ``exc.leader``).
            TransferInProgress: leadership is being handed over.
        """
        self._check_can_propose()
        first = self.log.last_index() + 1
        t = self.term
        confs = [first + i for i, (kind, _, _) in enumerate(values) if kind == CONFIG]
        if confs:
            if len(confs) > 1 or self.pending_conf_index > self.log.committed:
                raise ProposalDropped("a configuration change is in progress; one at a time")
            self.pending_conf_index = confs[0]
        self._append(
            [Entry(first + i, t, kind, value, origin) for i, (kind, value, origin) in enumerate(values)]
        )
        return first, t

    def _check_can_propose(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee is not None:
            raise TransferInProgress(f"leadership is moving to {self.lead_transferee}")

    def propose_records(self, items: list[tuple[Any, tuple[str, int] | None]]) -> tuple[int, int]:
        """``propose`` for a batch of records given as ``(value, origin)``: the hot path."""
        self._check_can_propose()
        first = self.log.last_index() + 1
        t = self.term
        self._append([Entry(first + i, t, RECORD, v, o) for i, (v, o) in enumerate(items)], records=True)
        return first, t

    def on_persisted(self, index: int, term: int) -> None:
        """The runtime wrote and synced entries up to ``index`` (of ``term``)."""
        self.log.stable_to(index, term)
        self.on_synced(index, term)

    def on_synced(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are durable: the leader may count itself."""
        if self.role != Role.LEADER or index < self.log.first_index():
            return  # compacted meanwhile: committed long ago, nothing to count
        if self.log.term(index) == term:
            me = self.prs[self.id]
            if me.maybe_update(index):
                self._maybe_commit()

    def read_index(self, ctx: Any, requester: NodeId | None = None) -> bool:
        """Ask for a read index (§6.4). The answer arrives later as a ``ReadState``
        with this ``ctx`` (or, for a forwarded request, a ReadIndexResponse).

        Returns False when no leader is known, so the caller can retry or time out.
        """
        requester = requester or self.id
        if self.role != Role.LEADER:
            if self.lead is None:
                return False
            self._follower_reads.append(ctx)
            return True
        if self.log.term(self.log.committed) != self.term:
            # Until our no-op commits we do not know the commit index (§6.4 step 1).
            self._reads_waiting_commit.append((requester, ctx))
            return True
        # Reads of one loop turn share one heartbeat round (started by flush()).
        self._reads_next_round.append((requester, ctx))
        return True

    def _ask_leader_for_reads(self) -> None:
        batch, self._follower_reads = self._follower_reads, []
        if self.lead is None:
            return  # the leader was lost this turn: these reads time out and are retried
        key = batch[0]
        self._read_batches[key] = batch
        while len(self._read_batches) > _MAX_READ_BATCHES:
            self._read_batches.popitem(last=False)  # long unanswered: those reads timed out
        self._send(ReadIndex(self.term, self.id, self.lead, key))

    def _release_reads_waiting_commit(self) -> None:
        if self._reads_waiting_commit and self.log.term(self.log.committed) == self.term:
            self._reads_next_round.extend(self._reads_waiting_commit)
            self._reads_waiting_commit = []

    def _start_read_round(self, reqs: list[tuple[NodeId, Any]]) -> None:
        """§6.4 steps 2-3: record the commit index as the read index of these requests,
        then confirm leadership with a round of heartbeats; the reads are answered when a
        quorum acknowledges this round (or a later one)."""
        index = self.log.committed
        if quorum.has_quorum((self.id,), self.voters):
            self._answer_reads(index, reqs)
            return
        self._read_round += 1
        self._read_rounds[self._read_round] = (index, reqs, {self.id})
        self._bcast_heartbeat(self._read_round)

    def _ack_read_round(self, ctx: Any, frm: NodeId) -> None:
        rnd = self._read_rounds.get(ctx) if isinstance(ctx, int) else None
        if rnd is None:
            return
        rnd[2].add(frm)
        if quorum.has_quorum(rnd[2], self.voters):
            # A quorum confirmed leadership after this round began, so every earlier round is confirmed too.
            for r in sorted(k for k in self._read_rounds if k <= ctx):
                index, reqs, _ = self._read_rounds.pop(r)
                self._answer_reads(index, reqs)

    def _answer_reads(self, index: int, reqs: list[tuple[NodeId, Any]]) -> None:
        """Release confirmed reads: local ones as ReadStates, a follower's as a message."""
        for requester, ctx in reqs:
            if requester == self.id:
                self.read_states.append(ReadState(index, ctx))
            else:
                self._send(ReadIndexResponse(self.term, self.id, requester, index, ctx))

    def forget_progress(self, id: NodeId) -> None:
        """On the leader: what it knew of ``id``'s log is void (its data directory is new), so
        replicate to it as to a member just added."""
        if self.role != Role.LEADER or id not in self.prs or id == self.id:
            return
        pr = self.prs[id] = Progress(self.log.last_index() + 1, self.config.max_inflight)
        pr.recent_active = True
        self._dirty.add(id)

    def transfer_leader(self, to: NodeId) -> None:
        """Hand leadership to ``to`` (§3.10): catch it up, then send TimeoutNow.

        Raises:
            NotLeader: only the leader can transfer.
            ValueError: ``to`` is not a voter.
        """
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if to not in self.voters:
            raise ValueError(f"{to!r} is not a voting member")
        if to == self.id or to == self.lead_transferee:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        self._log_event("transfer_started", term=self.term, to=to)
        if self.prs[to].match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, to))
        else:
            self._dirty.add(to)


__all__ = ["Raft", "RECORD", "NOOP"]
