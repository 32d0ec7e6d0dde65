"""The ``cruise`` command line (contract section 2).

Exit codes: 0 success; 1 the cluster answered with an error or could not be reached
(``error: CODE: message`` on stderr); 2 bad usage or a bad configuration (one line on stderr,
never a traceback).

Client commands (``record``, ``tail``, ``status``, ``member``, ``transfer``, ``kv``) talk to the
members' ``client`` addresses: those given with ``--to`` (``--from`` for ``tail``), else every
member's from ``--config FILE``, else those in ``$CRUISE_ENDPOINTS`` (comma-separated), else every
member's from ``$CRUISE_CONFIG`` (default ``configs/local.yaml``). Command-line flags win over the
environment; a config path is taken as given (relative to the working directory, or absolute).

``record VALUE`` and ``kv put KEY VALUE`` take ``-`` (read the value from stdin) or ``@FILE`` (read
it from FILE); the text read is parsed exactly as a command-line VALUE.

``status`` exits 1 when no member answered, when no member that answered knows a leader, or when
the members that answered are not a quorum of the configured voters.

The ``kv`` commands are the ``kv`` state machine's records and queries. Against a cluster that
runs the ``stream`` machine, each prints one line (``KV_ON_STREAM``) and exits 1 without writing:
put, delete and cas ask a query first, which the stream machine refuses.

JSON output: msgpack values are printed as JSON. A binary (``bytes``) value, which JSON has no
type for, is printed as a string: its UTF-8 text when it decodes as UTF-8, else its base64
encoding; except by ``tail``, which prints every binary value (at any depth) as
``{"$bytes": "<base64>"}`` so that its JSON lines are unambiguous. Map keys that are not strings
are printed as strings.
"""

from __future__ import annotations

import argparse
import base64
import errno
import fcntl
import gc
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from brokerless import BindError
from cruise import __version__
from cruise.client import DEFAULT_TIMEOUT, Client, RecordResult, Subscriber, check_address, status_all
from cruise.config import DEFAULT_CONFIG, ClusterConfig, ConfigError, load_config, parse_value
from cruise.errors import BAD_REQUEST, CruiseError
from cruise.fsm import STREAM_REFUSAL

__all__ = ["main", "to_jsonable"]

STATUS_TIMEOUT = 1.0  # default seconds `status` waits for each member (they are asked at once)
UP_LEADER_DEADLINE = 15.0  # seconds `up` waits for a leader before giving up
UP_POLL = 0.5  # seconds between `up`'s status rounds
UP_STOP_DEADLINE = 10.0  # seconds `up` waits for children after SIGTERM before SIGKILL
LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ENV_CONFIG = "CRUISE_CONFIG"  # the default config file when --config is not given
ENV_ENDPOINTS = "CRUISE_ENDPOINTS"  # comma-separated client addresses: the default --to/--from


class UsageError(Exception):
    """A user mistake found after parsing (a bad address): exit 2 with one line."""


# -- JSON output -------------------------------------------------------------------------------


