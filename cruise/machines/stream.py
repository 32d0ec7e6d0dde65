"""The ``stream`` state machine: the log is the state; records apply to nothing.

It lives in :mod:`cruise.fsm` (the member imports it from there); this module names it
beside the other machines.
"""

from ..fsm import StreamMachine

__all__ = ["StreamMachine"]
