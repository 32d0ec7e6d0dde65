"""From a ``state_machine`` setting to a state machine: ``stream``, ``kv`` or ``package.module:Class``.

A class reference imports ``package.module`` (it must be importable by the member process:
installed, or on ``PYTHONPATH``) and calls ``Class()`` with no arguments. ``Class`` may name a
nested class (``module:Outer.Inner``). The class must be a :class:`~cruise.fsm.StateMachine`
or have the same four methods (``apply``, ``query``, ``snapshot``, ``restore``).

Every failure raises :class:`MachineError` with a one-line message; the member turns it into
a config error naming ``state_machine`` and the file, before it opens anything.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..fsm import StateMachine, StreamMachine
from .kv import KVMachine

__all__ = ["BUILTIN", "MachineError", "check_machine", "load_machine"]

# The built-in machines by name.
BUILTIN: dict[str, Callable[[], StateMachine]] = {"stream": StreamMachine, "kv": KVMachine}
METHODS = ("apply", "query", "snapshot", "restore")


class MachineError(Exception):
    """A state machine could not be made; ``str()`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def load_machine(name: str) -> StateMachine:
    """A new state machine for ``name``: ``stream``, ``kv`` or ``package.module:Class``.

    Raises:
        MachineError: an unknown name, a module that does not import, no such class, a class
            that is not a state machine, or a constructor that raised.
    """
    if not isinstance(name, str):
        raise MachineError(f"must be stream, kv or package.module:Class, got {type(name).__name__}")
    builtin = BUILTIN.get(name)
    if builtin is not None:
        return builtin()
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise MachineError(f"must be stream, kv or package.module:Class, got {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise MachineError(
                f"{name}: no module named {e.name!r} (the module must be importable by the member: "
                "installed, or on PYTHONPATH)"
            ) from None
        raise MachineError(f"{name}: importing {module_name} failed: {_describe(e)}") from None
    except Exception as e:  # a SyntaxError, or the module's own code raising
        raise MachineError(f"{name}: importing {module_name} failed: {_describe(e)}") from None
    cls: Any = module
    for part in attr.split("."):
        try:
            cls = getattr(cls, part)
        except AttributeError:
            raise MachineError(f"{name}: {module_name} has no {attr}") from None
        except Exception as e:
            raise MachineError(f"{name}: reading {attr} from {module_name} failed: {_describe(e)}") from None
    if not isinstance(cls, type):
        raise MachineError(f"{name}: {attr} is not a class (it is a {type(cls).__name__})")
    missing = _missing_methods(cls)
    if missing:
        raise MachineError(
            f"{name}: {attr} is not a state machine: it lacks {', '.join(missing)} "
            "(subclass cruise.StateMachine)"
        )
    try:
        machine = cls()
    except Exception as e:
        raise MachineError(f"{name}: {attr}() failed: {_describe(e)}") from None
    return machine


def check_machine(machine: Any) -> StateMachine:
    """``machine`` itself when it has a state machine's methods.

    Raises:
        MachineError: it lacks one (a class given where an instance belongs, for instance).
    """
    if isinstance(machine, type):
        raise MachineError(f"got the class {machine.__name__}, not an instance of it")
    missing = _missing_methods(machine)
    if missing:
        raise MachineError(
            f"a {type(machine).__name__} is not a state machine: it lacks {', '.join(missing)}"
        )
    return machine


def _missing_methods(obj: Any) -> list[str]:
    return [m for m in METHODS if not callable(getattr(obj, m, None))]


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
