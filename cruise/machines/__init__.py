"""State machines a member can apply committed records to (config key ``state_machine``).

- ``stream`` (:class:`StreamMachine`): the log is the state; records apply to nothing.
- ``kv`` (:class:`KVMachine`): a map of string keys to msgpack values.
- ``package.module:Class``: a class of the user's, loaded by :func:`load_machine`.

Every machine follows :class:`cruise.fsm.StateMachine`: ``apply`` must be deterministic,
because every member applies the same values in the same order and must reach the same state.
"""

from .kv import KVMachine
from .loader import BUILTIN, MachineError, check_machine, load_machine
from .stream import StreamMachine

__all__ = ["BUILTIN", "KVMachine", "MachineError", "StreamMachine", "check_machine", "load_machine"]
