"""Member ids and ZeroMQ addresses: the one set of rules the config, the client protocol
(``add_member``) and the client all apply, so a member the API accepts is one a config
file could name, and the reverse.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A member id names a data directory (``data/{id}``) and appears in logs and on the wire, so
# it is kept to characters that are safe in a path and need no quoting.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
# tcp://host:port where host is a name, an IPv4 address or a bracketed IPv6 address.
_TCP_RE = re.compile(r"tcp://(\[[0-9A-Fa-f:.%\w]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})\Z")


def show_value(value: Any) -> str:
    """A value as a YAML or JSON author wrote it (``true``, ``"x"``, ``[1, 2]``), for messages."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def check_address(address: Any) -> str | None:
    """Why ``address`` is not a ZeroMQ address other members can connect to, or None if it is.

    Accepted: ``tcp://host:port`` (name, IPv4 or ``[IPv6]``; port 1-65535), ``ipc://path``,
    ``inproc://name``.
    """
    if not isinstance(address, str):
        return f"must be a string, got {show_value(address)}"
    if address != address.strip() or any(c.isspace() for c in address):
        return f"must not contain spaces: {address!r}"
    if address.startswith("tcp://"):
        m = _TCP_RE.match(address)
        if m is None:
            if address.startswith("tcp://*:") or ":*" in address or ":!" in address:
                return f"{address}: wildcard hosts and ports can be bound but not connected to"
            return f"not a ZeroMQ address (expected tcp://host:port): {address}"
        port = int(m.group(2))
        if not 0 < port < 65536:
            return f"port out of range 1-65535: {address}"
        return None
    for scheme in ("ipc://", "inproc://"):
        if address.startswith(scheme):
            return None if len(address) > len(scheme) else f"empty {scheme[:-3]} name: {address}"
    return f"not a ZeroMQ address (expected tcp://host:port, ipc://path or inproc://name): {address!r}"


def check_member_id(value: Any) -> str | None:
    """Why ``value`` is not a valid member id, or None if it is."""
    if not isinstance(value, str):
        return f"must be a string, got {show_value(value)} (quote it in YAML)"
    if not _ID_RE.match(value):
        return f"{value!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit)"
    return None


_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_INDEX = {c: i for i, c in enumerate(_Z85)}


def check_public_key(value: Any) -> str | None:
    """Why ``value`` is not a CURVE public key in Z85 (40 characters for 32 bytes), or None."""
    if not isinstance(value, str) or len(value) != 40:
        return f"must be a CURVE public key (40 Z85 characters, as in a .key file), got {show_value(value)}"
    for k in range(0, 40, 5):
        n = 0
        for c in value[k : k + 5]:
            i = _Z85_INDEX.get(c)
            if i is None:
                return f"is not a Z85 CURVE key (character {c!r}): {show_value(value)}"
            n = n * 85 + i
        if n >= 1 << 32:
            return f"is not a Z85 CURVE key: {show_value(value)}"
    return None
