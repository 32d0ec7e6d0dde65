"""The ``secure`` workload's keys and certificates: CURVE keys for cruise, TLS for etcd.

The ``secure`` workload is ``external``'s load (N load processes x K records in flight) on a
secured cluster of each system beside its plain one, in the same interleaved rounds:

* **cruise, secured** (``cruise_secure``): ``security: {curve: true, secret_key_file: ...}`` and
  ``clients: {authorized_keys: DIR}``, every member's ``public_key`` in the config, so every
  socket (raft, client, publish) encrypts and authenticates, and only the bench's client key
  may connect as a client. :class:`CurveKeys` writes the keys with
  :func:`cruise.security.generate`, as ``cruise keys generate`` does; each load process's
  DEALER sets :func:`cruise.security.client_options` before it connects.
* **etcd with TLS** (``etcd_tls``): ``https://`` client and peer URLs, a certificate per member
  (``--cert-file``/``--key-file``, and the same pair as ``--peer-cert-file``/
  ``--peer-key-file``), and ``--client-cert-auth``/``--peer-client-cert-auth`` with the
  throwaway CA of :func:`make_tls` as ``--trusted-ca-file``/``--peer-trusted-ca-file``: both
  client and peer traffic are encrypted, and each side proves who it is by certificate, as
  CURVE does for cruise. The gRPC load uses ``grpc.ssl_channel_credentials`` with the CA and a
  client certificate.

The certificates are made with the ``openssl`` command (ECDSA P-256, valid for two days, with
``IP:127.0.0.1`` as subject alternative name), so the bench needs no Python package for them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .procs import BenchError

CLIENT_NAME = "bench"  # the load's key or certificate


@dataclass
class CurveKeys:
    """A secured cruise cluster's keys: each member's public key (Z85) and the load's pair."""

    dir: Path
    members: dict[str, bytes]
    client: tuple[bytes, bytes]  # (public, secret)

    @classmethod
    def generate(cls, root: Path, ids: Iterable[str]) -> CurveKeys:
        """Member keys in ``root/keys`` (``{id}.key``, ``{id}.key_secret``), the load's in
        ``root/clients`` (the members' ``clients.authorized_keys``)."""
        from cruise import security

        members = {}
        for mid in ids:
            _, secret = security.generate(root / "keys", mid)
            members[mid] = security.load_secret(secret)[0]
        _, secret = security.generate(root / "clients", CLIENT_NAME)
        return cls(root, members, security.load_secret(secret))

    def config(self) -> dict[str, dict]:
        """The config's ``security`` and ``clients`` sections."""
        return {
            "security": {"curve": True, "secret_key_file": str(self.dir / "keys" / "{id}.key_secret")},
            "clients": {"authorized_keys": str(self.dir / "clients")},
        }

    def job(self, mid: str) -> tuple[bytes, bytes, bytes]:
        """What a load process needs to reach member ``mid``: (public, secret, server key)."""
        return (*self.client, self.members[mid])


def client_socket_options(curve: tuple[bytes, bytes, bytes] | None) -> dict[int, object] | None:
    """The CURVE client options for a socket from :meth:`CurveKeys.job` (None: a plain socket)."""
    if curve is None:
        return None
    from cruise.security import client_options

    public, secret, server = curve
    return client_options((public, secret), server)


# -- TLS for etcd ------------------------------------------------------------------------------

_LEAF_EXT = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
)


def tls_available() -> str | None:
    """None when the ``openssl`` command is on PATH, else why the TLS cluster cannot run."""
    if shutil.which("openssl") is None:
        return "no openssl on PATH (it makes the throwaway CA); apt-get install -y openssl"
    return None


def _openssl(args: list[str], cwd: Path) -> None:
    try:
        p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"openssl {args[0]}: {e}") from None
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"openssl {args[0]} failed ({p.returncode}): {last}")


def make_tls(root: Path, names: Iterable[str]) -> dict[str, str]:
    """A throwaway CA in ``root``, a certificate and key per name (``NAME.crt``, ``NAME.key``;
    server and client use, for the member's client and peer URLs alike) and one for the load
    (``bench.crt``); the paths as ``{"ca": ..., NAME: ..., ...}`` (NAME's key beside its .crt).

    Raises:
        BenchError: openssl failed.
    """
    root.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]
        + ["-subj", "/CN=cruise-bench-ca"],
        root,
    )
    (root / "leaf.ext").write_text(_LEAF_EXT)
    out = {"ca": str(root / "ca.crt")}
    for name in [*names, CLIENT_NAME]:
        _openssl(["req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"], root)
        _openssl(
            ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
            + ["-out", f"{name}.crt", "-days", "2", "-extfile", "leaf.ext"],
            root,
        )
        out[name] = str(root / f"{name}.crt")
    return out


def key_of(cert: str) -> str:
    """The key file beside a certificate from :func:`make_tls`."""
    return str(Path(cert).with_suffix(".key"))


def client_tls(certs: dict[str, str]) -> dict[str, str]:
    """What a load process needs for a TLS channel: the CA, its certificate and key."""
    return {"ca": certs["ca"], "cert": certs[CLIENT_NAME], "key": key_of(certs[CLIENT_NAME])}