def to_jsonable(value: Any, *, tagged_bytes: bool = False) -> Any:
    """``value`` (as msgpack decodes it) made printable as JSON; see the module docstring.

    With ``tagged_bytes`` (``tail``), every binary value becomes ``{"$bytes": "<base64>"}``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if tagged_bytes:
            return {"$bytes": base64.b64encode(raw).decode("ascii")}
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, dict):
        return {
            _json_key(k, tagged_bytes): to_jsonable(v, tagged_bytes=tagged_bytes) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [to_jsonable(v, tagged_bytes=tagged_bytes) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN/Infinity are not JSON
    return value


def _json_key(key: Any, tagged_bytes: bool = False) -> str:
    if isinstance(key, str):
        return key
    converted = to_jsonable(key, tagged_bytes=tagged_bytes)
    return converted if isinstance(converted, str) else json.dumps(converted)


def _dumps(value: Any, *, tagged_bytes: bool = False) -> str:
    return json.dumps(to_jsonable(value, tagged_bytes=tagged_bytes), ensure_ascii=False)


def _out(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- argument types ----------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v


def _index(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def _default_config() -> str:
    """The config file used when none is given: ``$CRUISE_CONFIG``, else ``configs/local.yaml``."""
    return os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG


def _env_endpoints() -> list[str]:
    """The client addresses in ``$CRUISE_ENDPOINTS`` (comma-separated; empty items ignored)."""
    addrs = [a.strip() for a in os.environ.get(ENV_ENDPOINTS, "").split(",") if a.strip()]
    for a in addrs:
        try:
            check_address(a)
        except ValueError as e:
            raise UsageError(f"{ENV_ENDPOINTS}: {e}") from None
    return addrs


def _read_value(text: str) -> Any:
    """A VALUE argument: ``-`` reads stdin, ``@FILE`` reads FILE, else the text itself; then parsed
    as :func:`cruise.config.parse_value` parses it (JSON when valid JSON, else the string)."""
    if text == "-":
        try:
            return parse_value(sys.stdin.read())
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the value from stdin: {e}") from None
    if text.startswith("@"):
        path = text[1:]
        try:
            with open(path, encoding="utf-8") as f:
                return parse_value(f.read())
        except OSError as e:
            raise UsageError(f"cannot read the value from {path}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise UsageError(f"cannot read the value from {path}: not UTF-8 text ({e.reason})") from None
    return parse_value(text)


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cruise",
        description="A Raft cluster over ZeroMQ: run members, record values, tail the committed log.",
        epilog="Exit codes: 0 success, 1 the cluster answered with an error or was unreachable, "
        f"2 bad usage or bad config. Environment: {ENV_CONFIG} (default config file), "
        f"{ENV_ENDPOINTS} (comma-separated client addresses, the default --to/--from); "
        "command-line flags win.",
    )
    parser.add_argument("--version", action="version", version=f"cruise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Options every client command takes.
    client_opts = argparse.ArgumentParser(add_help=False)
    client_opts.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="cluster config whose members' client addresses are the default, relative to the working "
        f"directory or absolute (default ${ENV_CONFIG}, else {DEFAULT_CONFIG}; "
        f"${ENV_ENDPOINTS} wins over ${ENV_CONFIG})",
    )
    client_opts.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=None,
        help=f"how long to wait for the cluster (default {DEFAULT_TIMEOUT:g}; status: {STATUS_TIMEOUT:g} per member)",
    )
    client_opts.add_argument(
        "--key",
        dest="curve_key",  # `key` is `kv`'s KEY
        metavar="FILE",
        default=None,
        help="your CURVE secret key (a .key_secret from `cruise keys generate`), for a secured cluster",
    )
    client_opts.add_argument(
        "--server-key",
        metavar="FILE",
        default=None,
        help="the members' CURVE public key (a .key file), when not in the config's public_key entries",
    )
    to_opt = argparse.ArgumentParser(add_help=False)
    to_opt.add_argument(
        "--to",
        metavar="ADDR",
        action="append",
        default=None,
        help=f"a member's client address, e.g. tcp://127.0.0.1:7201 (repeatable; default ${ENV_ENDPOINTS})",
    )

    p = sub.add_parser("run", help="run one member in the foreground")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--id", help="which member of CONFIG to run (wins over the file's id)")
    p.add_argument("--join", action="store_true", default=None, help="start empty and wait to be added")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="console")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("up", help="run every member of CONFIG as child processes")
    p.add_argument(
        "config",
        metavar="CONFIG",
        nargs="?",
        default=None,
        help=f"default ${ENV_CONFIG}, else {DEFAULT_CONFIG}",
    )
    p.add_argument("--log-format", choices=LOG_FORMATS, default="console", help="the members' log format")
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, default="warning", help="the members' log level (default warning)"
    )
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser(
        "record",
        parents=[client_opts, to_opt],
        help="record VALUE (JSON when valid JSON, else the string); prints {index, term}",
    )
    p.add_argument("value", metavar="VALUE", help="the value; - reads it from stdin, @FILE from FILE")
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser(
        "tail",
        parents=[client_opts],
        help="print committed entries as JSON lines: catch up from --since, then live",
        description="Prints one JSON object per line: {index, term, kind, value}. A binary value, at "
        'any depth, is printed as {"$bytes": "<base64>"}.',
    )
    p.add_argument(
        "--from",
        dest="to",
        metavar="ADDR",
        action="append",
        default=None,
        help=f"a member's client address (repeatable; default ${ENV_ENDPOINTS}); publish addresses are "
        "learned from status",
    )
    p.add_argument(
        "--since", metavar="INDEX", type=_index, default=None, help="first index to print (inclusive)"
    )
    p.set_defaults(func=_cmd_tail)

    p = sub.add_parser(
        "status",
        parents=[client_opts, to_opt],
        help="one row per member",
        description="One row per member. Exits 1 when no member answered, when no member that answered "
        "knows a leader, or when those that answered are not a quorum of the configured voters.",
    )
    p.add_argument("--json", action="store_true", help="a JSON array, one object per member")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("member", help="membership change through the log")
    msub = p.add_subparsers(dest="member_command", metavar="ACTION", required=True)
    q = msub.add_parser(
        "add",
        parents=[client_opts, to_opt],
        help="add a member: a learner first, promoted to voter once caught up (unless --learner)",
        description="Example: cruise member add n4 --raft tcp://10.0.0.4:7101 --client "
        "tcp://10.0.0.4:7201 --publish tcp://10.0.0.4:7301. Then start n4 with join: true.",
    )
    q.add_argument("id", metavar="ID")
    q.add_argument("--raft", metavar="A", required=True)
    q.add_argument("--client", metavar="A", required=True)
    q.add_argument("--publish", metavar="A", required=True)
    q.add_argument("--learner", action="store_true", help="stay a learner (never vote)")
    q.set_defaults(func=_cmd_member_add)
    q = msub.add_parser("promote", parents=[client_opts, to_opt], help="make a caught-up learner a voter")
    q.add_argument("id", metavar="ID")
    q.set_defaults(func=_cmd_member_promote)
    q = msub.add_parser("remove", parents=[client_opts, to_opt], help="remove a member")
    q.add_argument("id", metavar="ID")
    q.set_defaults(func=_cmd_member_remove)
    q = msub.add_parser(
        "list",
        parents=[client_opts, to_opt],
        help="the membership: each member's role and whether it has caught up",
    )
    q.add_argument("--json", action="store_true", help="a JSON array, one object per member")
    q.set_defaults(func=_cmd_member_list)

    p = sub.add_parser(
        "health",
        parents=[client_opts, to_opt],
        help="exit 0 when the asked member knows a leader a quorum has heard recently, else 1",
    )
    p.set_defaults(func=_cmd_health)
    p = sub.add_parser("transfer", parents=[client_opts, to_opt], help="hand leadership to member ID")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_cmd_transfer)

    p = sub.add_parser("keys", help="CURVE keys for a secured cluster (see `security` in the README)")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = ksub.add_parser(
        "generate",
        help="write NAME.key (public) and NAME.key_secret (secret) as zmq.auth reads them; "
        "e.g. `cruise keys generate n1 --dir keys`",
    )
    q.add_argument("name", metavar="NAME")
    q.add_argument("--dir", default=".", help="where to write them (default: the working directory)")
    q.set_defaults(func=_cmd_keys_generate)

    p = sub.add_parser("kv", help="the built-in key/value store (state_machine: kv)")
    ksub = p.add_subparsers(dest="kv_command", metavar="ACTION", required=True)
    q = ksub.add_parser(
        "put", parents=[client_opts, to_opt], help="set KEY to VALUE (JSON when valid JSON, else the string)"
    )
    q.add_argument("key", metavar="KEY")
    q.add_argument("value", metavar="VALUE", help="the value; - reads it from stdin, @FILE from FILE")
    q.set_defaults(func=_cmd_kv_put)
    q = ksub.add_parser(
        "get", parents=[client_opts, to_opt], help="print KEY's value as JSON (null if absent)"
    )
    q.add_argument("key", metavar="KEY")
    q.set_defaults(func=_cmd_kv_get)
    q = ksub.add_parser("delete", parents=[client_opts, to_opt], help="delete KEY; prints existed true/false")
    q.add_argument("key", metavar="KEY")
    q.set_defaults(func=_cmd_kv_delete)
    q = ksub.add_parser(
        "cas",
        parents=[client_opts, to_opt],
        help="set KEY to VALUE only if it holds EXPECT (null: absent); prints swapped true/false",
    )
    q.add_argument("key", metavar="KEY")
    q.add_argument("expect", metavar="EXPECT")
    q.add_argument("value", metavar="VALUE")
    q.set_defaults(func=_cmd_kv_cas)
    q = ksub.add_parser("keys", parents=[client_opts, to_opt], help="list keys (sorted) starting with PREFIX")
    q.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    q.set_defaults(func=_cmd_kv_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse itself exits 2 on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except ConfigError as e:
        _err(f"error: {e}")
        return 2
    except UsageError as e:
        _err(f"error: {e}")
        return 2
    except CruiseError as e:
        _err(f"error: {e.code}: {e.message}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `cruise tail | head`): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


# -- client commands ---------------------------------------------------------------------------


def _targets(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The client addresses to use, and what member id each one is (when the config says)."""
    addrs, ids, _ = _targets_and_voters(args)
    return addrs, ids


