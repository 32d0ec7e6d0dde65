"""InteractionEnv: drive a few cores by script and print what they do (etcd-raft's datadriven style).

A script file holds test cases separated by blank lines:

    command arg key=value
    ----
    expected output

Commands (node ids are 1, 2, 3, ...):

    add-nodes N [timeouts=10,15,20] [pre_vote=true] [check_quorum=true] [max_inflight=256] [max_msg_bytes=N]
                             (election timeouts are pinned per node, default 10 + 5 * (k - 1);
                              the leader lease and check-quorum period are 10 ticks)
    campaign ID              start an election on ID
    tick ID [n=K]            K ticks on ID (default 1)
    tick-all [n=K]
    set-election-timeout ID T   pin ID's randomized election timeout
    propose ID VALUE
    read-index ID CTX
    transfer-leader ID TO
    process-ready ID...      handle ID's Ready (persist, queue messages) and print it
    deliver-msgs [ID...] [drop=true]   deliver (or drop) queued messages to ID (default all) and print them
    stabilize [ID...]        process-ready and deliver until nothing moves
    partition A B | C        split the network (messages across are dropped)
    heal
    crash ID / restart ID    lose volatile state / start again from storage
    status ID                print role, term, lead, commit, applied, last
    log ID                   print the persisted log
    raw-log ID               print term/index of every entry in storage

``pytest --rewrite`` rewrites the expected outputs; review the diff.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from cruise.core import CoreConfig, MemoryStorage, RawNode, Ready, describe
from cruise.core.errors import ProposalDropped
from cruise.core.messages import describe_entry


class PinnedRandom(random.Random):
    """An rng whose every randomized election timeout is the same number."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value

    def randint(self, a: int, b: int) -> int:
        return min(max(self.value, a), b)


class InteractionEnv:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.storages: dict[str, MemoryStorage] = {}
        self.nodes: dict[str, RawNode | None] = {}
        self.opts: dict[str, object] = {}
        self.queue: list = []  # messages in flight, in send order
        self.partition: list[set[str]] | None = None
        self.out: list[str] = []

    # -- plumbing -------------------------------------------------------------------
    def p(self, line: str) -> None:
        self.out.append(line)

    def _make(self, i: str) -> RawNode:
        o = self.opts
        timeouts = [int(t) for t in str(o.get("timeouts", "")).split(",") if t]
        k = self.ids.index(i)
        timeout = timeouts[k] if k < len(timeouts) else 10 + 5 * k
        cfg = CoreConfig(
            i,
            tuple(self.ids),
            election_ticks=(10, max(10, timeout)),
            pre_vote=o.get("pre_vote", "true") == "true",
            check_quorum=o.get("check_quorum", "true") == "true",
            max_inflight=int(o.get("max_inflight", 256)),
            max_msg_bytes=int(o.get("max_msg_bytes", 1 << 20)),
            rng=PinnedRandom(timeout),
        )
        # Scripts are deterministic: unless election_max is given, the timeout is not randomized.
        return RawNode(cfg, self.storages[i])

    def node(self, i: str) -> RawNode:
        n = self.nodes[i]
        if n is None:
            raise ValueError(f"node {i} is crashed")
        return n

    def connected(self, a: str, b: str) -> bool:
        return self.partition is None or any(a in g and b in g for g in self.partition)

    def process_ready(self, i: str) -> bool:
        n = self.nodes[i]
        if n is None or not n.has_ready():
            return False
        rd = n.ready()
        self.p(f"> {i} handling Ready")
        for line in describe_ready(rd):
            self.p("  " + line)
        st = self.storages[i]
        self.queue.extend(rd.eager_messages)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages)
        n.advance(rd)
        return True

    def deliver(self, to: set[str] | None, drop: bool = False) -> bool:
        keep, go = [], []
        for m in self.queue:
            (go if to is None or m.to in to else keep).append(m)
        self.queue = keep
        for m in go:
            dest = self.nodes.get(m.to)
            if drop or dest is None or not self.connected(m.frm, m.to):
                self.p(f"dropped: {describe(m)}")
                continue
            self.p(describe(m))
            dest.step(m)
        return bool(go)

    # -- commands ------------------------------------------------------------------------
    def run(self, cmd: str, args: list[str], kw: dict[str, str]) -> str:
        self.out = []
        handler: Callable = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {cmd}")
        try:
            handler(args, kw)
        except ProposalDropped as e:
            self.p(f"error: {type(e).__name__}: {e}")
        return "\n".join(self.out) + ("\n" if self.out else "")

    def cmd_add_nodes(self, args, kw):
        self.opts.update(kw)
        start = len(self.ids)
        for k in range(int(args[0])):
            self.ids.append(str(start + k + 1))
        for i in self.ids:
            self.storages.setdefault(i, MemoryStorage())
        for i in self.ids:
            self.nodes[i] = self._make(i)
        self.p(f"nodes {' '.join(self.ids)}")

    def cmd_campaign(self, args, kw):
        self.node(args[0]).campaign()

    def cmd_tick(self, args, kw):
        for _ in range(int(kw.get("n", 1))):
            self.node(args[0]).tick()

    def cmd_tick_all(self, args, kw):
        for _ in range(int(kw.get("n", 1))):
            for i in self.ids:
                if self.nodes[i] is not None:
                    self.nodes[i].tick()

    def cmd_set_election_timeout(self, args, kw):
        self.node(args[0]).raft.randomized_election_timeout = int(args[1])

    def cmd_propose(self, args, kw):
        idx, term = self.node(args[0]).propose(" ".join(args[1:]))
        self.p(f"proposed at {term}/{idx}")

    def cmd_read_index(self, args, kw):
        ok = self.node(args[0]).read_index(args[1])
        if not ok:
            self.p("no leader known")

    def cmd_transfer_leader(self, args, kw):
        self.node(args[0]).transfer_leader(args[1])

    def cmd_process_ready(self, args, kw):
        for i in args:
            self.process_ready(i)

    def cmd_deliver_msgs(self, args, kw):
        self.deliver(set(args) if args else None, drop=kw.get("drop") == "true")

    def cmd_stabilize(self, args, kw):
        ids = args or self.ids
        for _ in range(1000):
            moved = False
            for i in ids:
                moved |= self.process_ready(i)
            moved |= self.deliver(set(ids))
            if not moved:
                return
        raise AssertionError("stabilize did not settle")

    def cmd_partition(self, args, kw):
        groups, cur = [], set()
        for a in args:
            if a == "|":
                groups.append(cur)
                cur = set()
            else:
                cur.add(a)
        groups.append(cur)
        self.partition = groups

    def cmd_heal(self, args, kw):
        self.partition = None

    def cmd_crash(self, args, kw):
        self.nodes[args[0]] = None
        self.queue = [m for m in self.queue if m.to != args[0]]

    def cmd_restart(self, args, kw):
        self.nodes[args[0]] = self._make(args[0])

    def cmd_status(self, args, kw):
        st = self.node(args[0]).status()
        self.p(
            f"{st['id']}: {st['role']} term={st['term']} leader={st['leader']} commit={st['commit_index']}"
            f" applied={st['applied_index']} last={st['last_index']}"
        )
        for v, pr in st.get("progress", {}).items():
            self.p(f"  {v}: {pr['state']} match={pr['match']} next={pr['next']}")

    def cmd_log(self, args, kw):
        st = self.storages[args[0]]
        ents = st.entries(st.first_index(), st.last_index() + 1)
        self.p(" ".join(describe_entry(e) for e in ents) or "(empty)")


