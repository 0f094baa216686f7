"""cocolab.devices without QEMU: the vhost-user messages and the split virtqueue against byte
layouts written here from docs/interop/vhost-user.rst and the virtio 1.2 specification
(§2.7), and the back-ends driven end to end by a front-end played by the test: a memfd for
guest memory, eventfds for kick and call, a ring laid out by hand."""

from __future__ import annotations

import mmap
import os
import re
import select
import socket
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocolab.devices import BlkBackend, Personality, RngBackend
from cocolab.devices.backend import Backend
from cocolab.devices.campaign import Campaign, Drawn, Mutation, used_element
from cocolab.devices.protocol import (
    F_PROTOCOL_FEATURES,
    F_RING_PACKED,
    F_VERSION_1,
    FLAG_NEED_REPLY,
    MemoryRegion,
    Message,
    ProtocolFeature,
    Request,
    describe,
    unpack_header,
)
from cocolab.devices.virtqueue import GuestMemory, PackedQueue, RingBroken, SplitQueue
from cocolab.errors import ProtocolError

# --- byte layouts, written from the specifications ----------------------------------------

NUM = 8
DESC, AVAIL, USED = 0x0, 0x100, 0x1000  # guest physical addresses of the ring's parts
GPA_BASE, UVA_BASE, SIZE = 0x0, 0x7F0000000000, 1 << 20
BUFFERS = 0x10000


def header(request: int, size: int, flags: int = 0x1) -> bytes:
    return struct.pack("<III", request, flags, size)  # request, flags (version 1), size


def test_a_header_is_three_native_u32() -> None:
    assert unpack_header(bytes.fromhex("05000000" "01000000" "28000000")) == (5, 1, 40)


@pytest.mark.parametrize("raw, error", [
    (header(1, 0, flags=0x2), "message version 2, not 1"),
    (header(5, 4097), "payload of 4097 bytes (at most 4096)"),
], ids=["version", "size"])
def test_a_broken_header_is_a_protocol_error(raw: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(error)):
        unpack_header(raw)


def test_a_vring_address_is_index_flags_then_four_u64() -> None:
    payload = struct.pack("<IIQQQQ", 1, 0, 0xA000, 0xC000, 0xB000, 0)  # desc, used, avail, log
    addr = Message(Request.SET_VRING_ADDR, 1, payload).vring_addr()
    assert (addr.index, addr.desc, addr.used, addr.avail) == (1, 0xA000, 0xC000, 0xB000)


def test_a_memory_table_wants_one_fd_per_region() -> None:
    payload = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, SIZE, UVA_BASE, 0)
    assert Message(Request.SET_MEM_TABLE, 1, payload, (7,)).memory_regions() == [
        MemoryRegion(0, SIZE, UVA_BASE, 0)]
    with pytest.raises(ProtocolError, match="1 regions but 0 fds"):
        Message(Request.SET_MEM_TABLE, 1, payload).memory_regions()
    with pytest.raises(ProtocolError, match="9 regions"):
        Message(Request.SET_MEM_TABLE, 1, struct.pack("<II", 9, 0)).memory_regions()


def test_describe_is_one_decoded_line() -> None:
    features = Message(Request.SET_FEATURES, 1, struct.pack("<Q", 1 << 32 | 1 << 30))
    assert describe(features, {32: "VERSION_1", 30: "PROTOCOL_FEATURES"}) == \
        "SET_FEATURES 0x140000000 (PROTOCOL_FEATURES|VERSION_1)"
    kick = Message(Request.SET_VRING_KICK, 1, struct.pack("<Q", 1 | 1 << 8))
    assert describe(kick, {}) == "SET_VRING_KICK queue=1 nofd"
    assert describe(Message(Request.SET_VRING_NUM, 1, b"\0"), {}) == \
        "SET_VRING_NUM malformed: SET_VRING_NUM: payload of 1 bytes, 8 needed"
    assert describe(Message(99, 1, b""), {}) == "REQUEST_99"


# --- the split virtqueue ---------------------------------------------------------------------

