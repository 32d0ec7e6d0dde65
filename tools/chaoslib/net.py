"""Hosts on one Linux machine: one namespace per member, a bridge in a hub namespace, nftables cuts.

The chaos harness runs its members on this network and partitions them with :meth:`Network.cut`;
``tests/integration/test_multihost.py`` builds it with ``cuts=False`` (no nftables needed) for
members that must each have a host of their own. This module is the one place that makes and
removes such namespaces.

Layout (``P`` is the creating process's pid, so concurrent runs never share a name; a second
network in the same process is ``P-1``, a third ``P-2`` and so on; ``chaos`` is the default
``prefix``)::

    root namespace (the harness, its clients)          chaos-P-hub
      cxPr 10.232.X.1/24  <--- veth --->  up0 --+
                                                 |
                            chaos-P-n1 eth0 <--> m1 --+-- br0 (bridge)
                            chaos-P-n2 eth0 <--> m2 --+   nft table bridge chaos-P:
                            ...                           chain cuts, hook forward

Each member namespace has ``lo`` and one ``eth0`` with its own address on the /24; the other
end of its veth is a port of ``br0`` in the hub namespace. The root namespace gets a veth of
its own onto the same bridge, so the harness and its client threads reach every member at its
advertised address without entering a namespace: a thread cannot move a ZeroMQ context's I/O
threads into another namespace, and running clients under ``ip netns exec`` would make them
subprocesses whose history has to be shipped back.

Partitions are rules in a ``bridge`` family table that lives in the hub namespace only: its
``forward`` hook sees every frame the bridge passes from one port to another, so a rule
``ip saddr A ip daddr B drop`` drops A's packets to B and nothing else. Rules name member
addresses only, so the harness (at the root address) always reaches every member: clients see
an isolated leader as it is, not a network of their own that happens to match. Each change of
the cut set replaces the chain's rules in one ``nft -f`` transaction, so there is never a
moment with half a partition; healing flushes the chain. With ``cuts=False`` no table is made
and ``nft`` is not needed.

:meth:`Network.close` deletes exactly what was made, by the names made: the nft table, the
hub's links, the root veth and every namespace. It runs on ``with`` exit, when setup fails
half-way, and at interpreter exit as a last resort; calling it twice is harmless.

When the machine cannot do this (not Linux, not root, no ``ip`` or ``nft``, namespaces or
bridge tables refused) the constructor raises :class:`NetworkUnavailable`, whose ``str()`` is
one line saying what is missing: the harness prints it and exits 77, a test skips with it.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Network", "NetworkUnavailable", "missing_tools"]

SUBNET_PREFIX = "10.232"  # the /24 in it is picked free (_free_subnet), so networks coexist
FIRST_MEMBER = 11  # member i (from 0) is SUBNET_PREFIX.X.(FIRST_MEMBER + i); the root end is .1
CMD_TIMEOUT = 10.0  # one `ip`/`nft` command: a hung one fails the step, not the whole run
PROBE_TIMEOUT = 10.0
CHAIN = "cuts"  # `fwd` and `forward` are nft keywords; a plain word avoids quoting

# Each Network in one process gets its own number, so two can coexist (names differ from the second on).
_instances = itertools.count()


class NetworkUnavailable(Exception):
    """This machine cannot build the network; ``str()`` is one line saying why."""


def missing_tools(*, nft: bool = True) -> str | None:
    """What stops a run here before anything is made, or None when nothing obvious does.

    ``nft=False``: for a network without cuts, which needs no ``nft``.
    """
    if sys.platform != "linux":
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return f"network namespaces{' and nftables' if nft else ''} need root (euid is not 0)"
    if shutil.which("ip") is None:
        return "no `ip` command (install iproute2)"
    if nft and shutil.which("nft") is None:
        return "no `nft` command (install nftables)"
    return None


class Network:
    """N member namespaces on a bridge in a hub namespace; see the module docstring.

    Attributes:
        names: the member namespaces, in order.
        addresses: each member's IPv4 address, in order.
        root_address: the root namespace's address on the bridge (where clients come from).
        hub: the hub namespace.
        table: the nft table (family ``bridge``) in the hub namespace (made only with ``cuts``).

    Arguments:
        n: how many member namespaces.
        probe: check that every member reaches every other and the root reaches each.
        cuts: make the nft table that :meth:`cut` needs (and so require ``nft``).
        prefix: the first word of every name made, to tell whose namespaces they are.
    """

    def __init__(self, n: int, *, probe: bool = True, cuts: bool = True, prefix: str = "chaos") -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"between 1 and 200 members, got {n}")
        missing = missing_tools(nft=cuts)
        if missing:
            raise NetworkUnavailable(missing)
        pid, k = os.getpid(), next(_instances)
        stamp = f"{pid}-{k}" if k else f"{pid}"
        self.hub = f"{prefix}-{stamp}-hub"
        self.names = [f"{prefix}-{stamp}-n{i + 1}" for i in range(n)]
        self.table = f"{prefix}-{stamp}"
        # Interface names are limited to 15 bytes; only this one lives in the root namespace,
        # so it alone must differ between networks whatever their prefix.
        self._root_link = f"cx{pid:x}r{k}" if k else f"cx{pid:x}r"
        self._cuts_enabled = cuts
        self._made_ns: list[str] = []
        self._made_root_link = False
        self._made_table = False
        self._cuts: list[tuple[str, str]] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._build(n)
            if probe:
                self._probe()
        except BaseException:
            self.close()
            raise

    # -- public -------------------------------------------------------------------------------------

    def run_in(self, i: int, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """``ip netns exec`` member i's namespace, as a Popen (keywords go to Popen).

        ``ip netns exec`` execs the program in place, so the Popen's pid is the program's own
        and signalling it (SIGKILL, SIGSTOP) signals the program.
        """
        return subprocess.Popen(["ip", "netns", "exec", self.names[i], *argv], **popen)

    @property
    def cuts(self) -> list[tuple[str, str]]:
        """The (source, destination) address pairs whose packets are dropped now."""
        return list(self._cuts)

    def cut(self, drops: Iterable[tuple[str, str]]) -> None:
        """Drop packets from each source address to its destination; replaces earlier cuts.

        One ``nft -f`` transaction flushes the chain and adds every rule, so the network goes
        from the old cut set to the new one at once.
        """
        if not self._cuts_enabled:
            raise RuntimeError("this network was made with cuts=False: it has no nft table")
        pairs = sorted(set(drops))
        script = [f"flush chain bridge {self.table} {CHAIN}"]
        script += [f"add rule bridge {self.table} {CHAIN} ip saddr {a} ip daddr {b} drop" for a, b in pairs]
        _run(["ip", "netns", "exec", self.hub, "nft", "-f", "-"], stdin="\n".join(script) + "\n")
        self._cuts = pairs

    def heal(self) -> None:
        """Remove every cut."""
        if self._cuts:
            self.cut([])

    def close(self) -> None:
        """Delete the table, links and namespaces made, by their names; never raises.

        The member processes must be gone first: deleting a namespace whose processes still
        run only unlinks its name, and its interfaces live on with them.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._made_table:
            _run(
                ["ip", "netns", "exec", self.hub, "nft", "delete", "table", "bridge", self.table], check=False
            )
        if self._made_root_link:
            _run(["ip", "link", "delete", self._root_link], check=False)  # takes up0 with it
        if self.hub in self._made_ns:
            for i in range(len(self.names)):
                _run(["ip", "-n", self.hub, "link", "delete", f"m{i + 1}"], check=False)
        for ns in reversed(self._made_ns):
            _run(["ip", "netns", "delete", ns], check=False)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup --------------------------------------------------------------------------------------

    def _build(self, n: int) -> None:
        third = _free_subnet()
        self.root_address = f"{SUBNET_PREFIX}.{third}.1"
        self.addresses = [f"{SUBNET_PREFIX}.{third}.{FIRST_MEMBER + i}" for i in range(n)]
        try:
            _run(["ip", "netns", "add", self.hub])
        except subprocess.CalledProcessError as e:
            raise NetworkUnavailable(f"cannot create a network namespace: {_reason(e)}") from None
        self._made_ns.append(self.hub)
        hub = ["ip", "-n", self.hub]
        try:
            _run([*hub, "link", "set", "lo", "up"])
            _run([*hub, "link", "add", "br0", "type", "bridge"])
            _run([*hub, "link", "set", "br0", "up"])
            for i, (ns, addr) in enumerate(zip(self.names, self.addresses, strict=True)):
                _run(["ip", "netns", "add", ns])
                self._made_ns.append(ns)
                port = f"m{i + 1}"
                _run([*hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
                _run([*hub, "link", "set", port, "master", "br0"])
                _run([*hub, "link", "set", port, "up"])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
                _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    self._root_link,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "up0",
                    "netns",
                    self.hub,
                ]
            )
            self._made_root_link = True
            _run([*hub, "link", "set", "up0", "master", "br0"])
            _run([*hub, "link", "set", "up0", "up"])
            _run(["ip", "addr", "add", f"{self.root_address}/24", "dev", self._root_link])
            _run(["ip", "link", "set", self._root_link, "up"])
        except subprocess.CalledProcessError as e:
            raise NetworkUnavailable(f"cannot wire the namespaces: {_reason(e)}") from None
        if not self._cuts_enabled:
            return
        chain = "{ type filter hook forward priority 0; policy accept; }"
        script = f"add table bridge {self.table}\nadd chain bridge {self.table} {CHAIN} {chain}\n"
        try:
            _run(["ip", "netns", "exec", self.hub, "nft", "-f", "-"], stdin=script)
        except subprocess.CalledProcessError as e:
            raise NetworkUnavailable(f"cannot create an nftables bridge table: {_reason(e)}") from None
        self._made_table = True

    def _probe(self) -> None:
        """Check that every member namespace reaches every other and the root reaches each.

        A bridge whose frames something else filters would otherwise show up as a cluster that
        never elects; one line saying so is better.
        """
        port = 9  # any port is free in a namespace made a moment ago
        procs = []
        for i, addr in enumerate(self.addresses):
            others = [a for a in self.addresses if a != addr]
            argv = [sys.executable, "-c", _PROBE, addr, str(port), str(PROBE_TIMEOUT), *others]
            procs.append(self.run_in(i, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        try:
            unreached = [a for a in self.addresses if not _connect(a, port, PROBE_TIMEOUT)]
            failed = []
            for ns, p in zip(self.names, procs, strict=True):
                out, _ = p.communicate(timeout=PROBE_TIMEOUT + 5)
                if p.returncode != 0:
                    failed.append(f"{ns}: {out.decode(errors='replace').strip() or p.returncode}")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if unreached or failed:
            raise NetworkUnavailable(
                "member namespaces cannot reach each other over the hub bridge: "
                + "; ".join([f"root cannot reach {a}" for a in unreached] + failed)
            )


# Run in each member namespace: listen, connect to every other member, and stay until those
# and the root have connected here too (or the deadline passes). Exit 1 naming who was not reached.
_PROBE = """
import socket, sys, time
me, port, limit, others = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
deadline = time.monotonic() + limit
srv = socket.create_server((me, port))
srv.settimeout(0.02)
pending, accepted = set(others), 0
while time.monotonic() < deadline and (pending or accepted < len(others) + 1):
    for a in sorted(pending):
        try:
            socket.create_connection((a, port), timeout=0.2).close()
            pending.discard(a)
        except OSError:
            pass
    try:
        srv.accept()[0].close()
        accepted += 1
    except OSError:
        pass
if pending:
    sys.exit("cannot reach " + ", ".join(sorted(pending)))
"""


def _connect(addr: str, port: int, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection((addr, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)  # refused: the listener is not up yet
    return False


def _run(argv: list[str], *, check: bool = True, stdin: str | None = None) -> None:
    try:
        subprocess.run(
            argv,
            check=check,
            capture_output=True,
            timeout=CMD_TIMEOUT,
            input=None if stdin is None else stdin.encode(),
        )
    except subprocess.TimeoutExpired as e:
        if check:
            raise subprocess.CalledProcessError(124, argv, stderr=b"timed out") from e


def _reason(e: subprocess.CalledProcessError) -> str:
    err = (e.stderr or b"").decode(errors="replace").strip()
    return f"`{' '.join(map(str, e.cmd))}`: {' '.join(err.split()) or f'exit {e.returncode}'}"


def _free_subnet() -> int:
    """A third octet X such that nothing on this machine uses SUBNET_PREFIX.X.0/24 yet.

    Starting from the pid spreads concurrent runs over the range, so two that check at the
    same moment rarely pick the same one.
    """
    used: list[ipaddress.IPv4Network] = []
    for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
        out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT).stdout
        for word in out.split():
            try:
                used.append(ipaddress.IPv4Network(word, strict=False))
            except ValueError:
                continue
    start = os.getpid() % 250
    for third in ((start + i) % 250 + 2 for i in range(250)):
        net = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{third}.0/24")
        # A default route (0.0.0.0/0) overlaps everything and says nothing: skip it.
        if not any(u.prefixlen > 0 and u.overlaps(net) for u in used):
            return third
    raise NetworkUnavailable(f"every {SUBNET_PREFIX}.X.0/24 is in use on this machine")
