"""The socket QEMU's SPDM backend speaks (backends/spdm-socket.c), the framing DMTF's spdm-emu
uses too: QEMU connects to 127.0.0.1:PORT when the device is created and then, for each
request, sends and reads back one frame each way:

    u32 command | u32 transport type | u32 size | payload        (all big-endian)

Command NORMAL carries a message; QEMU sends SHUTDOWN as it closes and asserts that a
response's command is not 0. spdm-emu's requester also says TEST first and waits for the
echo of its SHUTDOWN. With the PCI DOE transport the payload is the whole DOE data
object (PCIe r6.0 §6.30.1): a two-dword header (vendor ID 0001h, data object type, reserved,
then the length in dwords, header included) and the SPDM message, padded to a dword.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

COMMAND_NORMAL = 0x0001
COMMAND_SHUTDOWN = 0xFFFE
COMMAND_TEST = 0xDEAD  # spdm-emu's hello: "Client Hello!" answered by "Server Hello!"
TRANSPORT_PCI_DOE = 0x02
MAX_FRAME = 0x1200  # QEMU's SPDM_SOCKET_MAX_MESSAGE_BUFFER_SIZE

DOE_VENDOR_PCI_SIG = 0x0001
DOE_TYPE_DISCOVERY = 0x00
DOE_TYPE_CMA = 0x01
DOE_TYPE_SECURED_CMA = 0x02


class FramingError(ValueError):
    """Bytes on the socket, or in a DOE object, that break the framing."""


@dataclass(frozen=True)
class Frame:
    command: int
    transport: int
    payload: bytes

    def pack(self) -> bytes:
        return struct.pack(">III", self.command, self.transport, len(self.payload)) + self.payload


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            if data:
                raise FramingError(f"the peer closed after {len(data)} of {n} bytes")
            return None
        data += chunk
    return data


def read_frame(sock: socket.socket) -> Frame | None:
    """The next frame, or None when the peer closed between frames."""
    head = _read_exactly(sock, 12)
    if head is None:
        return None
    command, transport, size = struct.unpack(">III", head)
    if size > MAX_FRAME:
        raise FramingError(f"a {size}-byte frame: larger than QEMU's {MAX_FRAME}-byte buffer")
    payload = _read_exactly(sock, size) if size else b""
    if payload is None:
        raise FramingError(f"the peer closed after a header announcing {size} bytes")
    return Frame(command, transport, payload)


@dataclass(frozen=True)
class DataObject:
    """A PCI DOE data object."""

    kind: int
    data: bytes
    vendor: int = DOE_VENDOR_PCI_SIG

    def pack(self) -> bytes:
        padded = self.data + bytes(-len(self.data) % 4)
        return struct.pack("<HBBI", self.vendor, self.kind, 0, 2 + len(padded) // 4) + padded

    @classmethod
    def unpack(cls, raw: bytes) -> DataObject:
        """Raises FramingError unless `raw` is exactly one data object. The SPDM message keeps
        any padding: its own fields say where it ends."""
        if len(raw) < 8 or len(raw) % 4:
            raise FramingError(f"a {len(raw)}-byte DOE object: not a whole number of dwords, "
                               "or shorter than its 2-dword header")
        vendor, kind, _, length = struct.unpack("<HBBI", raw[:8])
        length &= 0x3FFFF  # bits 17:0; 0 means 2^18 dwords
        if length * 4 != len(raw):
            raise FramingError(f"the DOE header says {length} dwords, the object has "
                               f"{len(raw) // 4}")
        return cls(kind, raw[8:], vendor)


DOE_PROTOCOLS = (DOE_TYPE_DISCOVERY, DOE_TYPE_CMA, DOE_TYPE_SECURED_CMA)


def discovery_response(index: int) -> bytes:
    """The DOE discovery answer for `index` (PCIe r6.0 §6.30.1.1): vendor ID, data object
    type and the next index (0 after the last), one little-endian dword."""
    index = min(index, len(DOE_PROTOCOLS) - 1)
    following = index + 1 if index + 1 < len(DOE_PROTOCOLS) else 0
    return struct.pack("<HBB", DOE_VENDOR_PCI_SIG, DOE_PROTOCOLS[index], following)