def describe_ready(rd: Ready) -> list[str]:
    out = []
    if rd.soft_state is not None:
        s = rd.soft_state
        out.append(f"role={s.role} leader={s.leader} term={s.term}")
    if rd.hard_state is not None:
        h = rd.hard_state
        out.append(f"HardState term={h.term} vote={h.vote} commit={h.commit}")
    if rd.entries:
        out.append("Entries: " + ", ".join(describe_entry(e) for e in rd.entries))
    if rd.must_sync:
        out.append("must sync")
    if rd.committed:
        out.append("Apply: " + ", ".join(describe_entry(e) for e in rd.committed))
    for rs in rd.read_states:
        out.append(f"ReadState index={rs.index} ctx={rs.ctx}")
    for m in rd.eager_messages:
        out.append("send now: " + describe(m))
    for m in rd.messages:
        out.append("send after sync: " + describe(m))
    return out


def parse_line(line: str) -> tuple[str, list[str], dict[str, str]]:
    parts = line.split()
    args, kw = [], {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            kw[k] = v
        else:
            args.append(p)
    return parts[0], args, kw


def run_file(path: str, rewrite: bool) -> list[tuple[int, str, str, str]]:
    """Run a script; returns mismatches (line, commands, want, got). With ``rewrite``, rewrites the file.

    A case is command lines (``#`` comments allowed), a ``----`` line, then the
    expected output up to the next blank line.
    """
    lines = open(path).read().splitlines()
    env = InteractionEnv()
    out: list[str] = []
    mismatches = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        start = i
        head: list[str] = []
        while i < len(lines) and lines[i] != "----":
            head.append(lines[i])
            i += 1
        i += 1  # the ---- line
        want: list[str] = []
        while i < len(lines) and lines[i].strip():
            want.append(lines[i])
            i += 1
        cmds = [x for x in head if x.strip() and not x.lstrip().startswith("#")]
        got = "".join(env.run(*parse_line(c)) for c in cmds).rstrip("\n")
        if got != "\n".join(want):
            mismatches.append((start + 1, "; ".join(cmds), "\n".join(want), got))
        out.extend(head)
        out.append("----")
        if got:
            out.append(got)
        out.append("")
    if rewrite:
        with open(path, "w") as f:
            f.write("\n".join(out).rstrip("\n") + "\n")
    return mismatches
