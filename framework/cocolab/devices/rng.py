"""virtio-rng (virtio 1.2 §5.4): one request queue; the driver gives write-only buffers and
the device fills them with entropy. Here the entropy is what the test feeds it (`feed`), then
os.urandom once that runs out; `served` is every byte handed to the guest, in order."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cocolab.devices.backend import Backend, Personality
from cocolab.devices.virtqueue import Chain, Queue


class RngBackend(Backend):
    device_type = "rng"

    def __init__(self, path: Path, log_path: Path | None = None,
                 personality: Personality | str = Personality.GOOD) -> None:
        self._fed = bytearray()
        self._fed_lock = threading.Lock()
        self.served = bytearray()
        super().__init__(path, log_path, personality)

    def feed(self, data: bytes) -> None:
        """Serve `data` before any random byte, across as many requests as it takes."""
        with self._fed_lock:
            self._fed += data

    def forget(self) -> None:
        """As Backend.forget, and what an earlier test fed and the guest never took is
        dropped: each test serves only what it feeds."""
        super().forget()
        self.served = bytearray()
        with self._fed_lock:
            self._fed.clear()

    def scramble(self, queue: Queue, chain: Chain, data: bytes) -> str:
        """Entropy is any bytes: there is nothing to scramble that the driver reads as
        anything but data (and `served` stays every byte handed to the guest)."""
        return "; random data: none (entropy is data)"

    def serve(self, queue: Queue, index: int, chain: Chain) -> tuple[int, str]:
        want = chain.writable_bytes
        with self._fed_lock:
            data = bytes(self._fed[:want])
            del self._fed[:want]
        fed = len(data)
        data += os.urandom(want - len(data))
        written = queue.write_into(chain, data)
        self.served += data[:written]
        source = "fed" if fed == written else f"{fed} fed, {written - fed} random"
        return written, f"{written} bytes ({source})"
