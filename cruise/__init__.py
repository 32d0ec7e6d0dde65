"""cruise: a Raft cluster over ZeroMQ that any language can talk to, without a broker.

Public names (internal modules may move; these stay):

- :class:`Node`: an embedded member (``Node.from_config(path, id=...)``, ``start``, ``record``, ``on_apply``).
- :class:`Client`, :class:`Subscriber`: talk to any member over ZeroMQ.
- :class:`StateMachine`: what a member applies committed records to.
- :class:`CruiseError`: a failed request, with the contract's error ``code``.
"""

from .client import Client, RecordResult, Subscriber
from .errors import CruiseError
from .fsm import StateMachine
from .node import Node

__version__ = "0.1.0"

__all__ = ["Node", "Client", "Subscriber", "RecordResult", "StateMachine", "CruiseError", "__version__"]
