"""Hosts for tests on one Linux machine: network namespaces joined by a bridge.

:class:`Hosts` makes N network namespaces, each with ``lo`` up and one veth (``eth0``, with
its own IPv4 address) whose other end is a port of a Linux bridge in the root namespace. The
bridge has an address of its own on the same /24, so a process in the root namespace (the
test) reaches every host, and the hosts reach each other through the bridge, as machines on
one switch would. A program started with :meth:`Hosts.run_in` sees only its namespace's
interfaces: binding ``0.0.0.0`` there binds that host's address, not the root's.

Every name carries the creating process's pid, so concurrent runs never collide, and
:meth:`Hosts.close` removes whatever was made (namespaces, veths, bridge). It runs when
setup fails half-way, on ``with`` exit, and at interpreter exit as a last resort; calling it
twice is harmless.

When the machine cannot do this (not root, no ``ip`` from iproute2, no namespaces in this
container, bridged traffic filtered), the constructor raises :class:`NetnsUnavailable`, a
``unittest.SkipTest``: pytest reports the test as skipped with that one-line reason, and a
tool that is not a test catches it by name.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import shutil
import subprocess
import sys
import time
import unittest
from collections.abc import Sequence
from typing import Any

__all__ = ["Hosts", "NetnsUnavailable"]

# Each Hosts in one process gets its own letter, so two sets of hosts can coexist.
_instances = itertools.count()
# Third octets of 10.231.X.0/24 to try: a /16 that home routers, clouds and container
# runtimes do not hand out by default.
SUBNET_PREFIX = "10.231"
FIRST_HOST = 11  # host i (from 0) is SUBNET_PREFIX.X.(FIRST_HOST + i); the bridge is .1
IP_TIMEOUT = 10.0  # for one `ip` command: a hung one fails the setup, not the whole run
PROBE_TIMEOUT = 10.0


class NetnsUnavailable(unittest.SkipTest):
    """This machine cannot make namespaced hosts; ``str()`` is one line saying why."""


class Hosts:
    """N namespaced hosts on one bridge; see the module docstring.

    Attributes:
        names: the namespaces, one per host, in order.
        addresses: each host's IPv4 address (a string, no prefix length), in order.
        gateway: the bridge's address: what the hosts see of the root namespace.
        bridge: the bridge's interface name in the root namespace.
    """

    def __init__(self, n: int, *, probe: bool = True) -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"between 1 and 200 hosts, got {n}")
        if sys.platform != "linux":
            raise NetnsUnavailable(f"network namespaces need Linux, this is {sys.platform}")
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root (euid is not 0)")
        if shutil.which("ip") is None:
            raise NetnsUnavailable("no `ip` command (install iproute2)")
        pid, k = os.getpid(), next(_instances)
        # Interface names are limited to 15 bytes: pid in hex plus a letter per instance fits.
        tag = f"cz{pid:x}{chr(ord('a') + k % 26)}"
        self.names = [f"cruise-{pid}-{k}-h{i + 1}" for i in range(n)]
        self.bridge = f"{tag}br"
        self._veths = [f"{tag}{i}" for i in range(n)]
        self._made_ns: list[str] = []
        self._made_links: list[str] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._build()
            if probe:
                self._probe()
        except BaseException:
            self.close()
            raise

    # -- public -------------------------------------------------------------------------------------

    def run_in(self, ns: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen:
        """``ip netns exec NS argv...`` as a Popen (keyword arguments go to Popen).

        ``ip netns exec`` execs the program in place, so the Popen's pid is the program's own
        and signalling it signals the program.
        """
        if ns not in self.names:
            raise ValueError(f"{ns} is not one of these hosts ({', '.join(self.names)})")
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen)

    def close(self) -> None:
        """Delete the namespaces, the veths and the bridge; never raises."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        # Deleting a namespace whose processes still run only unlinks its name, and its veth
        # lives on with them: delete the root ends too, which takes the other ends with them.
        for ns in reversed(self._made_ns):
            _ip("netns", "delete", ns, check=False)
        for link in reversed(self._made_links):
            _ip("link", "delete", link, check=False)

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup --------------------------------------------------------------------------------------

    def _build(self) -> None:
        third = _free_subnet()
        self.gateway = f"{SUBNET_PREFIX}.{third}.1"
        self.addresses = [f"{SUBNET_PREFIX}.{third}.{FIRST_HOST + i}" for i in range(len(self.names))]
        try:
            _ip("netns", "add", self.names[0])
        except subprocess.CalledProcessError as e:
            raise NetnsUnavailable(f"cannot create a network namespace: {_reason(e)}") from None
        self._made_ns.append(self.names[0])
        try:
            for ns in self.names[1:]:
                _ip("netns", "add", ns)
                self._made_ns.append(ns)
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made_links.append(self.bridge)
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for ns, veth, addr in zip(self.names, self._veths, self.addresses, strict=True):
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                self._made_links.append(veth)
                _ip("link", "set", veth, "master", self.bridge)
                _ip("link", "set", veth, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except subprocess.CalledProcessError as e:
            raise NetnsUnavailable(f"cannot wire the namespaces: {_reason(e)}") from None

    def _probe(self) -> None:
        """Check that every host reaches every other and the root reaches every host.

        Where ``br_netfilter`` passes bridged frames through an iptables FORWARD chain that
        drops them (Docker hosts), hosts would not reach each other although each was set up
        without error; better one line saying so than a cluster that never elects.
        """
        port = 9  # any port is free in a namespace made a moment ago
        procs = []
        for ns, addr in zip(self.names, self.addresses, strict=True):
            others = [a for a in self.addresses if a != addr]
            argv = [sys.executable, "-c", _PROBE, addr, str(port), str(PROBE_TIMEOUT), *others]
            procs.append(self.run_in(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
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
            raise NetnsUnavailable(
                "namespaces cannot reach each other over the bridge (bridged traffic filtered?): "
                + "; ".join([f"root cannot reach {a}" for a in unreached] + failed)
            )


# Run in each host: listen, connect to every other host, and stay until those hosts and the
# root have connected here too (or the deadline passes). Exit 1 naming the hosts not reached.
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
    import socket

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection((addr, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)  # refused: the host's listener is not up yet
    return False


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=IP_TIMEOUT)


def _reason(e: subprocess.CalledProcessError) -> str:
    err = (e.stderr or b"").decode(errors="replace").strip()
    return f"`{' '.join(map(str, e.cmd))}`: {' '.join(err.split()) or f'exit {e.returncode}'}"


def _free_subnet() -> int:
    """A third octet X such that nothing on this machine uses 10.231.X.0/24 yet.

    Starting from the pid spreads concurrent runs over the range, so two that check at the
    same moment rarely pick the same one.
    """
    used: list[ipaddress.IPv4Network] = []
    for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
        out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT).stdout
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
    raise NetnsUnavailable(f"every {SUBNET_PREFIX}.X.0/24 is in use on this machine")
