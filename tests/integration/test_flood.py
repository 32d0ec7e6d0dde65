"""One client floods a member with records as fast as it can send; another client's records
still commit. (The rates of both are a benchmark's business; this only checks the second.)"""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from cruise import Client

from .cluster import Cluster

pytestmark = pytest.mark.timeout(120)


class Flood(threading.Thread):
    """A DEALER that sends records without waiting for answers, reading answers as they come."""

    def __init__(self, addr: str) -> None:
        super().__init__(daemon=True)
        self.addr = addr
        self.stop = threading.Event()
        self.sent = self.acked = self.refused = 0

    def run(self) -> None:
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)  # unbounded on our side: push as hard as the member allows
        s.connect(self.addr)
        body = msgpack.packb({"op": "record", "value": "x" * 100}, use_bin_type=True)
        try:
            while not self.stop.is_set():
                for _ in range(500):
                    try:
                        s.send_multipart([b"", body], zmq.NOBLOCK)
                        self.sent += 1
                    except zmq.Again:
                        break
                while s.poll(0):
                    reply = msgpack.unpackb(s.recv_multipart()[-1], raw=False)
                    if reply.get("ok"):
                        self.acked += 1
                    else:
                        self.refused += 1
        finally:
            s.close()


def test_a_flooding_client_does_not_stop_another_clients_records(tmp_path):
    c = Cluster(tmp_path, n=3)
    try:
        c.start()
        lead = c.wait_leader()
        flood = Flood(c.client_addr(lead))
        flood.start()
        time.sleep(1.0)  # let the flood build up
        done = 0
        t0 = time.monotonic()
        with Client([c.client_addr(lead)], timeout=10) as polite:
            for k in range(30):
                polite.record(f"polite-{k}")
                done += 1
        elapsed = time.monotonic() - t0
        flood.stop.set()
        flood.join(10)
        print(
            f"flood: sent {flood.sent} acked {flood.acked} refused {flood.refused}; polite: {done} in {elapsed:.2f}s"
        )
        assert done == 30
        assert flood.sent > 1000  # it did flood
    finally:
        c.close()
