"""A process that writes a DiskStorage until it is killed (for tests/test_wal_crash.py).

Usage: python tests/helpers/wal_writer.py DIR SEED

It opens DIR, prints ``R <first> <last>`` once recovered, then loops forever:
append a batch (usually after the last entry, sometimes a conflict that rewrites
the last few entries with a new term), sometimes set the hard state, ``sync()``,
and print ``D <last index> <term of last> <hard state term>``: everything in that
line is durable. Now and then it saves a snapshot and compacts.

Entry i of term t always holds ``value(i, t)``, so a reader can check every entry.
Conflicts never shorten the log (the new batch is at least as long as what it
replaces) and rewrite only the last ``CONFLICT_DEPTH`` entries; snapshots are taken
at least ``SNAP_LAG`` behind the last index, so a snapshot is never truncated.
"""

from __future__ import annotations

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from cruise.core.types import Entry, HardState  # noqa: E402
from cruise.wal import DiskStorage  # noqa: E402

SEGMENT_BYTES = 16 * 1024
CONFLICT_DEPTH = 5
SNAP_LAG = 10


def value(index: int, term: int) -> str:
    return f"{index}:{term}:" + "x" * (index % 37)


def snapshot_data(index: int, term: int) -> bytes:
    return f"snap:{index}:{term}".encode() * 20


def batch(first: int, n: int, term: int) -> list[Entry]:
    return [Entry(i, term, "record", value(i, term), ("w", i)) for i in range(first, first + n)]


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    # Preallocated, as members run it: recovery must tell the zero tail from a torn record.
    st = DiskStorage.open(path, segment_bytes=SEGMENT_BYTES, cache_entries=64, preallocate=True)
    term = max(st.initial_state().term, st.term(st.last_index()), 1)
    print(f"R {st.first_index()} {st.last_index()}", flush=True)
    while True:
        first, last = st.first_index(), st.last_index()
        r = rng.random()
        if r < 0.08 and last - first >= CONFLICT_DEPTH:
            start = last - rng.randrange(CONFLICT_DEPTH)
            term += 1
            st.append(batch(start, last - start + 1 + rng.randrange(4), term))
        else:
            st.append(batch(last + 1, rng.choice([1, 1, 3, 16, 64]), term))
        if rng.random() < 0.3:
            st.set_hard_state(HardState(term, rng.choice([None, "n1"]), max(0, st.last_index() - SNAP_LAG)))
        st.sync()
        last = st.last_index()
        print(f"D {last} {st.term(last)} {st.initial_state().term}", flush=True)
        if rng.random() < 0.01 and last - st.first_index() > 3 * SNAP_LAG:
            idx = max(last - SNAP_LAG - rng.randrange(SNAP_LAG), st.snapshot_index())
            t = st.term(idx)
            st.save_snapshot(idx, t, snapshot_data(idx, t), {"by": "wal_writer"})
            st.compact(idx - rng.choice([0, 0, 200]))


if __name__ == "__main__":
    main()