def _targets_and_voters(
    args: argparse.Namespace,
) -> tuple[list[str], dict[str, str], dict[str, str] | None]:
    """As :func:`_targets`, plus the configured voters (client address -> id) when the addresses
    came from a config file, else None. Precedence: --to/--from, --config, $CRUISE_ENDPOINTS,
    $CRUISE_CONFIG, configs/local.yaml."""
    if args.to:
        return list(args.to), {}, None
    if not args.config:
        env = _env_endpoints()
        if env:
            return env, {}, None
    cfg = load_config(args.config or _default_config(), require_id=False)
    voters = {m.client: m.id for m in cfg.members if m.voter}
    return cfg.client_addresses(), {m.client: m.id for m in cfg.members}, voters


def _curve(args: argparse.Namespace) -> dict[str, Any]:
    """``key``/``server_key`` for a client: ``--key``, and ``--server-key`` or else the
    members' ``public_key`` entries of the config (by client and publish address)."""
    key = getattr(args, "curve_key", None)
    server_key: Any = getattr(args, "server_key", None)
    if key is None and server_key is None:
        return {}
    if key is None:
        raise UsageError("--server-key needs --key (your .key_secret)")
    if server_key is None:
        path = args.config or _default_config()
        if not os.path.exists(path):
            raise UsageError("--key needs --server-key FILE, or a config whose members list public_key")
        cfg = load_config(path, require_id=False)
        server_key = {}
        for m in cfg.members:
            if m.public_key:
                server_key[m.client] = server_key[m.publish] = m.public_key
        if not server_key:
            raise UsageError(f"{path} lists no public_key for its members: give --server-key FILE")
    for what, f in (("--key", key), ("--server-key", server_key)):
        if isinstance(f, str) and len(f) != 40 and not os.path.exists(f):
            raise UsageError(f"{what}: {f}: no such file")
    return {"key": key, "server_key": server_key}