def anonymous_memory() -> tuple[GuestMemory, mmap.mmap]:
    mapped = mmap.mmap(-1, SIZE)
    return GuestMemory.from_buffers([(MemoryRegion(GPA_BASE, SIZE, UVA_BASE, 0), mapped)]), mapped


def put_desc(mem: mmap.mmap, index: int, addr: int, length: int, flags: int, nxt: int = 0) -> None:
    struct.pack_into("<QIHH", mem, DESC + 16 * index, addr, length, flags, nxt)


def make_available(mem: mmap.mmap, *heads: int) -> None:
    """The driver's side: ring[idx % num] = head, then idx += 1 (virtio 1.2 §2.7.13)."""
    idx = struct.unpack_from("<H", mem, AVAIL + 2)[0]
    for head in heads:
        struct.pack_into("<H", mem, AVAIL + 4 + 2 * (idx % NUM), head)
        idx = (idx + 1) & 0xFFFF
    struct.pack_into("<H", mem, AVAIL + 2, idx)


def used(mem: mmap.mmap) -> tuple[int, list[tuple[int, int]]]:
    """The used ring: its idx, and its elements {id, len} up to idx."""
    idx = struct.unpack_from("<H", mem, USED + 2)[0]
    return idx, [struct.unpack_from("<II", mem, USED + 4 + 8 * (i % NUM)) for i in range(idx)]


def test_a_chain_is_walked_through_next_with_its_directions() -> None:
    memory, mem = anonymous_memory()
    put_desc(mem, 3, BUFFERS, 16, flags=1, nxt=5)          # readable, NEXT
    put_desc(mem, 5, BUFFERS + 16, 512, flags=1 | 2, nxt=6)  # writable, NEXT
    put_desc(mem, 6, BUFFERS + 528, 1, flags=2)              # writable, last
    make_available(mem, 3)
    queue = SplitQueue(memory, NUM, DESC, AVAIL, USED)
    chain = queue.pop()
    assert chain is not None and chain.head == 3
    assert [(d.addr, d.length, d.writable) for d in chain.descriptors] == [
        (BUFFERS, 16, False), (BUFFERS + 16, 512, True), (BUFFERS + 528, 1, True)]
    assert chain.writable_bytes == 513 and queue.pop() is None


def test_put_used_writes_the_element_then_publishes_idx() -> None:
    memory, mem = anonymous_memory()
    queue = SplitQueue(memory, NUM, DESC, AVAIL, USED)
    queue.put_used(2, 64)
    queue.put_used(NUM, 9999)  # anything a hostile device likes
    assert used(mem) == (2, [(2, 64), (NUM, 9999)])


@pytest.mark.parametrize("flags, nxt, error", [
    (4, 0, "an indirect descriptor"),
    (1, 0, "descriptor chain from 0 loops"),
    (1, 9, "descriptor 9 is beyond the queue"),
])
def test_a_malformed_chain_is_a_protocol_error(flags: int, nxt: int, error: str) -> None:
    memory, mem = anonymous_memory()
    put_desc(mem, 0, BUFFERS, 8, flags=flags, nxt=nxt)
    make_available(mem, 0)
    with pytest.raises(ProtocolError, match=error):
        SplitQueue(memory, NUM, DESC, AVAIL, USED).pop()


def test_addresses_outside_guest_memory_are_refused() -> None:
    memory, _ = anonymous_memory()
    with pytest.raises(ProtocolError, match="guest address 0xfffff000"):
        memory.read(0xFFFFF000, 0x2000)
    with pytest.raises(ProtocolError, match="front-end address 0x10 is in no memory region"):
        memory.gpa_from_uva(0x10)
    with pytest.raises(ProtocolError, match="queue size 3"):
        SplitQueue(memory, 3, DESC, AVAIL, USED)


# --- a back-end, driven by a front-end the test plays ----------------------------------------

