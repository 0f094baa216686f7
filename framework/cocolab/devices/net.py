"""virtio-net (virtio 1.2 §5.1) over vhost-user: the data path of one NIC, QEMU's virtio-net
device in front (`-netdev vhost-user`; QEMU keeps config space, the MAC and the control queue
to itself, as it does for every vhost-user NIC).

Queue 0 receives: the driver posts writable buffers, which the device holds until the test
hands it a frame (`inject`) and then fills, a virtio_net_hdr_mrg_rxbuf (12 bytes with
VERSION_1) before the frame. Queue 1 transmits: each chain is a header and a frame, kept in
`sent`. MRG_RXBUF is offered, so the driver's mergeable-buffer path (receive_mergeable) is
the one that reads num_buffers, which the net personalities lie about. Nothing else is
offered (no offloads): the driver's other receive paths stay as they are.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections import deque
from pathlib import Path
from typing import ClassVar

from cocolab.devices.backend import RING_PERSONALITIES, Backend, Personality
from cocolab.devices.virtqueue import Chain, Queue

F_MRG_RXBUF = 15
RX, TX = 0, 1
NET_HDR = struct.Struct("<BBHHHHH")
"""flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers."""


class NetBackend(Backend):
    device_type = "net"
    num_queues = 2
    device_features = 1 << F_MRG_RXBUF
    feature_table: ClassVar[dict[int, str]] = {F_MRG_RXBUF: "MRG_RXBUF"}
    personalities = RING_PERSONALITIES | {Personality.NUM_BUFFERS_0,
                                          Personality.NUM_BUFFERS_HUGE}

    def __init__(self, path: Path, log_path: Path | None = None,
                 personality: Personality | str = Personality.GOOD) -> None:
        self.sent: list[bytes] = []
        """Every frame the driver transmitted, without its virtio-net header, in order."""
        self._frames: deque[bytes] = deque()
        self._held: deque[Chain] = deque()
        self._frames_lock = threading.Lock()
        self._inject_r, self._inject_w = os.pipe()
        super().__init__(path, log_path, personality)

    def _sources(self) -> list[tuple[int, str]]:
        return [(self._inject_r, "inject")]

    def inject(self, frame: bytes) -> None:
        """Receive `frame` (Ethernet, without FCS): into the next buffer the driver posted,
        now or once it posts one."""
        with self._frames_lock:
            self._frames.append(frame)
        os.write(self._inject_w, b"x")

    def forget(self) -> None:
        super().forget()
        self.sent = []
        with self._frames_lock:
            self._frames.clear()

    def close(self) -> None:
        super().close()
        for fd in (self._inject_r, self._inject_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _dispatch(self, what: object) -> None:
        if what != "inject":
            super()._dispatch(what)
            return
        with contextlib.suppress(BlockingIOError):
            os.read(self._inject_r, 4096)
        self._deliver()

    def _deliver(self) -> None:
        """Fill held receive buffers with waiting frames (serving thread only)."""
        ring = self._rings[RX]
        queue = ring.queue
        while queue is not None and ring.enabled and not ring.broken:
            with self._frames_lock:
                if not self._frames or not self._held:
                    return
            super()._answer(queue, RX, self._held.popleft())

    def _answer(self, queue: Queue, index: int, chain: Chain) -> None:
        if index == RX:
            with self._frames_lock:
                waiting = bool(self._frames)
            if not waiting:  # a receive buffer waits for a frame
                self._held.append(chain)
                return
        super()._answer(queue, index, chain)

    def _stop(self, index: int) -> None:
        if index == RX:
            self._held.clear()  # the ring is gone: its buffers with it
        super()._stop(index)

    def serve(self, queue: Queue, index: int, chain: Chain) -> tuple[int, str]:
        if index == TX:
            data = queue.read_from(chain.readable)
            frame = data[NET_HDR.size:]
            self.sent.append(frame)
            return 0, f"sent {len(frame)} bytes{_describe(frame)}"
        with self._frames_lock:
            frame = self._frames.popleft()
        buffers = {Personality.NUM_BUFFERS_0: 0,
                   Personality.NUM_BUFFERS_HUGE: 0xFFFF}.get(self.personality, 1)
        header = NET_HDR.pack(0, 0, 0, 0, 0, 0, buffers)
        written = queue.write_into(chain, header + frame)
        what = f"received {len(frame)} bytes{_describe(frame)}, num_buffers {buffers}"
        if written < len(header) + len(frame):
            what += f" (cut to the buffer's {chain.writable_bytes} bytes)"
        return written, what


def _describe(frame: bytes) -> str:
    """' (ARP)', ' (IPv4 ICMP)': a frame's kind, for the log."""
    if len(frame) < 14:
        return ""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0806:
        return " (ARP)"
    if ethertype == 0x0800 and len(frame) >= 24:
        return {1: " (IPv4 ICMP)", 6: " (IPv4 TCP)", 17: " (IPv4 UDP)"}.get(frame[23],
                                                                           " (IPv4)")
    if ethertype == 0x86DD:
        return " (IPv6)"
    return f" (ethertype {ethertype:#06x})"
