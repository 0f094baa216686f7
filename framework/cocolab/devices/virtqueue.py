"""Guest memory as the front-end shares it, and the split virtqueue a device serves from it.

Layouts are those of the virtio 1.2 specification, §2.7 (split virtqueues), little-endian as
a VIRTIO_F_VERSION_1 device uses them:

    descriptor table  num x {addr u64, len u32, flags u16, next u16}
    available ring    flags u16, idx u16, ring[num] u16, used_event u16
    used ring         flags u16, idx u16, ring[num] {id u32, len u32}, avail_event u16

The device reads the available ring and descriptors and writes the used ring; `put_used`
writes whatever it is given, which is how a hostile personality hands the driver an id or a
length no genuine device would.

What the other side (the front end, the guest's driver behind it) publishes is checked
before it is used, as virtio 1.2 §2.7 and QEMU's libvhost-user check it: an available index
may run ahead of the device by at most the queue size (`RingBroken` otherwise: the ring is
not served until it is set up again), a head or next index must be inside the queue, a chain
may not loop, and every buffer must lie in the guest memory the front end shared, so no
length the guest chose sizes anything on the host beyond that memory (a ProtocolError ends
that request).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cocolab.devices.protocol import MemoryRegion
from cocolab.errors import ProtocolError

DESC = struct.Struct("<QIHH")
USED_ELEM = struct.Struct("<II")
U16 = struct.Struct("<H")

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4


class GuestMemory:
    """The regions of a SET_MEM_TABLE, each mapped shared from its fd."""

    def __init__(self, regions: Iterable[MemoryRegion], fds: Iterable[int]) -> None:
        self._maps: list[tuple[MemoryRegion, mmap.mmap]] = []
        for region, fd in zip(regions, fds, strict=True):
            try:
                mapped = mmap.mmap(fd, region.size + region.mmap_offset, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fd)
            self._maps.append((region, mapped))

    @classmethod
    def from_buffers(cls, regions: Iterable[tuple[MemoryRegion, mmap.mmap]]) -> GuestMemory:
        """Memory over maps already made (the unit tests' anonymous maps)."""
        memory = cls((), ())
        memory._maps = list(regions)
        return memory

    def close(self) -> None:
        for _, mapped in self._maps:
            mapped.close()
        self._maps = []

    def gpa_from_uva(self, uva: int) -> int:
        """A front-end (QEMU) virtual address, as the ring addresses are given, in guest
        physical terms."""
        for region, _ in self._maps:
            if region.user_addr <= uva < region.user_addr + region.size:
                return region.guest_addr + (uva - region.user_addr)
        raise ProtocolError(f"front-end address {uva:#x} is in no memory region")

    def _locate(self, gpa: int, length: int) -> tuple[mmap.mmap, int]:
        for region, mapped in self._maps:
            if region.guest_addr <= gpa and gpa + length <= region.guest_addr + region.size:
                return mapped, region.mmap_offset + (gpa - region.guest_addr)
        raise ProtocolError(f"guest address {gpa:#x}+{length:#x} is in no memory region")

    @property
    def size(self) -> int:
        """Bytes of guest memory shared: the most a buffer, or a chain, can span."""
        return sum(region.size for region, _ in self._maps)

    def contains(self, gpa: int, length: int) -> bool:
        return any(region.guest_addr <= gpa and gpa + length <= region.guest_addr + region.size
                   for region, _ in self._maps)

    def read(self, gpa: int, length: int) -> bytes:
        mapped, offset = self._locate(gpa, length)
        return mapped[offset:offset + length]

    def write(self, gpa: int, data: bytes) -> None:
        mapped, offset = self._locate(gpa, len(data))
        mapped[offset:offset + len(data)] = data


@dataclass(frozen=True)
class Descriptor:
    addr: int
    length: int
    writable: bool


@dataclass(frozen=True)
class Chain:
    """One buffer the driver made available: its head's index and its descriptors."""

    head: int
    descriptors: tuple[Descriptor, ...]

    @property
    def readable(self) -> tuple[Descriptor, ...]:
        return tuple(d for d in self.descriptors if not d.writable)

    @property
    def writable(self) -> tuple[Descriptor, ...]:
        return tuple(d for d in self.descriptors if d.writable)

    @property
    def writable_bytes(self) -> int:
        return sum(d.length for d in self.writable)


class RingBroken(ProtocolError):
    """The ring itself cannot be read or makes no sense (its available index ran further ahead
    than the queue holds): no request of it can be trusted, so the ring is not served until
    the front end sets it up again."""


class Queue:
    """What a device does with a chain either layout gives it: fill its writable
    descriptors, read its readable ones."""

    memory: GuestMemory
    num: int

    def pop(self) -> Chain | None:
        raise NotImplementedError

    def put_used(self, ident: int, length: int) -> None:
        raise NotImplementedError

    def write_into(self, chain: Chain, data: bytes) -> int:
        """Fill the chain's writable descriptors with `data`, in order; bytes written."""
        done = 0
        for d in chain.writable:
            if done >= len(data):
                break
            part = data[done:done + d.length]
            self.memory.write(d.addr, part)
            done += len(part)
        return done

    def read_from(self, descriptors: Iterable[Descriptor]) -> bytes:
        return b"".join(self.memory.read(d.addr, d.length) for d in descriptors)


class SplitQueue(Queue):
    """One split virtqueue: `num` entries at guest addresses `desc`, `avail` and `used`."""

    def __init__(self, memory: GuestMemory, num: int, desc: int, avail: int, used: int,
                 last_avail: int = 0) -> None:
        if num == 0 or num & (num - 1) or num > 32768:
            raise ProtocolError(f"queue size {num} is not a power of 2 up to 32768")
        self.memory, self.num = memory, num
        self.desc, self.avail, self.used = desc, avail, used
        self.last_avail = last_avail
        """The next available-ring entry this device will take (free-running, 16 bits)."""
        self.used_idx = last_avail
        """The next used-ring entry this device will fill (free-running, 16 bits)."""

    def avail_idx(self) -> int:
        try:
            return int(U16.unpack(self.memory.read(self.avail + 2, 2))[0])
        except ProtocolError as exc:
            raise RingBroken(f"the available ring cannot be read: {exc}") from None

    def pop(self) -> Chain | None:
        """The next chain the driver made available, or None when there is none. A chain
        that breaks a rule is consumed and raises ProtocolError (that request ends); a ring
        that does, RingBroken."""
        ahead = (self.avail_idx() - self.last_avail) & 0xFFFF
        if ahead == 0:
            return None
        if ahead > self.num:
            raise RingBroken(f"the available index ran {ahead} entries ahead of the device, "
                             f"more than the queue's {self.num}")
        slot = self.avail + 4 + 2 * (self.last_avail % self.num)
        try:
            head = int(U16.unpack(self.memory.read(slot, 2))[0])
        except ProtocolError as exc:
            raise RingBroken(f"the available ring cannot be read: {exc}") from None
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return Chain(head, tuple(self._walk(head)))

    def _walk(self, head: int) -> Iterable[Descriptor]:
        index, seen, total = head, 0, 0
        while True:
            if index >= self.num:
                raise ProtocolError(f"descriptor {index} is beyond the queue ({self.num})")
            addr, length, flags, nxt = DESC.unpack(
                self.memory.read(self.desc + DESC.size * index, DESC.size))
            if flags & DESC_F_INDIRECT:
                raise ProtocolError("an indirect descriptor, but INDIRECT_DESC was not offered")
            if not self.memory.contains(addr, length):
                raise ProtocolError(f"descriptor {index}: buffer {addr:#x}+{length:#x} is "
                                    "outside guest memory")
            total += length
            if total > self.memory.size:
                raise ProtocolError(f"the chain from {head} spans {total:#x} bytes, more than "
                                    f"the guest's memory ({self.memory.size:#x})")
            yield Descriptor(addr, length, bool(flags & DESC_F_WRITE))
            seen += 1
            if not flags & DESC_F_NEXT:
                return
            if seen >= self.num:
                raise ProtocolError(f"descriptor chain from {head} loops")
            index = nxt

    def put_used(self, ident: int, length: int) -> None:
        """Append {id, len} to the used ring and publish it (the idx after the entry)."""
        slot = self.used + 4 + USED_ELEM.size * (self.used_idx % self.num)
        self.memory.write(slot, USED_ELEM.pack(ident & 0xFFFFFFFF, length & 0xFFFFFFFF))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.memory.write(self.used + 2, U16.pack(self.used_idx))


PACKED_DESC = struct.Struct("<QIHH")
"""addr u64, len u32, id u16, flags u16 (virtio 1.2 §2.8.13)."""
F_AVAIL, F_USED = 1 << 7, 1 << 15


class PackedQueue(Queue):
    """One packed virtqueue (virtio 1.2 §2.8): one ring of `num` descriptors at `desc` that
    the driver marks available and the device marks used, each side with a wrap counter
    (the driver and device event suppression areas are not read: the device always
    notifies, which a driver must tolerate).

    A descriptor is available when its AVAIL flag equals the device's avail wrap counter and
    its USED flag does not; a chain is consecutive descriptors linked by NEXT, its buffer id
    in the last one. The device writes one used descriptor (id, len, both flags equal to its
    used wrap counter) per buffer, where its next used slot is, and moves on by as many
    slots as the buffer's chain took. What the driver publishes is checked as for a split
    ring: a chain may not run longer than the ring, every buffer must lie in guest memory,
    INDIRECT is refused (not offered)."""

    def __init__(self, memory: GuestMemory, num: int, desc: int, state: int = 0) -> None:
        if num == 0 or num > 32768:
            raise ProtocolError(f"packed queue size {num} is not between 1 and 32768")
        self.memory, self.num, self.desc = memory, num, desc
        # vhost-user's ring base for a packed ring: avail index and wrap counter in the low
        # 16 bits (the counter in bit 15), the used ones in the high 16 (QEMU's
        # virtio_queue_packed_get_last_avail_idx); a fresh ring starts both counters at 1
        if state == 0:
            state = 1 << 15 | 1 << 31
        self.next_avail, self.avail_wrap = state & 0x7FFF, bool(state >> 15 & 1)
        self.next_used, self.used_wrap = state >> 16 & 0x7FFF, bool(state >> 31 & 1)
        self._pending: list[int] = []
        """Slots each popped chain took, in the order popped: how far a used entry moves."""

    @property
    def last_avail(self) -> int:
        """The state GET_VRING_BASE reports, as SET_VRING_BASE gave it."""
        return (self.next_avail | self.avail_wrap << 15
                | (self.next_used | self.used_wrap << 15) << 16)

    @property
    def used_idx(self) -> int:
        return self.next_used

    def _read_desc(self, index: int) -> tuple[int, int, int, int]:
        return PACKED_DESC.unpack(self.memory.read(self.desc + PACKED_DESC.size * index,
                                                   PACKED_DESC.size))

    def pop(self) -> Chain | None:
        """The next buffer the driver made available, or None. A chain that breaks a rule is
        consumed (its slots skipped) and raises ProtocolError; a ring that cannot be read,
        RingBroken."""
        try:
            first = self._read_desc(self.next_avail)
        except ProtocolError as exc:
            raise RingBroken(f"the descriptor ring cannot be read: {exc}") from None
        flags = first[3]
        if bool(flags & F_AVAIL) != self.avail_wrap or bool(flags & F_USED) == self.avail_wrap:
            return None
        descriptors: list[Descriptor] = []
        index, ident, problem = self.next_avail, 0, ""
        while True:
            addr, length, ident, flags = self._read_desc(index)
            index = (index + 1) % self.num
            if flags & DESC_F_INDIRECT:
                problem = "an indirect descriptor, but INDIRECT_DESC was not offered"
            elif not self.memory.contains(addr, length):
                problem = f"buffer {addr:#x}+{length:#x} is outside guest memory"
            descriptors.append(Descriptor(addr, length, bool(flags & DESC_F_WRITE)))
            if not flags & DESC_F_NEXT:
                break
            if len(descriptors) >= self.num:
                problem = problem or f"a descriptor chain runs past the ring's {self.num} entries"
                break
        count = len(descriptors)
        start = self.next_avail
        self.next_avail += count
        if self.next_avail >= self.num:
            self.next_avail -= self.num
            self.avail_wrap = not self.avail_wrap
        self._pending.append(count)
        if problem:
            raise ProtocolError(f"packed chain at {start}: {problem}")
        if sum(d.length for d in descriptors) > self.memory.size:
            raise ProtocolError(f"packed chain at {start} spans more than the guest's memory")
        return Chain(ident, tuple(descriptors))

    def put_used(self, ident: int, length: int) -> None:
        """Write a used descriptor {id, len} at the next used slot, flags last, and move on
        by the slots its buffer's chain took (one, for a used entry no chain accounts for:
        what a hostile personality publishes twice)."""
        slot = self.desc + PACKED_DESC.size * self.next_used
        flags = (F_AVAIL | F_USED) if self.used_wrap else 0
        self.memory.write(slot + 8, struct.pack("<IH", length & 0xFFFFFFFF, ident & 0xFFFF))
        self.memory.write(slot + 14, U16.pack(flags))
        step = self._pending.pop(0) if self._pending else 1
        self.next_used += step
        if self.next_used >= self.num:
            self.next_used -= self.num
            self.used_wrap = not self.used_wrap