class FrontEnd:
    """What QEMU does to a vhost-user back-end, by hand: one memfd of guest memory, one ring
    (queue 0) at DESC/AVAIL/USED, an eventfd each for kick and call."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(5)
        fd = os.memfd_create("guest")
        os.ftruncate(fd, SIZE)
        self.mem = mmap.mmap(fd, SIZE)
        self.memfd = fd
        self.kick = os.eventfd(0, os.EFD_NONBLOCK)
        self.call = os.eventfd(0, os.EFD_NONBLOCK)

    def send(self, request: Request, payload: bytes = b"", fds: tuple[int, ...] = (),
             flags: int = 0x1) -> None:
        socket.send_fds(self.sock, [header(request, len(payload), flags) + payload], list(fds))

    def ask(self, request: Request, payload: bytes = b"") -> bytes:
        self.send(request, payload)
        _, _, size = struct.unpack("<III", self.recv(12))
        return self.recv(size)

    def recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            data += self.sock.recv(size - len(data))
        return data

    def start(self, protocol: int = 0) -> None:
        """QEMU's order (vhost_dev_start): features, memory table, ring 0, kick, enable."""
        offered = struct.unpack("<Q", self.ask(Request.GET_FEATURES))[0]
        assert offered >> F_PROTOCOL_FEATURES & 1
        self.send(Request.SET_PROTOCOL_FEATURES, struct.pack("<Q", protocol))
        self.send(Request.SET_FEATURES, struct.pack("<Q", 1 << F_VERSION_1
                                                    | 1 << F_PROTOCOL_FEATURES))
        self.send(Request.SET_MEM_TABLE, struct.pack("<II", 1, 0)
                  + struct.pack("<QQQQ", GPA_BASE, SIZE, UVA_BASE, 0), (self.memfd,))
        self.send(Request.SET_VRING_NUM, struct.pack("<II", 0, NUM))
        self.send(Request.SET_VRING_BASE, struct.pack("<II", 0, 0))
        self.send(Request.SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, UVA_BASE + DESC,
                                                      UVA_BASE + USED, UVA_BASE + AVAIL, 0))
        self.send(Request.SET_VRING_CALL, struct.pack("<Q", 0), (self.call,))
        self.send(Request.SET_VRING_KICK, struct.pack("<Q", 0), (self.kick,))
        self.send(Request.SET_VRING_ENABLE, struct.pack("<II", 0, 1))

    def submit(self, *heads: int) -> None:
        make_available(self.mem, *heads)
        os.eventfd_write(self.kick, 1)

    def wait_call(self) -> None:
        ready, _, _ = select.select([self.call], [], [], 5)
        assert ready, "the back-end never signalled the call eventfd"
        os.eventfd_read(self.call)

    def close(self) -> None:
        self.sock.close()
        self.mem.close()
        for fd in (self.memfd, self.kick, self.call):
            os.close(fd)


@pytest.fixture
def rng(tmp_path: Path) -> Iterator[tuple[RngBackend, FrontEnd]]:
    backend = RngBackend(tmp_path / "rng.sock", tmp_path / "rng.log")
    front = FrontEnd(tmp_path / "rng.sock")
    yield backend, front
    front.close()
    backend.close()


def request_64(front: FrontEnd, head: int = 0) -> None:
    put_desc(front.mem, head, BUFFERS + 64 * head, 64, flags=2)  # one writable buffer


def test_the_rng_fills_the_buffer_with_what_it_was_fed(rng: tuple[RngBackend, FrontEnd]) -> None:
    backend, front = rng
    backend.feed(b"cocolab!" * 8)
    front.start()
    request_64(front)
    front.submit(0)
    front.wait_call()
    assert used(front.mem) == (1, [(0, 64)])
    assert front.mem[BUFFERS:BUFFERS + 64] == b"cocolab!" * 8
    # the kick may be read after the request was served (SET_VRING_ENABLE processes the
    # ring too, and it may arrive after the driver's avail write)
    assert backend.started and backend.wait(lambda: backend.kicks == 1, 5)
    assert backend.acked(F_VERSION_1) and backend.messages()[:3] == [
        "GET_FEATURES", "SET_PROTOCOL_FEATURES", "SET_FEATURES"]
    assert (backend.log_path is not None
            and "64 bytes (fed) -> used id=0 len=64" in backend.log_path.read_text())


