"""The keys of the ``kv-put`` and ``kv-get`` workloads: the same for cruise and etcd.

The key space is ``--kv-keys`` keys, ``kv/000000`` ... (9 bytes for up to a million keys). Load
process ``worker`` of ``workers`` uses the keys ``worker, worker + workers, worker + 2 *
workers, ...`` in turn, wrapping at the end of the key space: its ``n``-th request (from 0) goes
to :func:`key_index`. So the preload, where each process sends :func:`preload_share` puts, writes
every key exactly once, and later puts overwrite keys that exist (the state stays the same
size) while gets always find one.
"""

from __future__ import annotations


def key(i: int) -> str:
    return f"kv/{i:06d}"


def key_index(worker: int, n: int, workers: int, nkeys: int) -> int:
    """The key of load process ``worker``'s ``n``-th request (0-based)."""
    return (worker + n * workers) % nkeys


def preload_share(worker: int, workers: int, nkeys: int) -> int:
    """How many puts load process ``worker`` sends so that the preload writes every key once."""
    return nkeys // workers + (1 if worker < nkeys % workers else 0)
