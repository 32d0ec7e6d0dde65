"""Cluster configuration: a YAML file -> :class:`ClusterConfig`, strictly (contract section 3).

Theory of operation
-------------------
:func:`load_config` reads the file with PyYAML's safe loader (plus a check that no map repeats
a key, which PyYAML would otherwise let the last one win), then checks every key by hand and
builds frozen dataclasses. Anything wrong, whether an unknown key, a missing field, a wrong
type, a duplicate id or address, or an id that is not a member, raises :class:`ConfigError`
*before anything binds*. Its ``str()`` is one line naming the file and the key, e.g.::

    configs/x.yaml: members[1].raft: duplicate address tcp://127.0.0.1:7101 (also members[0].raft)

The CLI prints that line and exits 2.

Why by hand and not a schema library: the contract allows only PyYAML, and a dozen keys are
clearer as code than as a schema. ``bool`` is a subclass of ``int`` in Python, so every int
check uses ``type(v) is int`` so that ``heartbeat_ms: true`` is refused.

Addresses are ZeroMQ endpoints that other members *connect* to, so ``tcp://*:7101`` and
ephemeral ports (``tcp://host:*``) are refused: they can be bound but not reached.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .addresses import check_address, check_member_id, check_public_key
from .addresses import show_value as _show
from .timing import core_timing

__all__ = [
    "DEFAULT_CONFIG",
    "ClusterConfig",
    "ConfigError",
    "MemberSpec",
    "check_address",
    "check_member_id",
    "load_config",
    "parse_value",
]

DEFAULT_CONFIG = "configs/local.yaml"

# Every top-level key the file may hold (contract section 3), in the order they are documented.
TOP_KEYS = (
    "members",
    "id",
    "data_dir",
    "heartbeat_ms",
    "election_timeout_ms",
    "fsync",
    "state_machine",
    "snapshot_every",
    "retain_entries",
    "wal_segment_bytes",
    "max_value_bytes",
    "request_timeout_ms",
    "join",
    "security",
    "clients",
    "metrics_tls",
)
METRICS_TLS_KEYS = ("cert_file", "key_file", "client_ca_file")
MEMBER_KEYS = ("id", "raft", "client", "publish", "voter", "bind", "metrics", "public_key")
SECURITY_KEYS = ("curve", "secret_key_file")
CLIENTS_KEYS = ("authorized_keys", "allow_any")
ADDRESS_FIELDS = ("raft", "client", "publish")

# ``package.module:Class`` (the module part may be a single name).
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_CLASS_REF_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\Z")
BUILTIN_STATE_MACHINES = ("stream", "kv")


def check_host_port(value: Any) -> str | None:
    """Why ``value`` is not a ``HOST:PORT`` to listen on (None when it is)."""
    if not isinstance(value, str) or ":" not in value:
        return f'must be "HOST:PORT", e.g. "127.0.0.1:9101", got {_show(value)}'
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f'must be "HOST:PORT" with a port from 1 to 65535, got {_show(value)}'
    return None


class ConfigError(Exception):
    """The configuration is unusable. ``str()`` is one line: ``FILE: KEY: message``.

    Attributes:
        key: the offending key as a path (``members[1].raft``, ``heartbeat_ms``), or None
            when the problem is the file as a whole (missing, not YAML, not a map).
        file: the configuration file as the user named it, or None.
        message: what is wrong, without the file and key.
    """

    def __init__(self, key: str | None, message: str, file: str | os.PathLike[str] | None = None) -> None:
        # One line, whatever a YAML problem or an OS error put in the message.
        self.message = " ".join(str(message).split())
        self.key = key
        self.file = None if file is None else str(file)
        super().__init__(key, self.message, self.file)  # all three, so the error pickles

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join([*parts, self.message])


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One member: its id and the three ZeroMQ addresses it binds (contract section 3)."""

    id: str
    raft: str  # ROUTER: peer RPCs
    client: str  # ROUTER: client requests (REQ or DEALER clients)
    publish: str  # PUB: committed entries
    voter: bool = True
    # Where this member binds, when not at the addresses it advertises (a NAT, a container,
    # ``tcp://0.0.0.0:PORT``): a map from any of raft/client/publish to an address. Local to
    # the member: configuration entries and ``status`` carry the advertised addresses only.
    bind: Mapping[str, str] | None = None
    metrics: str | None = None  # "HOST:PORT" of a Prometheus text endpoint at /metrics
    public_key: str | None = None  # its CURVE public key, Z85 (40 characters)

    def bind_address(self, kind: str) -> str:
        """The address to bind for ``kind`` (raft, client or publish)."""
        return (self.bind or {}).get(kind) or getattr(self, kind)

    def to_dict(self) -> dict[str, Any]:
        """The member as the ``status`` reply and configuration entries carry it."""
        return {
            "id": self.id,
            "raft": self.raft,
            "client": self.client,
            "publish": self.publish,
            "voter": self.voter,
            **({"public_key": self.public_key} if self.public_key else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemberSpec:
        """The inverse of :meth:`to_dict`; ``voter`` defaults to True. Does not validate."""
        return cls(
            d["id"],
            d["raft"],
            d["client"],
            d["publish"],
            bool(d.get("voter", True)),
            public_key=d.get("public_key"),
        )


@dataclass(frozen=True, slots=True)
class MetricsTLS:
    """``metrics_tls``: the metrics endpoint over HTTPS. Paths are absolute (``{id}`` filled in
    for this member, relative to the config file's folder); with ``client_ca_file`` a scraper
    must present a certificate that CA signed."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None


@dataclass(frozen=True, slots=True)
class Security:
    """``security`` and ``clients``: CURVE on every socket (``cruise.security``).

    ``secret_key_file`` is absolute (``{id}`` filled in for this member, relative to the
    config file's folder). Clients: ``authorized_keys`` is a directory of ``*.key`` public
    key files (as ``cruise keys generate`` writes them), or ``allow_any`` lets any client in
    (still encrypted, not authenticated).
    """

    secret_key_file: Path | None  # None for a client-only load (no --id)
    authorized_keys: Path | None
    allow_any: bool


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A validated configuration. Durations are in milliseconds, sizes in bytes.

    ``data_dir`` is absolute: the ``data_dir`` template with ``{id}`` filled in, relative to
    the folder of the config file. When ``id`` is None (a client that only needs the
    addresses), it is the template resolved but unformatted; use :meth:`data_dir_for`.
    """

    path: Path  # the configuration file, as named by the user
    members: tuple[MemberSpec, ...]  # in file order; ids and addresses unique
    id: str | None  # this member's id (``--id`` wins over the file), or None
    data_dir: Path
    heartbeat_ms: int = 50
    # Invariant: heartbeat_ms < lo <= hi, and cruise.timing.core_timing accepts them.
    election_timeout_ms: tuple[int, int] = (300, 600)
    fsync: bool = True
    state_machine: str = "stream"  # "stream", "kv" or "package.module:Class"
    snapshot_every: int = 10000
    retain_entries: int = 100000
    # WAL segment size; each segment is preallocated, so this is also the disk a new member
    # reserves. Small enough for a laptop cluster, large enough that sealing one is rare.
    wal_segment_bytes: int = 8 << 20
    max_value_bytes: int = 1048576
    request_timeout_ms: int = 5000
    join: bool = False
    data_dir_template: str = field(default="data/{id}", compare=False)
    security: Security | None = None  # None: no CURVE (traffic unauthenticated, in the clear)
    metrics_tls: MetricsTLS | None = None  # None: the metrics endpoint is plain HTTP

    @property
    def me(self) -> MemberSpec:
        """This member's entry. Raises ConfigError when ``id`` is unset or not a member."""
        if self.id is None:
            raise ConfigError("id", "no member id: set `id` in the file or pass --id", self.path)
        spec = self.member(self.id)
        if spec is None:
            raise ConfigError("id", f"{self.id!r} is not in members ({self._ids()})", self.path)
        return spec

    def member(self, id: str) -> MemberSpec | None:
        """The entry of member ``id``, or None."""
        for m in self.members:
            if m.id == id:
                return m
        return None

    def client_addresses(self) -> list[str]:
        """Every member's ``client`` address, in file order (the CLI's default ``--to``)."""
        return [m.client for m in self.members]

    def publish_addresses(self) -> list[str]:
        """Every member's ``publish`` address, in file order."""
        return [m.publish for m in self.members]

    def data_dir_for(self, id: str) -> Path:
        """The data directory of member ``id``: the template formatted and resolved."""
        return _resolve_dir(self.path, self.data_dir_template.format(id=id))

    def _ids(self) -> str:
        return ", ".join(m.id for m in self.members)


def load_config(
    path: str | os.PathLike[str],
    *,
    id: str | None = None,
    join: bool | None = None,
    require_id: bool = True,
) -> ClusterConfig:
    """Read and validate a configuration file.

    Args:
        path: the YAML file. Relative ``data_dir`` values are relative to its folder.
        id: this member's id (``--id``); wins over the file's ``id``.
        join: ``--join``; when not None it wins over the file's ``join``.
        require_id: when True (``cruise run``), an id must be given and be in ``members``.
            Clients pass False: they only need the addresses.

    Returns:
        The validated :class:`ClusterConfig`.

    Raises:
        ConfigError: for anything wrong, with the file and the key named.
    """
    file = Path(path)
    data = _read_yaml(file)
    return _Checker(file).build(data, id_arg=id, join_arg=join, require_id=require_id)


def parse_value(text: str) -> Any:
    """A CLI VALUE argument: its JSON value when ``text`` is valid JSON, else the string itself.

    Strict JSON (RFC 8259): ``NaN`` and ``Infinity`` are not JSON and stay strings.

    >>> parse_value("3"), parse_value('"x"'), parse_value("hello"), parse_value("")
    (3, 'x', 'hello', '')
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:  # json.JSONDecodeError and _reject_constant's error
        return text


# -- internals ---------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _resolve_dir(config_path: Path, directory: str) -> Path:
    p = Path(directory).expanduser()
    if not p.is_absolute():
        # Relative to the folder of the config file as the user named it (symlinks not followed).
        p = Path(os.path.abspath(config_path)).parent / p
    return Path(os.path.normpath(p))


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a map repeating a key (PyYAML keeps the last one silently)."""


def _construct_strict_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor`: keys merged in may be overridden on purpose
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable key: construct_mapping below reports it
        if duplicate:
            raise _DuplicateKey(key, key_node.start_mark.line + 1)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_strict_mapping)


def _read_yaml(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(None, "no such file", file) from None
    except IsADirectoryError:
        raise ConfigError(None, "is a directory, not a config file", file) from None
    except UnicodeDecodeError as e:
        raise ConfigError(None, f"not UTF-8 text ({e.reason} at byte {e.start})", file) from None
    except OSError as e:
        raise ConfigError(None, f"cannot read: {e.strerror or e}", file) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except _DuplicateKey as e:
        raise ConfigError(str(e.key), f"duplicate key (line {e.line})", file) from None
    except yaml.MarkedYAMLError as e:
        where = (
            f"line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}: " if e.problem_mark else ""
        )
        raise ConfigError(None, f"invalid YAML at {where}{e.problem or e.context}", file) from None
    except yaml.YAMLError as e:
        raise ConfigError(None, f"invalid YAML: {e}", file) from None


class _Checker:
    """Validates the parsed YAML of one file; every failure names that file."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(key, message, self.file)

    def unknown_keys(self, data: Mapping[Any, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for k in data:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1)
                did_you_mean = f"; did you mean {hint[0]}?" if hint else ""
                raise self.fail(f"{prefix}{k}", f"unknown key (allowed: {', '.join(allowed)}){did_you_mean}")

    def integer(self, data: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
        value = data.get(key, default)
        if type(value) is not int or value < minimum:
            what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
            raise self.fail(key, f"must be {what}, got {_show(value)}")
        return value

    def boolean(self, data: Mapping[str, Any], key: str, default: bool) -> bool:
        value = data.get(key, default)
        if type(value) is not bool:
            raise self.fail(key, f"must be true or false, got {_show(value)}")
        return value

    def member(self, i: int, entry: Any) -> MemberSpec:
        where = f"members[{i}]"
        if not isinstance(entry, dict):
            raise self.fail(where, f"must be a map with id, raft, client, publish; got {_show(entry)}")
        self.unknown_keys(entry, MEMBER_KEYS, f"{where}.")
        for k in ("id", *ADDRESS_FIELDS):
            if k not in entry:
                raise self.fail(f"{where}.{k}", "missing field")
        problem = check_member_id(entry["id"])
        if problem:
            raise self.fail(f"{where}.id", problem)
        for k in ADDRESS_FIELDS:
            problem = check_address(entry[k])
            if problem:
                raise self.fail(f"{where}.{k}", problem)
        voter = entry.get("voter", True)
        if type(voter) is not bool:
            raise self.fail(f"{where}.voter", f"must be true or false, got {_show(voter)}")
        bind = entry.get("bind")
        if bind is not None:
            if not isinstance(bind, dict) or not bind:
                raise self.fail(
                    f"{where}.bind", f"must be a map of raft/client/publish to addresses, got {_show(bind)}"
                )
            self.unknown_keys(bind, ADDRESS_FIELDS, f"{where}.bind.")
            for k, a in bind.items():
                problem = check_address(a)
                if problem:
                    raise self.fail(f"{where}.bind.{k}", problem)
        public_key = entry.get("public_key")
        if public_key is not None:
            problem = check_public_key(public_key)
            if problem:
                raise self.fail(f"{where}.public_key", problem)
        metrics = entry.get("metrics")
        if metrics is not None:
            problem = check_host_port(metrics)
            if problem:
                raise self.fail(f"{where}.metrics", problem)
        return MemberSpec(
            entry["id"],
            entry["raft"],
            entry["client"],
            entry["publish"],
            voter,
            bind and dict(bind),
            metrics,
            public_key,
        )

    def security(
        self, data: Mapping[str, Any], members: tuple[MemberSpec, ...], member_id: str | None
    ) -> Security | None:
        sec = data.get("security")
        clients = data.get("clients")
        if sec is None:
            if clients is not None:
                raise self.fail(
                    "clients", "needs security: {curve: true, ...}: without CURVE every client connects"
                )
            return None
        if not isinstance(sec, dict):
            raise self.fail(
                "security", f"must be a map like {{curve: true, secret_key_file: PATH}}, got {_show(sec)}"
            )
        self.unknown_keys(sec, SECURITY_KEYS, "security.")
        if sec.get("curve") is not True:
            raise self.fail(
                "security.curve", f"must be true (leave security out for none), got {_show(sec.get('curve'))}"
            )
        template = sec.get("secret_key_file")
        if not isinstance(template, str) or not template:
            raise self.fail(
                "security.secret_key_file",
                f"must be a path like keys/{{id}}.key_secret, got {_show(template)}",
            )
        missing = [f"members[{i}]" for i, m in enumerate(members) if m.public_key is None]
        if missing:
            raise self.fail(
                f"{missing[0]}.public_key", "missing: with CURVE every member's public key must be listed"
            )
        if not isinstance(clients, dict):
            raise self.fail(
                "clients",
                "say who may connect as a client: {authorized_keys: DIR} or {allow_any: true}"
                + ("" if clients is None else f", got {_show(clients)}"),
            )
        self.unknown_keys(clients, CLIENTS_KEYS, "clients.")
        allow_any = clients.get("allow_any", False)
        if type(allow_any) is not bool:
            raise self.fail("clients.allow_any", f"must be true or false, got {_show(allow_any)}")
        keys_dir = clients.get("authorized_keys")
        if (keys_dir is None) == (not allow_any):
            raise self.fail("clients", "give exactly one of authorized_keys: DIR and allow_any: true")
        if keys_dir is not None and (not isinstance(keys_dir, str) or not keys_dir):
            raise self.fail("clients.authorized_keys", f"must be a directory path, got {_show(keys_dir)}")
        secret = None
        if member_id is not None:
            secret = _resolve_dir(self.file, template.replace("{id}", member_id))
        return Security(
            secret_key_file=secret,
            authorized_keys=None if keys_dir is None else _resolve_dir(self.file, keys_dir),
            allow_any=allow_any,
        )

    def metrics_tls(self, data: Mapping[str, Any], member_id: str | None) -> MetricsTLS | None:
        tls = data.get("metrics_tls")
        if tls is None:
            return None
        if not isinstance(tls, dict):
            raise self.fail(
                "metrics_tls", f"must be a map like {{cert_file: PATH, key_file: PATH}}, got {_show(tls)}"
            )
        self.unknown_keys(tls, METRICS_TLS_KEYS, "metrics_tls.")
        paths: dict[str, Path | None] = {}
        for k in METRICS_TLS_KEYS:
            v = tls.get(k)
            if v is None and k == "client_ca_file":
                paths[k] = None
                continue
            if not isinstance(v, str) or not v:
                raise self.fail(f"metrics_tls.{k}", f"must be a file path (may name {{id}}), got {_show(v)}")
            paths[k] = _resolve_dir(self.file, v.replace("{id}", member_id or "{id}"))
        cert, key = paths["cert_file"], paths["key_file"]
        assert cert is not None and key is not None
        return MetricsTLS(cert, key, paths["client_ca_file"])

    def members(self, data: Mapping[str, Any]) -> tuple[MemberSpec, ...]:
        if "members" not in data:
            raise self.fail("members", "missing field: the list of members")
        raw = data["members"]
        if not isinstance(raw, list) or not raw:
            raise self.fail("members", f"must be a non-empty list of member maps, got {_show(raw)}")
        members = tuple(self.member(i, entry) for i, entry in enumerate(raw))
        ids: dict[str, int] = {}
        addresses: dict[str, str] = {}
        for i, m in enumerate(members):
            if m.id in ids:
                raise self.fail(f"members[{i}].id", f"duplicate id {m.id} (also members[{ids[m.id]}].id)")
            ids[m.id] = i
            for k in ADDRESS_FIELDS:
                address = getattr(m, k)
                if address in addresses:
                    raise self.fail(
                        f"members[{i}].{k}", f"duplicate address {address} (also {addresses[address]})"
                    )
                addresses[address] = f"members[{i}].{k}"
        return members

    def build(
        self, data: Any, *, id_arg: str | None, join_arg: bool | None, require_id: bool
    ) -> ClusterConfig:
        if data is None:
            raise self.fail(None, "empty file: expected a map with at least `members`")
        if not isinstance(data, dict):
            raise self.fail(None, f"the top level must be a map of keys, got {type(data).__name__}")
        self.unknown_keys(data, TOP_KEYS, "")
        members = self.members(data)

        # The id: --id wins over the file.
        member_id = data.get("id")
        source = "id"
        if id_arg is not None:
            member_id, source = id_arg, "--id"
        if member_id is not None:
            problem = check_member_id(member_id)
            if problem:
                raise self.fail("id", f"{source}: {problem}" if source == "--id" else problem)
        ids = [m.id for m in members]
        if require_id:
            if member_id is None:
                raise self.fail("id", "no member id: set `id` in the file or pass --id")
            if member_id not in ids:
                origin = " (from --id)" if source == "--id" else ""
                raise self.fail("id", f"{member_id}{origin} is not in members ({', '.join(ids)})")

        join = self.boolean(data, "join", False) if join_arg is None else bool(join_arg)
        if join and member_id is not None and len(members) < 2:
            raise self.fail(
                "members", "a joining member needs its own entry and at least one existing member"
            )
        if not join and not any(m.voter for m in members):
            raise self.fail("members", "at least one member must be a voter")

        heartbeat_ms = self.integer(data, "heartbeat_ms", 50, 1)
        election = data.get("election_timeout_ms", [300, 600])
        if (
            not isinstance(election, list | tuple)
            or len(election) != 2
            or any(type(x) is not int for x in election)
        ):
            raise self.fail(
                "election_timeout_ms", f"must be a list of two ints [lo, hi], got {_show(election)}"
            )
        lo, hi = election
        if not 0 < lo <= hi:
            raise self.fail("election_timeout_ms", f"must satisfy 0 < lo <= hi, got {_show(election)}")
        if lo <= heartbeat_ms:
            raise self.fail(
                "election_timeout_ms",
                f"lower bound {lo} must be larger than heartbeat_ms ({heartbeat_ms})",
            )
        try:
            # The core counts both in ticks and refuses a lower bound that does not exceed
            # the heartbeat there; rounding down can equal them although lo > heartbeat_ms.
            core_timing(heartbeat_ms, (lo, hi))
        except ValueError as e:
            raise self.fail("election_timeout_ms", str(e)) from None

        state_machine = data.get("state_machine", "stream")
        if not isinstance(state_machine, str) or not (
            state_machine in BUILTIN_STATE_MACHINES or _CLASS_REF_RE.match(state_machine)
        ):
            raise self.fail(
                "state_machine", f"must be stream, kv or package.module:Class, got {_show(state_machine)}"
            )

        template = data.get("data_dir", "data/{id}")
        if not isinstance(template, str) or not template:
            raise self.fail("data_dir", f"must be a non-empty string, got {_show(template)}")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as e:
            raise self.fail("data_dir", f"bad template {template!r}: {e}") from None
        if any(f != "id" for f in fields):
            raise self.fail("data_dir", f"only {{id}} may appear in braces, got {template!r}")
        if member_id is None:
            data_dir = _resolve_dir(self.file, template)
        else:
            data_dir = _resolve_dir(self.file, template.format(id=member_id))

        security = self.security(data, members, member_id)
        return ClusterConfig(
            path=self.file,
            security=security,
            metrics_tls=self.metrics_tls(data, member_id),
            members=members,
            id=member_id,
            data_dir=data_dir,
            heartbeat_ms=heartbeat_ms,
            election_timeout_ms=(lo, hi),
            fsync=self.boolean(data, "fsync", True),
            state_machine=state_machine,
            snapshot_every=self.integer(data, "snapshot_every", 10000, 1),
            retain_entries=self.integer(data, "retain_entries", 100000, 0),
            wal_segment_bytes=self.integer(data, "wal_segment_bytes", 8 << 20, 64 << 10),
            max_value_bytes=self.integer(data, "max_value_bytes", 1048576, 1),
            request_timeout_ms=self.integer(data, "request_timeout_ms", 5000, 1),
            join=join,
            data_dir_template=template,
        )