@pytest.mark.parametrize("personality, expected", [
    (Personality.USED_LEN_TOO_LARGE, (1, [(0, 64 + 4096)])),
    (Personality.USED_LEN_ZERO, (1, [(0, 0)])),
    (Personality.USED_LEN_PLUS_ONE, (1, [(0, 65)])),
    (Personality.USED_LEN_MAX, (1, [(0, 0xFFFFFFFF)])),
    (Personality.USED_ID_OUT_OF_RANGE, (1, [(NUM, 64)])),
    (Personality.USED_ID_TWICE, (2, [(0, 64), (0, 64)])),
    (Personality.NEVER_COMPLETE, (0, [])),
])
def test_a_personality_changes_only_what_is_published(
        rng: tuple[RngBackend, FrontEnd], personality: Personality,
        expected: tuple[int, list[tuple[int, int]]]) -> None:
    backend, front = rng
    backend.personality = personality
    front.start()
    request_64(front)
    front.submit(0)
    if personality is Personality.NEVER_COMPLETE:
        assert backend.wait(lambda: bool(backend.requests), 5)
    else:
        front.wait_call()
    assert used(front.mem) == expected
    assert backend.requests[0].used == expected[1]


def test_reply_ack_answers_a_need_reply_with_zero(rng: tuple[RngBackend, FrontEnd]) -> None:
    _, front = rng
    front.send(Request.SET_PROTOCOL_FEATURES, struct.pack("<Q", 1 << ProtocolFeature.REPLY_ACK))
    front.send(Request.SET_OWNER, flags=0x1 | FLAG_NEED_REPLY)
    request, flags, size = struct.unpack("<III", front.recv(12))
    assert (request, flags & 0x4, size) == (Request.SET_OWNER, 0x4, 8)
    assert front.recv(8) == struct.pack("<Q", 0)


def test_a_personality_a_device_lacks_is_refused(rng: tuple[RngBackend, FrontEnd]) -> None:
    backend, _ = rng
    with pytest.raises(ValueError, match="a rng device has no personality 'bad-status'"):
        backend.personality = "bad-status"
    with pytest.raises(ValueError, match="no personality 'evil'; choose one of good, "):
        backend.personality = "evil"


def test_a_broken_stream_drops_the_connection_not_the_back_end(
        rng: tuple[RngBackend, FrontEnd], tmp_path: Path) -> None:
    backend, front = rng
    front.sock.sendall(header(1, 0, flags=0x3))  # version 3
    assert backend.wait(lambda: bool(backend.errors), 5)
    assert backend.errors == ["message version 3, not 1"]
    again = FrontEnd(tmp_path / "rng.sock")  # QEMU may reconnect: a new session
    try:
        assert struct.unpack("<Q", again.ask(Request.GET_FEATURES))[0] == backend.offered_features
    finally:
        again.close()


