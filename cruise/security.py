"""CURVE for a member: encryption and authentication on every socket, and who may connect.

Theory of operation
-------------------
With ``security: {curve: true, ...}`` every socket of a member is a CURVE socket
(ZeroMQ's elliptic-curve encryption, in the pyzmq wheel), and a ZAP handler
(``zmq.auth.ThreadAuthenticator``, on its own thread) decides who may connect:

- the ``raft`` ROUTER accepts only the public keys of the members in the configuration
  in force (``set_members`` updates them as membership changes), in ZAP domain ``raft``;
- the ``client`` ROUTER and the ``publish`` XPUB accept the public keys in
  ``clients.authorized_keys`` (``*.key`` files, as ``cruise keys generate`` writes them)
  and the members' own keys (a member forwards requests to the leader as a client), or
  any key with ``clients.allow_any`` (encrypted, not authenticated), in domain ``clients``;
- each DEALER a member connects knows the public key of the member it connects to, so it
  talks only to that member (and a man in the middle learns nothing).

A connection ZAP refuses never completes: no frame of it reaches the member. Keys are
files in the format ``zmq.auth`` reads and writes (``NAME.key``, ``NAME.key_secret``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .config import ClusterConfig, ConfigError

RAFT_DOMAIN = "raft"
CLIENT_DOMAIN = "clients"


class SecurityError(ConfigError):
    """A key that cannot be used; ``str()`` is one line naming the key and the file."""

    def __init__(
        self, message: str, key: str | None = None, file: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__(key, message, file)


def generate(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600) in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for suffix in (".key", ".key_secret"):
        if (d / f"{name}{suffix}").exists():
            raise SecurityError(f"{d / (name + suffix)} exists already; refusing to overwrite a key")
    public, secret = zmq.auth.create_certificates(str(d), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def load_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as e:
        raise SecurityError(f"{path}: cannot read a secret key: {e}") from None
    if not secret:
        raise SecurityError(f"{path}: holds no secret key (a .key file is public only; use the .key_secret)")
    return public, secret


def load_public(path_or_key: str | os.PathLike[str] | bytes) -> bytes:
    """A public key given as Z85 text (40 characters) or as a ``.key`` file."""
    if isinstance(path_or_key, bytes):
        return path_or_key
    text = str(path_or_key)
    if len(text) == 40 and not os.path.exists(text):
        return text.encode()
    try:
        public, _ = zmq.auth.load_certificate(text)
    except (OSError, ValueError) as e:
        raise SecurityError(f"{text}: cannot read a public key: {e}") from None
    return public


def server_options(keys: tuple[bytes, bytes], domain: str) -> dict[int, Any]:
    public, secret = keys
    return {
        zmq.CURVE_SERVER: 1,
        zmq.CURVE_PUBLICKEY: public,
        zmq.CURVE_SECRETKEY: secret,
        zmq.ZAP_DOMAIN: domain.encode(),
    }


def client_options(keys: tuple[bytes, bytes], server_key: bytes) -> dict[int, Any]:
    public, secret = keys
    return {zmq.CURVE_SERVERKEY: server_key, zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}


class _Allowed:
    """ZAP's credentials provider: which public keys each domain lets in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # set on the member's loop, read on ZAP's thread
        self.members: frozenset[bytes] = frozenset()
        self.clients: frozenset[bytes] = frozenset()
        self.allow_any = False

    def callback(self, domain: str, key: bytes) -> bool:
        with self._lock:
            if domain == RAFT_DOMAIN:
                return key in self.members
            return self.allow_any or key in self.clients or key in self.members


class MemberSecurity:
    """One member's keys, its ZAP handler, and the socket options that apply them."""

    def __init__(self, ctx: zmq.Context, cfg: ClusterConfig, log: Any) -> None:
        sec = cfg.security
        assert sec is not None and sec.secret_key_file is not None
        me = cfg.me
        self.keys = load_secret(sec.secret_key_file)
        if me.public_key is not None and self.keys[0] != me.public_key.encode():
            raise SecurityError(
                f"{sec.secret_key_file} holds another key than members[{cfg.members.index(me)}].public_key "
                f"of {me.id}; check the key file and the config",
                "security.secret_key_file",
                cfg.path,
            )
        self.allowed = _Allowed()
        self.allowed.allow_any = sec.allow_any
        if sec.authorized_keys is not None:
            if not sec.authorized_keys.is_dir():
                raise SecurityError(
                    f"{sec.authorized_keys} is not a directory", "clients.authorized_keys", cfg.path
                )
            self.allowed.clients = frozenset(zmq.auth.load_certificates(str(sec.authorized_keys)))
        self.peer_keys: dict[str, bytes] = {}
        self.set_members([m.to_dict() for m in cfg.members])
        self.auth = ThreadAuthenticator(ctx, log=None)
        self.auth.start()
        for domain in (RAFT_DOMAIN, CLIENT_DOMAIN):
            self.auth.configure_curve_callback(domain, credentials_provider=self.allowed)
        log.info(
            "curve_on",
            clients="any" if sec.allow_any else f"{len(self.allowed.clients)} authorized keys",
        )

    def set_members(self, members: Iterable[dict[str, Any]]) -> None:
        """The members in force: whose keys the raft socket accepts, and whom DEALERs expect."""
        keys = {m["id"]: m["public_key"].encode() for m in members if m.get("public_key")}
        self.peer_keys.update(keys)
        with self.allowed._lock:
            self.allowed.members = frozenset(keys.values()) | {self.keys[0]}

    def server(self, domain: str) -> dict[int, Any]:
        return server_options(self.keys, domain)

    def client(self, peer: str) -> dict[int, Any]:
        key = self.peer_keys.get(peer)
        if key is None:
            raise SecurityError(f"no public key for member {peer}: add_member needs member.public_key")
        return client_options(self.keys, key)

    def stop(self) -> None:
        self.auth.stop()


class ClientKeys:
    """A client's CURVE keys, and the key it expects at each member address.

    ``server_key`` is one public key for every address (Z85 text, bytes, or a ``.key`` file),
    or a map from address to such a key (members each have their own).
    """

    def __init__(self, key: str | os.PathLike[str], server_key: Any) -> None:
        self.keys = load_secret(key)
        self._one: bytes | None = None
        self._by_addr: dict[str, bytes] = {}
        if isinstance(server_key, dict):
            self._by_addr = {a: load_public(k) for a, k in server_key.items()}
        else:
            self._one = load_public(server_key)

    def learn(self, members: Iterable[dict[str, Any]]) -> None:
        """Keys the cluster states (``status`` members' ``public_key``), for addresses not given."""
        for m in members:
            k = m.get("public_key")
            if isinstance(k, str):
                for kind in ("client", "publish"):
                    if isinstance(m.get(kind), str):
                        self._by_addr.setdefault(m[kind], k.encode())

    def options(self, addr: str) -> dict[int, Any]:
        key = self._by_addr.get(addr, self._one)
        if key is None:
            raise ValueError(f"no server key for {addr}: give server_key for it")
        return client_options(self.keys, key)


def client_keys(key: Any, server_key: Any) -> ClientKeys | None:
    """``ClientKeys`` for a client given ``key`` and ``server_key``; None when given neither."""
    if key is None and server_key is None:
        return None
    if key is None or server_key is None:
        raise ValueError("CURVE needs both key (your .key_secret) and server_key (the members' public keys)")
    return ClientKeys(key, server_key)
