"""The vhost-user wire format, from QEMU's docs/interop/vhost-user.rst.

A message is a 12-byte header (request, flags, size: u32 each, native byte order, which is
little-endian on every host cocolab runs on) and `size` bytes of payload; file descriptors
ride along as SCM_RIGHTS. This module packs, unpacks and describes messages; it does no I/O.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from cocolab.errors import ProtocolError

HEADER = struct.Struct("<III")
VERSION = 0x1
FLAG_REPLY = 1 << 2
FLAG_NEED_REPLY = 1 << 3
MAX_PAYLOAD = 4096
"""Larger than any message QEMU sends a back-end (a memory table of 8 regions is 264 bytes);
a size beyond it is a broken stream."""
MAX_FDS = 8


class Request(enum.IntEnum):
    """Front-end requests (vhost-user.rst, "Front-end message types")."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


class ProtocolFeature(enum.IntEnum):
    """Bits of GET/SET_PROTOCOL_FEATURES (vhost-user.rst, "Protocol features")."""

    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    MTU = 4
    BACKEND_REQ = 5
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    BACKEND_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16


# Virtio feature bits shared by every device type (virtio 1.2 §6, and vhost-user.rst for 30).
F_INDIRECT_DESC = 28
F_EVENT_IDX = 29
F_PROTOCOL_FEATURES = 30  # VHOST_USER_F_PROTOCOL_FEATURES: the reserved bit vhost-user reuses
F_VERSION_1 = 32
F_ACCESS_PLATFORM = 33
F_RING_PACKED = 34  # offered always; QEMU passes it on with the device's packed=on

COMMON_FEATURE_NAMES = {F_INDIRECT_DESC: "INDIRECT_DESC", F_EVENT_IDX: "EVENT_IDX",
                        F_PROTOCOL_FEATURES: "PROTOCOL_FEATURES", F_VERSION_1: "VERSION_1",
                        F_ACCESS_PLATFORM: "ACCESS_PLATFORM", F_RING_PACKED: "RING_PACKED"}

VRING_INDEX_MASK = 0xFF
VRING_NOFD = 1 << 8
"""SET_VRING_KICK/CALL/ERR: no descriptor came with the message (poll instead)."""

U64 = struct.Struct("<Q")
VRING_STATE = struct.Struct("<II")            # index, num
VRING_ADDR = struct.Struct("<IIQQQQ")         # index, flags, desc, used, avail, log
MEMORY_HEADER = struct.Struct("<II")          # regions, padding
MEMORY_REGION = struct.Struct("<QQQQ")        # guest address, size, user address, mmap offset
CONFIG_HEADER = struct.Struct("<III")         # offset, size, flags


@dataclass(frozen=True)
class Message:
    request: int
    flags: int
    payload: bytes
    fds: tuple[int, ...] = ()

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    @property
    def name(self) -> str:
        try:
            return Request(self.request).name
        except ValueError:
            return f"REQUEST_{self.request}"

    def u64(self) -> int:
        return int(self._unpack(U64)[0])

    def vring_state(self) -> tuple[int, int]:
        index, num = self._unpack(VRING_STATE)
        return int(index), int(num)

    def vring_addr(self) -> VringAddr:
        return VringAddr(*self._unpack(VRING_ADDR))

    def memory_regions(self) -> list[MemoryRegion]:
        count, _ = self._unpack(MEMORY_HEADER)
        if count > MAX_FDS or len(self.payload) < MEMORY_HEADER.size + count * MEMORY_REGION.size:
            raise ProtocolError(f"SET_MEM_TABLE: {count} regions in {len(self.payload)} bytes")
        if len(self.fds) != count:
            raise ProtocolError(f"SET_MEM_TABLE: {count} regions but {len(self.fds)} fds")
        offsets = (MEMORY_HEADER.size + i * MEMORY_REGION.size for i in range(count))
        return [MemoryRegion(*MEMORY_REGION.unpack_from(self.payload, at)) for at in offsets]

    def config(self) -> tuple[int, int, int, bytes]:
        """GET/SET_CONFIG: offset, size, flags, and the bytes after the header."""
        offset, size, flags = self._unpack(CONFIG_HEADER)
        return int(offset), int(size), int(flags), self.payload[CONFIG_HEADER.size:]

    def _unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        if len(self.payload) < layout.size:
            raise ProtocolError(f"{self.name}: payload of {len(self.payload)} bytes, "
                                f"{layout.size} needed")
        return layout.unpack_from(self.payload)


@dataclass(frozen=True)
class VringAddr:
    index: int
    flags: int
    desc: int
    used: int
    avail: int
    log: int


@dataclass(frozen=True)
class MemoryRegion:
    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int


def unpack_header(data: bytes) -> tuple[int, int, int]:
    request, flags, size = HEADER.unpack(data)
    if flags & 0x3 != VERSION:
        raise ProtocolError(f"message version {flags & 0x3}, not {VERSION}")
    if size > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {size} bytes (at most {MAX_PAYLOAD})")
    return request, flags, size


def pack_reply(request: int, payload: bytes) -> bytes:
    return HEADER.pack(request, VERSION | FLAG_REPLY, len(payload)) + payload


def feature_names(bits: int, names: dict[int, str]) -> str:
    """`bits` as names ('VERSION_1|ACCESS_PLATFORM'), unknown bits as numbers."""
    out = [names.get(bit, str(bit)) for bit in range(64) if bits >> bit & 1]
    return "|".join(out) or "none"


def describe(msg: Message, feature_table: dict[int, str]) -> str:
    """One line for a message's log: its name and its payload, decoded."""
    try:
        return f"{msg.name} {_detail(msg, feature_table)}".rstrip()
    except ProtocolError as exc:
        return f"{msg.name} malformed: {exc}"


def _detail(msg: Message, table: dict[int, str]) -> str:
    req = msg.request
    fds = f" fds={len(msg.fds)}" if msg.fds else ""
    if req in (Request.SET_FEATURES,):
        return f"{msg.u64():#x} ({feature_names(msg.u64(), table)})"
    if req in (Request.SET_PROTOCOL_FEATURES,):
        names = {f.value: f.name for f in ProtocolFeature}
        return f"{msg.u64():#x} ({feature_names(msg.u64(), names)})"
    if req in (Request.SET_VRING_NUM, Request.SET_VRING_BASE, Request.GET_VRING_BASE,
               Request.SET_VRING_ENABLE):
        index, num = msg.vring_state()
        return f"queue={index} num={num}"
    if req == Request.SET_VRING_ADDR:
        a = msg.vring_addr()
        return (f"queue={a.index} flags={a.flags:#x} desc={a.desc:#x} avail={a.avail:#x} "
                f"used={a.used:#x}")
    if req in (Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR):
        value = msg.u64()
        return f"queue={value & VRING_INDEX_MASK}" + (" nofd" if value & VRING_NOFD else fds)
    if req == Request.SET_MEM_TABLE:
        return " ".join(f"[gpa={r.guest_addr:#x} size={r.size:#x} uva={r.user_addr:#x} "
                        f"off={r.mmap_offset:#x}]" for r in msg.memory_regions())
    if req in (Request.GET_CONFIG, Request.SET_CONFIG):
        offset, size, flags, _ = msg.config()
        return f"offset={offset} size={size} flags={flags}"
    if req == Request.SET_STATUS:
        return f"{msg.u64():#x}"
    return fds.strip()