def test_close_leaves_no_thread_socket_or_descriptor(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    backend: Backend = RngBackend(tmp_path / "x.sock")
    front = FrontEnd(tmp_path / "x.sock")
    front.start()
    front.close()
    backend.close()
    backend.close()  # twice is fine
    assert not (tmp_path / "x.sock").exists()
    assert not backend._thread.is_alive()
    assert set(os.listdir("/proc/self/fd")) <= before


# --- virtio-blk --------------------------------------------------------------------------------

def config_space(front: FrontEnd, size: int = 60) -> bytes:
    reply = front.ask(Request.GET_CONFIG, struct.pack("<III", 0, size, 0) + bytes(size))
    offset, got, _ = struct.unpack_from("<III", reply)
    assert (offset, got, len(reply)) == (0, size, 12 + size)
    return reply[12:]


@pytest.mark.parametrize("personality, field, offset, fmt, value", [
    (Personality.GOOD, "capacity", 0, "<Q", (16 << 20) // 512),
    (Personality.CAPACITY_HUGE, "capacity", 0, "<Q", 2**64 - 1),
    (Personality.SEG_MAX_0, "seg_max", 12, "<I", 0),
    (Personality.BLK_SIZE_ODD, "blk_size", 20, "<I", 1000),
    (Personality.NUM_QUEUES_0, "num_queues", 34, "<H", 0),
    (Personality.NUM_QUEUES_65535, "num_queues", 34, "<H", 65535),
])
def test_blk_config_space_is_laid_out_as_virtio_1_2_says(
        tmp_path: Path, personality: Personality, field: str, offset: int, fmt: str,
        value: int) -> None:
    """struct virtio_blk_config (virtio 1.2 §5.2.4): capacity le64 @0, size_max @8, seg_max
    @12, geometry @16, blk_size @20, topology @24, writeback @32, num_queues le16 @34."""
    backend = BlkBackend(tmp_path / "blk.sock", personality=personality)
    front = FrontEnd(tmp_path / "blk.sock")
    try:
        assert struct.unpack_from(fmt, config_space(front), offset)[0] == value, field
    finally:
        front.close()
        backend.close()


@pytest.mark.parametrize("personality, status", [(Personality.GOOD, 0),
                                                 (Personality.BAD_STATUS, 0x7F)])
def test_a_blk_read_returns_the_medium_and_a_status(tmp_path: Path, personality: Personality,
                                                    status: int) -> None:
    backend = BlkBackend(tmp_path / "blk.sock", image=b"\0" * 512 + b"sector one" * 10,
                         personality=personality)
    front = FrontEnd(tmp_path / "blk.sock")
    try:
        front.start()
        struct.pack_into("<IIQ", front.mem, BUFFERS, 0, 0, 1)  # IN, reserved, sector 1
        put_desc(front.mem, 0, BUFFERS, 16, flags=1, nxt=1)
        put_desc(front.mem, 1, BUFFERS + 16, 512, flags=1 | 2, nxt=2)
        put_desc(front.mem, 2, BUFFERS + 528, 1, flags=2)
        front.submit(0)
        front.wait_call()
        assert used(front.mem) == (1, [(0, 513)])
        assert front.mem[BUFFERS + 16:BUFFERS + 116] == b"sector one" * 10
        assert front.mem[BUFFERS + 528] == status
        assert backend.requests[0].what == f"read 512 at sector 1, status {status:#x}"
    finally:
        front.close()
        backend.close()


# --- a guest (or front end) that breaks the rules: that request or ring ends, never the back-end

def served_after(backend: RngBackend, front: FrontEnd, head: int) -> None:
    """The back-end still serves: a good request on `head` is answered."""
    request_64(front, head)
    front.submit(head)
    front.wait_call()
    assert backend.alive and backend.requests[-1].head == head


@pytest.mark.parametrize(("lay", "said"), [
    (lambda mem: put_desc(mem, 0, SIZE + 0x1000, 64, flags=2),
     "descriptor 0: buffer 0x101000+0x40 is outside guest memory"),
    (lambda mem: (put_desc(mem, 0, BUFFERS, 8, flags=1, nxt=1),
                  put_desc(mem, 1, BUFFERS, 8, flags=1, nxt=0)),
     "descriptor chain from 0 loops"),
    # two descriptors of 4 GiB: asked of the rng, 8 GiB of random bytes in the test's process
    (lambda mem: (put_desc(mem, 0, BUFFERS, 0xFFFFFFFF, flags=2 | 1, nxt=1),
                  put_desc(mem, 1, BUFFERS, 0xFFFFFFFF, flags=2)),
     "descriptor 0: buffer 0x10000+0xffffffff is outside guest memory"),
    (lambda mem: put_desc(mem, 0, BUFFERS, 8, flags=1 | 4),
     "an indirect descriptor, but INDIRECT_DESC was not offered"),
], ids=["outside-memory", "loop", "4GiB-lengths", "indirect"])
def test_a_bad_chain_from_a_kick_ends_that_request_not_the_back_end(
        rng: tuple[RngBackend, FrontEnd], lay: object, said: str) -> None:
    backend, front = rng
    front.start()
    lay(front.mem)  # type: ignore[operator]
    tracemalloc.start()
    try:
        front.submit(0)
        assert backend.wait(lambda: bool(backend.errors), 5), "the bad chain went unnoticed"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert backend.errors == [f"queue=0: {said}; that request ends"]
    assert peak < 16 << 20, f"a guest-chosen length sized a host allocation ({peak} bytes)"
    served_after(backend, front, 1)


def test_an_avail_index_that_runs_ahead_of_the_queue_stops_that_ring(
        rng: tuple[RngBackend, FrontEnd]) -> None:
    backend, front = rng
    front.start()
    struct.pack_into("<H", front.mem, AVAIL + 2, NUM + 1)  # nine new entries in an 8-entry ring
    os.eventfd_write(front.kick, 1)
    assert backend.wait(lambda: bool(backend.errors), 5)
    assert backend.errors == ["queue=0: the available index ran 9 entries ahead of the "
                              "device, more than the queue's 8; the ring is not served until "
                              "it is set up again"]
    assert backend.alive and not backend.requests
    # set up again (as QEMU does after a reset), the ring is served
    struct.pack_into("<H", front.mem, AVAIL + 2, 0)
    front.send(Request.SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, UVA_BASE + DESC,
                                                   UVA_BASE + USED, UVA_BASE + AVAIL, 0))
    served_after(backend, front, 2)


def test_a_runaway_index_is_refused_by_the_queue_itself() -> None:
    memory, mem = anonymous_memory()
    struct.pack_into("<H", mem, AVAIL + 2, 0x8000)
    with pytest.raises(RingBroken, match="ran 32768 entries ahead"):
        SplitQueue(memory, NUM, DESC, AVAIL, USED).pop()


def test_a_back_end_that_dies_says_so(tmp_path: Path) -> None:
    from cocolab.sidecars import BackendSidecar

    sidecar = BackendSidecar("rng0", "vhost-user-rng")
    sidecar.start(tmp_path, tmp_path)
    try:
        backend = sidecar.backend
        assert sidecar.dead() is None
        backend._dispatch = lambda what: 1 / 0  # type: ignore[method-assign]
        front = FrontEnd(tmp_path / "vu-rng0.sock")  # the accept now kills the thread
        try:
            assert backend.wait(lambda: not backend.alive, 5)
        finally:
            front.close()
        assert sidecar.dead() == ("the vhost-user-rng back-end of rng0 died: "
                                  "ZeroDivisionError: division by zero")
    finally:
        sidecar.close()


# --- the seeded campaign ---------------------------------------------------------------------

def test_a_round_is_the_same_sequence_every_time_and_rounds_differ() -> None:
    def draws(seed: int, round_: int) -> list[tuple[Mutation, int, bytes]]:
        campaign = Campaign(seed, round_)
        return [(d.mutation, d.other_id, d.data) for d in
                (campaign.next(NUM, 64) for _ in range(40))]
    assert draws(7, 3) == draws(7, 3)
    assert draws(7, 3) != draws(7, 4) and draws(7, 3) != draws(8, 3)
    seen = {m for m, _, _ in draws(7, 3) + draws(7, 4) + draws(7, 5)}
    assert Mutation.NONE in seen and len(seen) >= 6, "the weights starve the mutations"


@pytest.mark.parametrize("mutation, expected", [
    (Mutation.NONE, (5, 64, 1)), (Mutation.USED_LEN_ZERO, (5, 0, 1)),
    (Mutation.USED_LEN_PLUS_ONE, (5, 65, 1)), (Mutation.USED_LEN_HUGE, (5, 0xFFFFFFFF, 1)),
    (Mutation.USED_LEN_SHORT, (5, 32, 1)), (Mutation.USED_ID_OUT_OF_RANGE, (NUM, 64, 1)),
    (Mutation.USED_ID_OTHER, (3, 64, 1)), (Mutation.USED_ID_TWICE, (5, 64, 2)),
])
def test_each_mutation_changes_the_used_element_as_named(
        mutation: Mutation, expected: tuple[int, int, int]) -> None:
    assert used_element(Drawn(0, mutation, 3, b""), head=5, length=64, writable=64,
                        num=NUM) == expected
    # "another id" is never the head itself
    assert used_element(Drawn(0, Mutation.USED_ID_OTHER, 5, b""), 5, 64, 64, NUM)[0] == 6


def test_the_back_end_answers_as_the_campaign_draws_and_logs_the_round(
        rng: tuple[RngBackend, FrontEnd]) -> None:
    """Through the socket, as QEMU would: the published elements are the ones used_element
    computes from the same draws, and the log names the seed, round and draw."""
    backend, front = rng
    backend.feed(b"x" * 64 * 20)
    backend.campaign = Campaign(11, 2)
    front.start()
    expected = Campaign(11, 2)
    published = []
    for n in range(12):
        head = n % NUM
        request_64(front, head)
        drawn = expected.next(NUM, 64)
        front.submit(head)
        if drawn.mutation is Mutation.NEVER_COMPLETE:
            assert backend.wait(lambda n=n: len(backend.requests) == n + 1, 5)
            continue
        front.wait_call()
        ident, length, times = used_element(drawn, head, 64, 64, NUM)
        published += [(ident, length)] * times
    idx, _ = used(front.mem)
    assert idx == len(published)
    ring = [struct.unpack_from("<II", front.mem, USED + 4 + 8 * i) for i in range(NUM)]
    for i, element in enumerate(published):  # the ring holds the last NUM, wrapped
        if i >= len(published) - NUM:
            assert ring[i % NUM] == element, f"element {i}"
    log = backend.log_path.read_text() if backend.log_path else ""
    assert "campaign seed 11 round 2" in log and "(seed 11 round 2 #0 " in log
    assert backend.campaign is not None and backend.campaign.summary().startswith("12 requests")


# --- the packed virtqueue (virtio 1.2 §2.8) --------------------------------------------------

AVAIL_F, USED_F = 1 << 7, 1 << 15


class PackedDriver:
    """The driver's side of a packed ring, by the spec: buffers in consecutive slots with
    the AVAIL flag = its wrap counter and USED = its inverse, the buffer id in the last."""

    def __init__(self, mem: mmap.mmap) -> None:
        self.mem, self.next, self.wrap = mem, 0, True

    def add(self, ident: int, *parts: tuple[int, int, int]) -> None:
        """One buffer: (addr, len, flags) descriptors, NEXT set on all but the last."""
        for i, (addr, length, flags) in enumerate(parts):
            last = i == len(parts) - 1
            flags |= (0 if last else 1) | (AVAIL_F if self.wrap else USED_F)
            struct.pack_into("<QIHH", self.mem, DESC + 16 * self.next, addr, length,
                             ident if last else 0, flags)
            self.next += 1
            if self.next == NUM:
                self.next, self.wrap = 0, not self.wrap

    def used(self, slot: int) -> tuple[int, int, bool]:
        """(id, len, whether both flags say used in `wrap`) at `slot`."""
        _, length, ident, flags = struct.unpack_from("<QIHH", self.mem, DESC + 16 * slot)
        return ident, length, bool(flags & AVAIL_F) == bool(flags & USED_F)


def test_a_packed_ring_pops_chains_and_publishes_used_entries_across_the_wrap() -> None:
    memory, mem = anonymous_memory()
    driver, queue = PackedDriver(mem), PackedQueue(memory, NUM, DESC)
    assert queue.pop() is None  # nothing available: the flags say used in wrap 1
    driver.add(5, (BUFFERS, 16, 0), (BUFFERS + 16, 512, 2), (BUFFERS + 528, 1, 2))
    chain = queue.pop()
    assert chain is not None and chain.head == 5 and chain.writable_bytes == 513
    assert queue.pop() is None
    queue.put_used(5, 513)
    assert driver.used(0) == (5, 513, True) and queue.next_used == 3
    for ident in range(6):  # 6 one-slot buffers: slots 3..7, then 0 in the next wrap
        driver.add(ident, (BUFFERS, 64, 2))
    popped = [queue.pop() for _ in range(6)]
    assert [c.head for c in popped if c] == list(range(6)) and queue.pop() is None
    assert (queue.next_avail, queue.avail_wrap) == (1, False)
    for ident in range(6):
        queue.put_used(ident, 64)
    assert (queue.next_used, queue.used_wrap) == (1, False)
    _, _, flags = struct.unpack_from("<IHH", mem, DESC + 8)  # slot 0 again, wrap 0
    assert flags & (AVAIL_F | USED_F) == 0, "a used entry in wrap 0 has both flags clear"


def test_the_packed_ring_state_is_vhost_users_ring_base() -> None:
    memory, _ = anonymous_memory()
    state = 3 | 1 << 15 | (2 | 0 << 15) << 16  # avail 3 in wrap 1, used 2 in wrap 0
    queue = PackedQueue(memory, NUM, DESC, state=state)
    assert (queue.next_avail, queue.avail_wrap, queue.next_used, queue.used_wrap) == \
        (3, True, 2, False)
    assert queue.last_avail == state
    assert PackedQueue(memory, NUM, DESC).last_avail == 1 << 15 | 1 << 31  # fresh: wraps 1


@pytest.mark.parametrize("parts, error", [
    ([(SIZE + 0x1000, 64, 2)], "outside guest memory"),
    ([(BUFFERS, 64, 4)], "indirect descriptor"),
    ([(BUFFERS, 8, 0)] * NUM, "runs past the ring"),  # NEXT on every one: no end
])
def test_a_bad_packed_chain_is_a_protocol_error_and_skipped(
        parts: list[tuple[int, int, int]], error: str) -> None:
    memory, mem = anonymous_memory()
    driver, queue = PackedDriver(mem), PackedQueue(memory, NUM, DESC)
    if error == "runs past the ring":
        for i in range(NUM):  # hand-written: every descriptor available with NEXT
            struct.pack_into("<QIHH", mem, DESC + 16 * i, BUFFERS, 8, 0, 1 | AVAIL_F)
    else:
        driver.add(1, *parts)
    with pytest.raises(ProtocolError, match=error):
        queue.pop()
    assert queue.pop() is None or error == "runs past the ring"


def test_a_back_end_serves_a_packed_ring_when_the_driver_acked_it(
        rng: tuple[RngBackend, FrontEnd]) -> None:
    backend, front = rng
    backend.feed(b"packed!!" * 8)
    offered = struct.unpack("<Q", front.ask(Request.GET_FEATURES))[0]
    assert offered >> F_RING_PACKED & 1
    front.send(Request.SET_PROTOCOL_FEATURES, struct.pack("<Q", 0))
    front.send(Request.SET_FEATURES, struct.pack("<Q", 1 << F_VERSION_1 | 1 << F_RING_PACKED
                                                 | 1 << F_PROTOCOL_FEATURES))
    front.send(Request.SET_MEM_TABLE, struct.pack("<II", 1, 0)
               + struct.pack("<QQQQ", GPA_BASE, SIZE, UVA_BASE, 0), (front.memfd,))
    front.send(Request.SET_VRING_NUM, struct.pack("<II", 0, NUM))
    front.send(Request.SET_VRING_BASE, struct.pack("<II", 0, 1 << 15 | 1 << 31))
    front.send(Request.SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, UVA_BASE + DESC,
                                                   UVA_BASE + USED, UVA_BASE + AVAIL, 0))
    front.send(Request.SET_VRING_CALL, struct.pack("<Q", 0), (front.call,))
    front.send(Request.SET_VRING_KICK, struct.pack("<Q", 0), (front.kick,))
    front.send(Request.SET_VRING_ENABLE, struct.pack("<II", 0, 1))
    driver = PackedDriver(front.mem)
    driver.add(3, (BUFFERS, 64, 2))
    os.eventfd_write(front.kick, 1)
    front.wait_call()
    assert driver.used(0) == (3, 64, True)
    assert front.mem[BUFFERS:BUFFERS + 64] == b"packed!!" * 8
    index, base = struct.unpack("<II", front.ask(Request.GET_VRING_BASE,
                                                 struct.pack("<II", 0, 0)))
    assert (index, base) == (0, 1 | 1 << 15 | (1 | 1 << 15) << 16)