def _client(args: argparse.Namespace) -> Client:
    addrs, _ = _targets(args)
    try:
        return Client(addrs, timeout=args.timeout or DEFAULT_TIMEOUT, **_curve(args))
    except ValueError as e:
        raise UsageError(str(e)) from None


def _with_client(args: argparse.Namespace, fn: Callable[[Client], Any]) -> int:
    with _client(args) as c:
        result = fn(c)
    _out(_dumps(result))
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    value = _read_value(args.value)

    def go(c: Client) -> dict[str, int]:
        r = c.record(value)
        return {"index": r.index, "term": r.term}

    return _with_client(args, go)


def _cmd_tail(args: argparse.Namespace) -> int:
    addrs, _ = _targets(args)
    try:
        sub = Subscriber(
            addrs,
            since=args.since,
            timeout=args.timeout or DEFAULT_TIMEOUT,
            **_curve(args),
            on_compacted=lambda start, snap: _err(
                f"note: entries {start}..{snap} are compacted into a snapshot and gone; "
                f"going on from {snap + 1}"
            ),
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        return 0
    try:
        for entry in sub:
            _out(_dumps(entry, tagged_bytes=True))
    except KeyboardInterrupt:
        return 0
    finally:
        sub.close()
    return 0


_STATUS_COLUMNS = (
    ("ID", "id"),
    ("ADDRESS", "address"),
    ("ROLE", "role"),
    ("TERM", "term"),
    ("LEADER", "leader"),
    ("COMMIT", "commit_index"),
    ("APPLIED", "applied_index"),
    ("LAST", "last_index"),
)


def _cmd_status(args: argparse.Namespace) -> int:
    addrs, ids, voters = _targets_and_voters(args)
    try:
        results = status_all(addrs, timeout=args.timeout or STATUS_TIMEOUT, **_curve(args))
    except ValueError as e:
        raise UsageError(str(e)) from None
    answered = [r for r in results if "error" not in r]
    if args.json:
        _out(_dumps(results))
    else:
        _out(_status_table(results, ids))
    if not answered:
        _err(f"error: unavailable: no member answered status within {args.timeout or STATUS_TIMEOUT:g}s")
        return 1
    problems = []
    if not any(r.get("leader") is not None for r in answered):
        problems.append(f"error: unavailable: no member knows a leader ({len(answered)} answered)")
    if voters is None:  # addresses given: the voters are those the answering members report
        voters = {}
        for r in answered:
            for m in r.get("members") or []:
                if isinstance(m, dict) and m.get("voter", True) and isinstance(m.get("client"), str):
                    voters.setdefault(m["client"], str(m.get("id", m["client"])))
    up = {r["address"] for r in answered}
    up_ids = {r.get("id") for r in answered}
    if voters:
        asked = set(addrs)
        missing = [a for a, id in voters.items() if a not in up and id not in up_ids]
        if len(voters) - len(missing) < len(voters) // 2 + 1:
            unreachable = [f"{voters[a]} ({a})" for a in missing if a in asked]
            not_asked = [f"{voters[a]} ({a})" for a in missing if a not in asked]
            which = (f"; unreachable: {', '.join(unreachable)}" if unreachable else "") + (
                f"; not asked: {', '.join(not_asked)}" if not_asked else ""
            )
            problems.append(
                f"error: unavailable: {len(voters) - len(missing)} of {len(voters)} voters answered, "
                f"not a quorum{which}"
            )
    for r in answered:
        if r.get("needs_readd"):
            # A warning, not a failure: the cluster serves without it (if a quorum holds data).
            _err(
                f"warning: {r.get('id')} lost its data and counts toward no quorum: run "
                f"`cruise member remove {r.get('id')}`, then `cruise member add {r.get('id')} ...`"
            )
        if r.get("disk_full"):
            _err(
                f"warning: {r.get('id')}'s disk is full ({r['disk_full']}): it stands still and "
                "takes no writes until space returns"
            )
    for line in problems:
        _err(line)
    return 1 if problems else 0


def _status_table(results: list[dict[str, Any]], ids: dict[str, str]) -> str:
    """A fixed-width table; an unreachable member's row says so after its id and address."""
    header = [h for h, _ in _STATUS_COLUMNS]
    rows: list[list[str]] = []
    for r in results:
        if "error" in r:
            what = (
                "unreachable"
                if r["error"] == "unreachable"
                else f"error: {r['error']}: {r.get('message', '')}"
            )
            rows.append([ids.get(r["address"], "-"), r["address"], what])
        else:
            rows.append(["-" if r.get(k) is None else str(r[k]) for _, k in _STATUS_COLUMNS])
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row[:-1] if len(row) < len(header) else row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def _cmd_member_add(args: argparse.Namespace) -> int:
    return _with_client(
        args,
        lambda c: {
            "index": c.add_member(args.id, args.raft, args.client, args.publish, learner=args.learner)
        },
    )


def _cmd_member_promote(args: argparse.Namespace) -> int:
    return _with_client(args, lambda c: {"index": c.promote_member(args.id)})


def _cmd_member_list(args: argparse.Namespace) -> int:
    addrs, _ = _targets(args)
    try:
        results = status_all(addrs, timeout=args.timeout or STATUS_TIMEOUT, **_curve(args))
    except ValueError as e:
        raise UsageError(str(e)) from None
    answered = [r for r in results if "error" not in r]
    if not answered:
        _err(f"error: unavailable: no member answered within {args.timeout or STATUS_TIMEOUT:g}s")
        return 1
    # The leader's view: the configuration in force there, and how far each member is.
    st = next((r for r in answered if r.get("role") == "leader"), answered[0])
    progress = st.get("progress") or {}
    rows = []
    for m in st.get("members") or []:
        p = progress.get(m["id"])
        caught = None if p is None else bool(p["match"] >= st["commit_index"])
        rows.append(
            {
                "id": m["id"],
                "role": "voter" if m.get("voter", True) else "learner",
                "leader": m["id"] == st.get("leader"),
                "caught_up": True if m["id"] == st.get("id") and st.get("role") == "leader" else caught,
                "match": None if p is None else p["match"],
                "needs_readd": bool(m.get("needs_readd")),
                "raft": m.get("raft"),
                "client": m.get("client"),
                "publish": m.get("publish"),
            }
        )
    if args.json:
        _out(_dumps(rows))
    else:
        cols = ("ID", "ROLE", "LEADER", "CAUGHT_UP", "MATCH", "RAFT", "CLIENT", "PUBLISH")
        cells = [
            [
                r["id"],
                r["role"],
                "*" if r["leader"] else "",
                "re-add"
                if r["needs_readd"]
                else "-"
                if r["caught_up"] is None
                else ("yes" if r["caught_up"] else "no"),
                "-" if r["match"] is None else str(r["match"]),
                r["raft"] or "",
                r["client"] or "",
                r["publish"] or "",
            ]
            for r in rows
        ]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        for row in [list(cols), *cells]:
            _out("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    if st.get("role") != "leader":
        _err("note: no asked member leads; this is the view of one follower, without progress")
    for r in rows:
        if r["needs_readd"]:
            _err(
                f"warning: {r['id']} lost its data and counts toward no quorum: run "
                f"`cruise member remove {r['id']}`, then `cruise member add {r['id']} ...`"
            )
    return 0


def _cmd_member_remove(args: argparse.Namespace) -> int:
    return _with_client(args, lambda c: {"index": c.remove_member(args.id)})


def _cmd_health(args: argparse.Namespace) -> int:
    def ask(c: Client) -> dict[str, Any]:
        reply = c.request("health")
        return {"leader": reply["leader"], "term": reply["term"]}

    return _with_client(args, ask)


def _cmd_transfer(args: argparse.Namespace) -> int:
    return _with_client(args, lambda c: {"leader": c.transfer_leader(args.id)})


# The one line every `kv` command prints (exit 1) when the cluster runs the stream machine.
KV_ON_STREAM = "the cluster runs the stream state machine; set state_machine: kv"


class _KVFailed(Exception):
    """A kv command could not be carried out (the cluster does not run kv): one line, exit 1."""


def _kv_command(args: argparse.Namespace, fn: Callable[[Client], Any]) -> int:
    """Run one kv command; a cluster that is not running kv is one line on stderr, exit 1."""
    try:
        return _with_client(args, fn)
    except _KVFailed as e:
        _err(str(e))
        return 1


def _kv_query(c: Client, q: dict[str, Any]) -> Any:
    try:
        return c.query(q)
    except CruiseError as e:
        if e.code == BAD_REQUEST and e.message.startswith(STREAM_REFUSAL):
            raise _KVFailed(KV_ON_STREAM) from None
        raise


def _kv_record(c: Client, key: str, command: dict[str, Any]) -> RecordResult:
    """Record a kv command, once the cluster has shown it runs kv: a stream cluster would
    record any value, and nothing would apply it."""
    try:
        _kv_query(c, {"get": key})
    except CruiseError as e:
        if e.code != BAD_REQUEST:
            raise
        raise _KVFailed(
            f"the cluster does not run the kv state machine ({e.message}); set state_machine: kv"
        ) from None
    r = c.record(command)
    if isinstance(r.result, dict) and "error" in r.result:
        raise _KVFailed(
            f"the state machine did not apply the command (recorded at index {r.index}): {r.result['error']}"
        )
    return r


def _cmd_kv_put(args: argparse.Namespace) -> int:
    value = _read_value(args.value)

    def go(c: Client) -> dict[str, int]:
        r = _kv_record(c, args.key, {"put": args.key, "value": value})
        return {"index": r.index, "term": r.term}

    return _kv_command(args, go)


def _cmd_kv_get(args: argparse.Namespace) -> int:
    return _kv_command(args, lambda c: _kv_query(c, {"get": args.key}))


def _cmd_kv_delete(args: argparse.Namespace) -> int:
    def go(c: Client) -> dict[str, Any]:
        r = _kv_record(c, args.key, {"delete": args.key})
        return {"index": r.index, "term": r.term, "existed": r.result}

    return _kv_command(args, go)


def _cmd_kv_cas(args: argparse.Namespace) -> int:
    expect, value = parse_value(args.expect), parse_value(args.value)

    def go(c: Client) -> dict[str, Any]:
        r = _kv_record(c, args.key, {"cas": args.key, "expect": expect, "value": value})
        return {"index": r.index, "term": r.term, "swapped": r.result}

    return _kv_command(args, go)


def _cmd_kv_keys(args: argparse.Namespace) -> int:
    return _kv_command(args, lambda c: _kv_query(c, {"keys": args.prefix}))


# -- run ---------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    # Validate first: a bad file or id is one line and exit 2, before anything binds.
    cfg = load_config(args.config, id=args.id, join=args.join)

    import zmq

    from cruise import logs
    from cruise.core.errors import CorruptLog, StorageError
    from cruise.node import Node

    logs.configure(fmt=args.log_format, level=args.log_level)
    # The member's fsync thread hands results back to the loop; with Python's default
    # switch interval (ten times this one) a busy loop would hold them back that long
    # before the thread got the GIL. This is the member's own process, so the setting
    # touches nothing else (an embedding program may choose its own).
    sys.setswitchinterval(0.0005)
    overrides: dict[str, Any] = {}
    if args.join:
        overrides["join"] = True
    try:
        node = Node.from_config(args.config, id=args.id, **overrides)
    except (BindError, zmq.ZMQError) as e:
        return _run_bind_failed(args.config, cfg, e)

    def stop(signum: int, frame: Any) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        node.open()
        # Everything loaded so far (modules, config, the recovered log's index) lives as long
        # as the process: keep it out of the collector's full passes, which otherwise scan it
        # all again every few seconds under load, each pause a latency spike for every
        # request in flight.
        gc.collect()
        gc.freeze()
        node.run()
    except (BindError, zmq.ZMQError) as e:
        node.stop()
        return _run_bind_failed(args.config, cfg, e)
    except CorruptLog as e:
        # Damage before the tail: stop with the file and offset rather than serve wrong data.
        _err(f"error: CorruptLog: {e}; refusing to start rather than serve wrong data")
        return 1
    except StorageError as e:  # e.g. another member process holds this data dir
        _err(f"error: {type(e).__name__}: {e}")
        return 1
    except ConfigError as e:
        _err(str(e))
        return 2
    except OSError as e:
        _err(f"error: cannot use the data directory: {e}")
        return 1
    return 0


def _run_bind_failed(config: str, cfg: ClusterConfig, e: Exception) -> int:
    """One line for a member that could not bind; exit 1 when it is this very member that
    already runs (it holds the data directory), else 2 (an address to change or free)."""
    assert cfg.id is not None
    holder = _lock_holder(cfg.data_dir)
    if holder is not None:
        _err(f"error: {config}: {cfg.id} is already running ({holder}); stop that process first")
        return 1
    _err(f"error: {_bind_message(config, cfg, cfg.id, e)}")
    return 2


def _bind_message(config: str, cfg: ClusterConfig, id: str, e: Exception) -> str:
    """What could not be bound, as the config key that names it, and what to do about it."""
    found = _bind_key(cfg, id, e.address) if isinstance(e, BindError) else None
    if found is None:
        text = str(e)
        return text if text.startswith("cannot bind") else f"cannot bind: {text}"
    assert isinstance(e, BindError)
    key, address = found
    if e.errno == errno.EADDRINUSE:
        return (
            f"{config}: {key}: {address} is in use (another process listens there), so {id} cannot "
            "start; free it or change the address"
        )
    return f"{config}: {key}: cannot bind {address} ({e.reason}), so {id} cannot start; change the address"


def _bind_targets(cfg: ClusterConfig, id: str) -> list[tuple[str, str]]:
    """(``members[I].KEY``, address) for each address member ``id`` binds; a ``bind``
    override is named as such."""
    targets: list[tuple[str, str]] = []
    for i, m in enumerate(cfg.members):
        if m.id != id:
            continue
        overrides = getattr(m, "bind", None) or {}
        for kind in ("raft", "client", "publish"):
            if kind in overrides:
                targets.append((f"members[{i}].bind.{kind}", overrides[kind]))
            else:
                targets.append((f"members[{i}].{kind}", getattr(m, kind)))
    return targets


def _bind_key(cfg: ClusterConfig, id: str, address: str) -> tuple[str, str] | None:
    """The (key, address) of :func:`_bind_targets` that ``address`` is, or None. Failing an
    exact match, the port decides (a wildcard bound in place of a host name)."""
    candidates = _bind_targets(cfg, id)
    for c in candidates:
        if c[1] == address:
            return c
    port = [c for c in candidates if c[1].rpartition(":")[2] == address.rpartition(":")[2]]
    return port[0] if len(port) == 1 else None


def _lock_holder(data_dir: str | os.PathLike[str]) -> str | None:
    """``"pid N"`` when a running member holds ``data_dir`` (``"pid unknown"`` when the pid
    cannot be read), else None. An open WAL flocks ``DATA_DIR/LOCK`` and writes its pid there
    (cruise/wal.py); a non-blocking shared lock tells whether someone holds it."""
    try:
        fd = os.open(os.path.join(data_dir, "LOCK"), os.O_RDONLY)
    except OSError:
        return None  # never opened by a member, or not readable: nothing to report
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            try:
                return f"pid {int(os.pread(fd, 32, 0))}"
            except (OSError, ValueError):  # written just after the flock: it may not be there yet
                return "pid unknown"
        return None
    finally:
        os.close(fd)  # drops the shared lock, if taken


# -- up ----------------------------------------------------------------------------------------


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from cruise.security import SecurityError, generate, load_public

    if not args.name or "/" in args.name or args.name.startswith("."):
        raise UsageError(f"NAME must be a plain file name, got {args.name!r}")
    try:
        public, secret = generate(args.dir, args.name)
    except SecurityError as e:
        _err(f"error: {e}")
        return 1
    _out(_dumps({"public_key": load_public(public).decode(), "public": str(public), "secret": str(secret)}))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    config = args.config or _default_config()
    path = os.path.abspath(config)
    cfg = load_config(config, require_id=False)
    # Each member must also load as itself before anything starts.
    mine = [load_config(config, id=m.id) for m in cfg.members]
    # A secured cluster: `up` holds every member's secret key, and members' keys are admitted
    # on the client sockets (they forward to the leader), so it asks for status as the first.
    curve: dict[str, Any] = {}
    if mine[0].security is not None:
        server_key = {m.client: m.public_key for m in cfg.members}
        curve = {"key": str(mine[0].security.secret_key_file), "server_key": server_key}
    # Before any child: a second `up` would otherwise report the running members' leader,
    # then see its own children fail on the locked data directories and taken addresses.
    blocked = _up_blocked(config, cfg, curve)
    if blocked:
        return blocked
    ids = {m.client: m.id for m in cfg.members}
    addrs = cfg.client_addresses()
    names = " ".join(m.id for m in cfg.members)

    # Ctrl-C and SIGTERM both mean "stop the members, then exit 0". Handlers rather than
    # KeyboardInterrupt, so SIGINT works even where it was inherited as ignored (a `&` job).
    stopping = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stopping.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    reported: set[str] = set()
    code = 0
    try:
        for m in cfg.members:
            cmd = [sys.executable, "-m", "cruise", "run", path, "--id", m.id]
            cmd += ["--log-format", args.log_format, "--log-level", args.log_level]
            # A process group of its own: Ctrl-C reaches only us, and we stop the children in order.
            children[m.id] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, process_group=0)
        _out(
            f"starting {len(children)} members: {names} (waiting up to {UP_LEADER_DEADLINE:g}s for a leader)"
        )

        leader = _wait_for_leader(addrs, ids, children, reported, stopping, curve)
        if stopping.is_set():
            return 0
        if leader is None:
            _err(f"error: unavailable: no leader within {UP_LEADER_DEADLINE:g}s; stopping the members")
            return 1
        _out(f"cluster up: {leader[0]} leads (term {leader[1]}); members {names}; Ctrl-C stops them")
        _out("  " + "  ".join(f"{i} pid {p.pid}" for i, p in children.items()))

        while not stopping.is_set():
            if _report_exits(children, reported) and not any(p.poll() is None for p in children.values()):
                _err("error: every member has exited")
                code = 1
                break
            now = _leader(status_all(addrs, timeout=UP_POLL, **curve))
            if now is not None and now != leader:
                _out(f"leader: {now[0]} (term {now[1]})")
                leader = now
            stopping.wait(UP_POLL)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_children(children, stopping)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _up_blocked(config: str, cfg: ClusterConfig, curve: dict[str, Any]) -> int:
    """0 when every member of ``cfg`` can start here. Else one line on stderr and the exit
    code: 1 when members of this cluster already run (they hold their data directories, or
    answer ``status`` at their client addresses), 2 when another process has an address."""
    running: dict[str, str] = {}
    for m in cfg.members:
        holder = _lock_holder(cfg.data_dir_for(m.id))
        if holder is not None:
            running[m.id] = holder
    taken = {
        m.id: e for m in cfg.members if m.id not in running and (e := _probe_bind(cfg, m.id)) is not None
    }
    if taken:
        # A member of this cluster run from another data directory (or machine) holds its
        # addresses too: it answers status. Anything else there is some other program.
        clients = {m.client: m.id for m in cfg.members if m.id in taken}
        for r in status_all(list(clients), timeout=STATUS_TIMEOUT, **curve):
            if "error" not in r:
                running[clients[r["address"]]] = f"answering at {r['address']}"
    if running:
        order = [m.id for m in cfg.members if m.id in running]
        found = ", ".join(f"{id} {running[id]}" for id in order)
        pids = sum(1 for id in order if running[id].startswith("pid ") and running[id] != "pid unknown")
        kill = f" or kill {'that pid' if pids == 1 else 'those pids'}" if pids else ""
        if len(order) == len(cfg.members):
            _err(
                f"error: the cluster in {config} is already running ({found}); "
                f"stop it with Ctrl-C in its terminal{kill}"
            )
        else:
            _err(
                f"error: part of the cluster in {config} is already running ({found}); "
                f"stop it with Ctrl-C in its terminal{kill}, then run `cruise up` again"
            )
        return 1
    if taken:
        id, e = next(iter(taken.items()))  # one line: the first member that cannot start
        _err(f"error: {_bind_message(config, cfg, id, e)}")
        return 2
    return 0


def _probe_bind(cfg: ClusterConfig, id: str) -> BindError | None:
    """Bind and release the addresses member ``id`` binds: the first that fails, or None."""
    import zmq

    from brokerless import router

    ctx = zmq.Context()
    try:
        for _, address in _bind_targets(cfg, id):
            try:
                router(ctx, address).close(linger=0)
            except BindError as e:
                return e
        return None
    finally:
        ctx.term()  # every listener is closed once this returns, so the member can bind it


def _leader(results: list[dict[str, Any]]) -> tuple[str, int] | None:
    """(id, term) of the member that says it leads, the highest term winning; None if none."""
    leaders = [(r.get("term", 0), r.get("id")) for r in results if r.get("role") == "leader"]
    if not leaders:
        return None
    term, id = max(leaders, key=lambda t: t[0])
    return str(id), int(term)


def _wait_for_leader(
    addrs: list[str],
    ids: dict[str, str],
    children: dict[str, subprocess.Popen[bytes]],
    reported: set[str],
    stopping: threading.Event,
    curve: dict[str, Any],
) -> tuple[str, int] | None:
    deadline = time.monotonic() + UP_LEADER_DEADLINE
    seen = -1
    while time.monotonic() < deadline and not stopping.is_set():
        _report_exits(children, reported)
        if not any(p.poll() is None for p in children.values()):
            return None
        results = status_all(addrs, timeout=UP_POLL, **curve)
        leader = _leader(results)
        if leader is not None:
            return leader
        up = [ids.get(r["address"], r["address"]) for r in results if "error" not in r]
        if len(up) != seen:
            seen = len(up)
            _out(f"  {len(up)}/{len(addrs)} members answering ({' '.join(up) or 'none yet'}); no leader yet")
        stopping.wait(0.2)
    return None


def _report_exits(children: dict[str, subprocess.Popen[bytes]], reported: set[str]) -> bool:
    """Print each child that exited (once); True if any has."""
    any_dead = False
    for id, p in children.items():
        rc = p.poll()
        if rc is None:
            continue
        any_dead = True
        if id not in reported:
            reported.add(id)
            _err(f"member {id} exited unexpectedly (exit code {rc})")
    return any_dead


def _stop_children(children: dict[str, subprocess.Popen[bytes]], stopping: threading.Event) -> None:
    """SIGTERM every child, wait up to UP_STOP_DEADLINE, SIGKILL what is left. A second Ctrl-C
    (or SIGTERM) while waiting skips the rest of the wait."""
    alive = [p for p in children.values() if p.poll() is None]
    if not alive:
        return
    _out(f"stopping {len(alive)} members")
    stopping.clear()
    for p in alive:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + UP_STOP_DEADLINE
    try:
        while time.monotonic() < deadline and not stopping.is_set():
            if all(p.poll() is not None for p in alive):
                break
            stopping.wait(0.05)
    except KeyboardInterrupt:
        pass
    for id, p in children.items():
        if p.poll() is None:
            _err(f"member {id} did not stop in time: killing it")
            p.kill()
            p.wait()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
