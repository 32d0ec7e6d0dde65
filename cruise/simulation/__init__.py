"""A deterministic simulator of whole cruise members: production member code, simulated world.

``tools/simulate --seeds N`` runs N seeds; ``sim.py`` explains one run, ``network.py``
and ``world.py`` the faults, ``clients.py`` the workload and ``checks.py`` what is
asserted.
"""

from .checks import Violation
from .cli import config_for, hostile, main
from .network import NetConfig
from .sim import FAULT_KINDS, SimConfig, SimResult, Simulation, run_seed

__all__ = [
    "FAULT_KINDS",
    "NetConfig",
    "SimConfig",
    "SimResult",
    "Simulation",
    "Violation",
    "config_for",
    "hostile",
    "main",
    "run_seed",
]
