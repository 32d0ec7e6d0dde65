"""The import arrows of shared/style.md section 3: parsed with ast, any other arrow fails."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names)

# module prefix -> allowed top-level imports (besides the stdlib)
RULES = {
    "cruise.core": {"cruise.core"},
    # The sans-I/O member: the core and the pure protocol modules, nothing with sockets or files.
    "cruise.member": {
        "cruise.core",
        "cruise.member",
        "cruise.api",
        "cruise.fsm",
        "cruise.wire",
        "cruise.errors",
        "msgpack",  # a snapshot's bytes
    },
    # The simulator drives the member in a simulated world; its only outside piece is the fake clock.
    "cruise.simulation": {
        "cruise.core",
        "cruise.member",
        "cruise.simulation",
        "cruise.api",
        "cruise.fsm",
        "cruise.wire",
        "cruise.errors",
        "cruise.timing",
        "brokerless.clock",
        "msgpack",
    },
    "cruise.fsm": set(),
    # The state machines: deterministic code over msgpack values, no sockets, files or config.
    "cruise.machines": {"cruise.machines", "cruise.fsm", "cruise.errors", "msgpack"},
    "brokerless": {"brokerless", "zmq", "msgpack"},
    "cruise.wal": {"cruise.core", "msgpack"},
    "cruise.wire": {"cruise.core", "msgpack"},
    "cruise.api": {"cruise.core", "cruise.errors", "cruise.addresses", "msgpack"},
    "cruise.config": {"cruise.core", "cruise.errors", "cruise.addresses", "cruise.timing", "yaml"},
    "cruise.addresses": set(),
    "cruise.timing": set(),
    "cruise.logs": {"structlog"},
    "cruise.errors": set(),
}
# The core, the member and the state machines may not even use these stdlib modules: no I/O,
# no clock, no global randomness.
CORE_FORBIDDEN_STDLIB = {
    "os",
    "time",
    "socket",
    "threading",
    "asyncio",
    "io",
    "pathlib",
    "subprocess",
    "select",
}


def imports_of(path: Path, modname: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = modname.split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                if node.module:
                    out.add(".".join([*base, node.module]))
                else:  # `from .. import api` imports the module cruise.api
                    out.update(".".join([*base, a.name]) for a in node.names)
            else:
                out.add(node.module)
    return out


def modules():
    for pkg in ("cruise", "brokerless"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield path, ".".join(parts)


def allowed(mod: str, imp: str) -> bool:
    top = imp.split(".")[0]
    for prefix, ok in RULES.items():
        if mod == prefix or mod.startswith(prefix + "."):
            if top in STDLIB:
                return not (
                    prefix in ("cruise.core", "cruise.member", "cruise.machines")
                    and top in CORE_FORBIDDEN_STDLIB
                )
            return any(imp == a or imp.startswith(a + ".") for a in ok)
    # Modules without a rule (node, client, cli, ...) may import anything in the project or deps,
    # except that nothing outside brokerless is imported by brokerless (checked above).
    return True


def test_import_arrows():
    bad = []
    for path, mod in modules():
        for imp in imports_of(path, mod):
            if not allowed(mod, imp):
                bad.append(f"{mod} imports {imp}")
    assert not bad, "\n".join(bad)


def test_core_reads_no_clock_and_no_global_random():
    for path, mod in modules():
        if not mod.startswith("cruise.core"):
            continue
        src = path.read_text()
        for needle in ("time.", "random.random(", "random.randint(", "random.choice(", "open("):
            assert needle not in src, f"{mod} uses {needle}"
