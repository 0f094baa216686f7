"""virtio-blk (virtio 1.2 §5.2): one request queue, a config space QEMU reads at start-up,
and a medium of `capacity` bytes the test may load (`load`) or read back (`medium`).

A request is a readable header {type u32, reserved u32, sector u64}, data (readable for a
write, writable for a read), and a writable status byte last.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import ClassVar

from cocolab.devices.backend import RING_PERSONALITIES, Backend, Personality
from cocolab.devices.virtqueue import Chain, Queue

SECTOR = 512
F_SEG_MAX = 2
F_BLK_SIZE = 6
F_FLUSH = 9
F_MQ = 12
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
BAD_STATUS = 0x7F
REQUEST_HEADER = struct.Struct("<IIQ")
CONFIG_SIZE = 64
"""Bytes of struct virtio_blk_config served (through max_secure_erase_sectors); QEMU asks
for the size its offered features imply, and gets zeros past what is set here."""
DEFAULT_CAPACITY = 16 << 20
SEG_MAX = 126
"""What QEMU's own virtio-blk offers (its queue size 128 minus 2)."""
DEVICE_ID = b"cocolab-vhost-user-blk"[:20]


class BlkBackend(Backend):
    device_type = "blk"
    num_queues = 4
    """At most: QEMU's vhost-user-blk-pci asks for one per vCPU unless told num-queues."""
    device_features = 1 << F_SEG_MAX | 1 << F_BLK_SIZE | 1 << F_FLUSH | 1 << F_MQ
    feature_table: ClassVar[dict[int, str]] = {F_SEG_MAX: "SEG_MAX", F_BLK_SIZE: "BLK_SIZE",
                                               F_FLUSH: "FLUSH", F_MQ: "MQ"}
    personalities = RING_PERSONALITIES | {
        Personality.BAD_STATUS, Personality.CAPACITY_HUGE, Personality.NUM_QUEUES_0,
        Personality.NUM_QUEUES_65535, Personality.BLK_SIZE_ODD, Personality.SEG_MAX_0}

    def __init__(self, path: Path, log_path: Path | None = None,
                 personality: Personality | str = Personality.GOOD, *,
                 image: bytes | Path | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        data = image.read_bytes() if isinstance(image, Path) else (image or b"")
        size = max(capacity, len(data))
        self._medium = bytearray(size + -size % SECTOR)
        self._medium[:len(data)] = data
        self._medium_lock = threading.Lock()
        super().__init__(path, log_path, personality)

    @property
    def capacity_sectors(self) -> int:
        return len(self._medium) // SECTOR

    def load(self, data: bytes) -> None:
        """Replace the medium's content (its size stays: QEMU read the capacity at start)."""
        if len(data) > len(self._medium):
            raise ValueError(f"{len(data)} bytes do not fit a {len(self._medium)}-byte medium")
        with self._medium_lock:
            self._medium[:] = data.ljust(len(self._medium), b"\0")

    def medium(self) -> bytes:
        with self._medium_lock:
            return bytes(self._medium)

    def config(self) -> bytes:
        p = self.personality
        capacity = 2**64 - 1 if p is Personality.CAPACITY_HUGE else self.capacity_sectors
        seg_max = 0 if p is Personality.SEG_MAX_0 else SEG_MAX
        blk_size = 1000 if p is Personality.BLK_SIZE_ODD else SECTOR
        num_queues = {Personality.NUM_QUEUES_0: 0,
                      Personality.NUM_QUEUES_65535: 65535}.get(p, self.num_queues)
        space = bytearray(CONFIG_SIZE)
        struct.pack_into("<QII", space, 0, capacity, 0, seg_max)  # capacity, size_max, seg_max
        struct.pack_into("<I", space, 20, blk_size)
        struct.pack_into("<H", space, 34, num_queues)
        return bytes(space)

    def serve(self, queue: Queue, index: int, chain: Chain) -> tuple[int, str]:
        out = queue.read_from(chain.readable)
        writable = chain.writable_bytes
        if len(out) < REQUEST_HEADER.size or writable < 1:
            return 0, f"malformed: {len(out)} readable, {writable} writable bytes"
        kind, _, sector = REQUEST_HEADER.unpack_from(out)
        data_in = writable - 1  # the status byte is the last writable byte
        status, reply, what = self._request(kind, sector, out[REQUEST_HEADER.size:], data_in)
        if self.personality is Personality.BAD_STATUS:
            status = BAD_STATUS
        written = queue.write_into(chain, reply.ljust(data_in, b"\0") + bytes([status]))
        return written, f"{what}, status {status:#x}"

    def _request(self, kind: int, sector: int, data: bytes,
                 room: int) -> tuple[int, bytes, str]:
        start = sector * SECTOR
        if kind == T_IN:
            if start + room > len(self._medium):
                return S_IOERR, b"", f"read {room} at sector {sector}: beyond the medium"
            with self._medium_lock:
                return S_OK, bytes(self._medium[start:start + room]), \
                    f"read {room} at sector {sector}"
        if kind == T_OUT:
            if start + len(data) > len(self._medium):
                return S_IOERR, b"", f"write {len(data)} at sector {sector}: beyond the medium"
            with self._medium_lock:
                self._medium[start:start + len(data)] = data
            return S_OK, b"", f"write {len(data)} at sector {sector}"
        if kind == T_FLUSH:
            return S_OK, b"", "flush"
        if kind == T_GET_ID:
            return S_OK, DEVICE_ID[:room], "get-id"
        return S_UNSUPP, b"", f"type {kind} unsupported"
