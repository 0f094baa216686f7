"""A vhost-user back-end: the device side of one virtio device, in Python, driven by a test.

`Backend` listens on a unix socket that QEMU's `-chardev socket,path=...` connects to, and
serves one front-end with one thread: the control messages (features, the memory table, the
rings, config space), then every kick, popping what the driver made available and answering
it as the device type (`serve`) and the current personality decide. It never trusts the
front-end either: a malformed message or a chain outside guest memory is logged and ends
the connection.

Everything it sees is kept, for the test and for the failure bundle:

    events          one Event per message, kick, answered request and call, in order
    acked_features  what the driver accepted as QEMU passes it on (SET_FEATURES), None before
    started         a ring is running now: QEMU sent its kick descriptor (the driver set
                    DRIVER_OK) and has not stopped it (GET_VRING_BASE, on reset or unbind)
    kicks           how many kicks arrived
    requests        one Served per request popped from a ring, with what was answered

The personality may be changed at any time, from any thread (`personality = ...`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TextIO

from cocolab.devices.campaign import Campaign, Mutation, used_element
from cocolab.devices.protocol import (
    COMMON_FEATURE_NAMES,
    F_ACCESS_PLATFORM,
    F_PROTOCOL_FEATURES,
    F_RING_PACKED,
    F_VERSION_1,
    HEADER,
    MAX_FDS,
    VRING_INDEX_MASK,
    VRING_NOFD,
    Message,
    ProtocolFeature,
    Request,
    describe,
    pack_reply,
    unpack_header,
)
from cocolab.devices.virtqueue import (
    Chain,
    GuestMemory,
    PackedQueue,
    Queue,
    RingBroken,
    SplitQueue,
)
from cocolab.errors import ProtocolError

LOG = logging.getLogger(__name__)
U64 = struct.Struct("<Q")


class Personality(enum.Enum):
    """How the device answers. The first eight apply to every device type's rings; then
    virtio-blk's (`BlkBackend`; its config-space ones only to what QEMU reads at start-up:
    QEMU caches config space when the device is realized), then virtio-net's (`NetBackend`)."""

    GOOD = "good"
    USED_LEN_TOO_LARGE = "used-len-too-large"
    """The used element's len is 4096 bytes more than the buffer the driver gave."""
    USED_LEN_ZERO = "used-len-0"
    """The used element's len is 0, whatever the device wrote."""
    USED_LEN_PLUS_ONE = "used-len-plus-1"
    """One byte more than the buffer the driver gave."""
    USED_LEN_MAX = "used-len-max"
    """0xffffffff."""
    USED_ID_OUT_OF_RANGE = "used-id-out-of-range"
    """The used element's id is the queue size: no descriptor has it."""
    USED_ID_TWICE = "used-id-twice"
    """Every request is completed twice: the same used element, published two times."""
    NEVER_COMPLETE = "never-complete"
    """Requests are taken from the ring and never answered."""
    BAD_STATUS = "bad-status"
    """virtio-blk: every request completes with status 0x7f, which no version defines."""
    CAPACITY_HUGE = "capacity-huge"
    """virtio-blk config: capacity 2^64 - 1 sectors."""
    NUM_QUEUES_0 = "num-queues-0"
    NUM_QUEUES_65535 = "num-queues-65535"
    BLK_SIZE_ODD = "blk-size-odd"
    """virtio-blk config: blk_size 1000, not a power of two."""
    SEG_MAX_0 = "seg-max-0"
    NUM_BUFFERS_0 = "num-buffers-0"
    """virtio-net: a received frame's header says it spans 0 buffers (MRG_RXBUF)."""
    NUM_BUFFERS_HUGE = "num-buffers-65535"
    """virtio-net: ...65535 buffers, far more than the driver posted."""

    @classmethod
    def parse(cls, value: Personality | str) -> Personality:
        if isinstance(value, Personality):
            return value
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"no personality {value!r}; choose one of {names}") from None


RING_PERSONALITIES = frozenset({Personality.GOOD, Personality.USED_LEN_TOO_LARGE,
                                Personality.USED_LEN_ZERO, Personality.USED_LEN_PLUS_ONE,
                                Personality.USED_LEN_MAX, Personality.USED_ID_OUT_OF_RANGE,
                                Personality.USED_ID_TWICE, Personality.NEVER_COMPLETE})
USED_LENGTHS = (Personality.USED_LEN_ZERO, Personality.USED_LEN_PLUS_ONE,
                Personality.USED_LEN_TOO_LARGE, Personality.USED_LEN_MAX)
"""The used-length matrix every driver is tried with: none, one byte over, a page over, and
the most a u32 says."""


@dataclass(frozen=True)
class Event:
    """One thing the back-end saw or did: `kind` is message, kick, request, used or call."""

    seconds: float
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.seconds:9.3f} {self.kind:7} {self.text}"


@dataclass
class Served:
    """One request taken from a ring, and what the device answered."""

    queue: int
    head: int
    readable: int
    """Bytes the driver gave the device to read."""
    writable: int
    """Bytes the driver gave the device to write."""
    what: str
    """The device type's account of it ('read 512 bytes at sector 0', '64 bytes')."""
    used: list[tuple[int, int]] = field(default_factory=list)
    """The used elements published for it, (id, len); empty if it was never completed."""


@dataclass
class _Ring:
    num: int = 0
    base: int = 0
    addr: tuple[int, int, int] | None = None  # desc, avail, used: front-end addresses
    kick: int | None = None
    call: int | None = None
    enabled: bool = False
    queue: SplitQueue | PackedQueue | None = None
    broken: str = ""
    """Why the ring is not served (RingBroken), until it is set up again."""


class Backend:
    """One vhost-user device served on the unix socket `path` (created here, removed by
    close()), its log written to `log_path`."""

    device_type: ClassVar[str] = ""
    """The virtio device type's name, as QEMU's vhost-user-NAME-pci calls it."""
    num_queues: ClassVar[int] = 1
    device_features: ClassVar[int] = 0
    feature_table: ClassVar[dict[int, str]] = {}
    personalities: ClassVar[frozenset[Personality]] = RING_PERSONALITIES

    def __init__(self, path: Path, log_path: Path | None = None,
                 personality: Personality | str = Personality.GOOD) -> None:
        self.path = path
        self.log_path = log_path
        self.events: list[Event] = []
        self.requests: list[Served] = []
        self.acked_features: int | None = None
        self.protocol_features = 0
        self.kicks = 0
        self.errors: list[str] = []
        self._t0 = time.monotonic()
        self._log: TextIO | None = None
        self._personality = Personality.GOOD
        self.personality = personality  # type: ignore[assignment]  # checked by the setter
        self._campaign: Campaign | None = None
        self._memory: GuestMemory | None = None
        self._backend_channel: int | None = None
        self._rings = [_Ring() for _ in range(self.num_queues)]
        self._conn: socket.socket | None = None
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(str(path))
            os.chmod(path, 0o600)
            self._listener.listen(1)
        except OSError:
            self._listener.close()
            raise
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._closing = threading.Event()
        self._log = log_path.open("a", buffering=1) if log_path else None
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        for fd, what in self._sources():
            self._selector.register(fd, selectors.EVENT_READ, what)
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"vhost-user-{self.device_type}-{path.name}")
        self._thread.start()

    # --- what a test uses ------------------------------------------------------------------

    @property
    def personality(self) -> Personality:
        return self._personality

    @personality.setter
    def personality(self, value: Personality | str) -> None:
        chosen = Personality.parse(value)
        if chosen not in self.personalities:
            names = ", ".join(sorted(p.value for p in self.personalities))
            raise ValueError(f"a {self.device_type} device has no personality "
                             f"{chosen.value!r}; its personalities: {names}")
        self._personality = chosen
        self._event("note", f"personality {chosen.value}")

    @property
    def campaign(self) -> Campaign | None:
        """A seeded campaign (devices/campaign.py): while set, and the personality is GOOD,
        each request is answered as its next draw says."""
        return self._campaign

    @campaign.setter
    def campaign(self, value: Campaign | None) -> None:
        self._campaign = value
        self._event("note", f"campaign {value.name}" if value else "campaign off")

    @property
    def offered_features(self) -> int:
        return (self.device_features | 1 << F_VERSION_1 | 1 << F_PROTOCOL_FEATURES
                | 1 << F_ACCESS_PLATFORM | 1 << F_RING_PACKED)

    @property
    def alive(self) -> bool:
        """The serving thread runs (or was closed on purpose)."""
        return self._thread.is_alive() or self._closing.is_set()

    @property
    def started(self) -> bool:
        return any(ring.kick is not None for ring in self._rings)

    def layout(self, index: int = 0) -> str | None:
        """'split' or 'packed': how queue `index` is laid out now; None while it is not set up."""
        queue = self._rings[index].queue if 0 <= index < self.num_queues else None
        return None if queue is None else "packed" if isinstance(queue, PackedQueue) else "split"

    def acked(self, bit: int) -> bool:
        return self.acked_features is not None and bool(self.acked_features >> bit & 1)

    def messages(self) -> list[str]:
        """The names of the control messages received, in order."""
        return [e.text.split()[0] for e in self.events if e.kind == "message"]

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll `predicate()` for up to `timeout` seconds; whether it came true."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def forget(self) -> None:
        """Start the test-visible record afresh (events, requests, kicks, acked features;
        the log file keeps everything): each test on a shared VM reads only what happened
        during it."""
        self.events, self.requests, self.kicks, self.acked_features = [], [], 0, None

    def close(self) -> None:
        """Stop serving, join the thread, release every descriptor and the socket file."""
        if self._closing.is_set():
            return
        self._closing.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self._drop_connection()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._selector.close()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- what a device type provides --------------------------------------------------------

    def _sources(self) -> list[tuple[int, str]]:
        """More descriptors the serving thread waits on, each dispatched with its name: a
        device type's own events (a frame to receive)."""
        return []

    def config(self) -> bytes | None:
        """The device's config space (virtio 1.2 §5), or None for a type without one."""
        return None

    def set_config(self, offset: int, data: bytes, flags: int) -> bool:
        """Take a driver's write to config space; False refuses it (vhost-user.rst: a
        back-end must not accept writes to read-only fields). None is writable here."""
        return False

    def serve(self, queue: Queue, index: int, chain: Chain) -> tuple[int, str]:
        """Answer one request: write into the chain, and return the used length and a
        one-line account of it."""
        raise NotImplementedError

    def scramble(self, queue: Queue, chain: Chain, data: bytes) -> str:
        """A campaign's random data over what `serve` wrote (the writable bytes, a blk
        status included); the account's tail."""
        written = queue.write_into(chain, data)
        return f"; {written} bytes overwritten at random"

    # --- the serving thread -------------------------------------------------------------------

    def _event(self, kind: str, text: str) -> None:
        event = Event(time.monotonic() - self._t0, kind, text)
        self.events.append(event)
        if self._log is not None:
            with contextlib.suppress(ValueError):  # closed under a late event
                self._log.write(f"{event}\n")

    def _loop(self) -> None:
        try:
            while not self._closing.is_set():
                for key, _ in self._selector.select():
                    if key.data == "wake":
                        return
                    self._dispatch(key.data)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self._event("error", f"{type(exc).__name__}: {exc}")
            LOG.exception("vhost-user back-end %s failed", self.path)

    def _dispatch(self, what: object) -> None:
        if what == "accept":
            conn, _ = self._listener.accept()
            if self._conn is not None:  # QEMU reconnects after a failed start: new session
                self._drop_connection()
            self._conn = conn
            self._selector.register(conn, selectors.EVENT_READ, "message")
            self._event("connect", "front-end connected")
        elif what == "message":
            try:
                msg = self._receive()
            except (ProtocolError, OSError) as exc:
                self.errors.append(str(exc))
                self._event("error", f"{exc}; connection dropped")
                self._drop_connection()
                return
            if msg is None:
                self._event("connect", "front-end closed the connection")
                self._drop_connection()
                return
            self._handle(msg)
        elif isinstance(what, tuple) and what[0] == "kick":
            index = what[1]
            ring = self._rings[index]
            with contextlib.suppress(BlockingIOError):
                os.read(present_fd(ring.kick), 8)
            self.kicks += 1
            self._event("kick", f"queue={index}")
            self._process(index)  # what a kick delivers cannot end the back-end

    def _receive(self) -> Message | None:
        conn = self._conn
        assert conn is not None
        data, fds, _, _ = socket.recv_fds(conn, HEADER.size, MAX_FDS)
        if not data:
            return None
        while len(data) < HEADER.size:
            more, more_fds, _, _ = socket.recv_fds(conn, HEADER.size - len(data), MAX_FDS)
            if not more:
                raise ProtocolError("the front-end closed mid-header")
            data, fds = data + more, fds + more_fds
        request, flags, size = unpack_header(data)
        payload = b""
        while len(payload) < size:
            more, more_fds, _, _ = socket.recv_fds(conn, size - len(payload), MAX_FDS)
            if not more:
                raise ProtocolError("the front-end closed mid-payload")
            payload, fds = payload + more, fds + more_fds
        return Message(request, flags, payload, tuple(fds))

    def _reply(self, msg: Message, payload: bytes) -> None:
        assert self._conn is not None
        self._conn.sendall(pack_reply(msg.request, payload))

    def _handle(self, msg: Message) -> None:
        self._event("message", describe(msg, {**COMMON_FEATURE_NAMES, **self.feature_table}))
        handler = getattr(self, f"_on_{msg.name.lower()}", None)
        status = 0
        try:
            if handler is None:
                for fd in msg.fds:
                    os.close(fd)
            else:
                handler(msg)
        except ProtocolError as exc:
            self.errors.append(f"{msg.name}: {exc}")
            self._event("error", f"{msg.name}: {exc}")
            status = 1
        acked_reply = msg.need_reply and self.protocol_features >> ProtocolFeature.REPLY_ACK & 1
        if acked_reply and msg.request not in _ANSWERED:
            self._reply(msg, U64.pack(status))

    # --- control messages (each named _on_<request>) -------------------------------------------

    def _on_get_features(self, msg: Message) -> None:
        self._reply(msg, U64.pack(self.offered_features))

    def _on_set_features(self, msg: Message) -> None:
        self.acked_features = msg.u64()

    def _on_get_protocol_features(self, msg: Message) -> None:
        # BACKEND_REQ with REPLY_ACK: QEMU refuses a back-end that offers ACCESS_PLATFORM
        # without them ("IOMMU support requires reply-ack and backend-req protocol
        # features"); the channel is accepted and never used.
        bits = (1 << ProtocolFeature.MQ | 1 << ProtocolFeature.REPLY_ACK
                | 1 << ProtocolFeature.BACKEND_REQ)
        if self.config() is not None:
            bits |= 1 << ProtocolFeature.CONFIG
        self._reply(msg, U64.pack(bits))

    def _on_set_protocol_features(self, msg: Message) -> None:
        self.protocol_features = msg.u64()

    def _on_get_queue_num(self, msg: Message) -> None:
        self._reply(msg, U64.pack(self.num_queues))

    def _on_set_mem_table(self, msg: Message) -> None:
        regions = msg.memory_regions()
        if self._memory is not None:
            self._memory.close()
        self._memory = GuestMemory(regions, msg.fds)
        for index, ring in enumerate(self._rings):  # rings keep their place in new memory
            if ring.addr is not None:
                self._make_queue(index)

    def _ring(self, index: int) -> _Ring:
        if not 0 <= index < self.num_queues:
            raise ProtocolError(f"queue {index}, but this device has {self.num_queues}")
        return self._rings[index]

    def _on_set_vring_num(self, msg: Message) -> None:
        index, num = msg.vring_state()
        self._ring(index).num = num

    def _on_set_vring_base(self, msg: Message) -> None:
        index, base = msg.vring_state()
        self._ring(index).base = base

    def _on_set_vring_addr(self, msg: Message) -> None:
        addr = msg.vring_addr()
        self._ring(addr.index).addr = (addr.desc, addr.avail, addr.used)
        if self._memory is not None:
            self._make_queue(addr.index)

    def _make_queue(self, index: int) -> None:
        ring, memory = self._rings[index], self._memory
        assert ring.addr is not None and memory is not None
        desc, avail, used = (memory.gpa_from_uva(a) for a in ring.addr)
        if self.acked(F_RING_PACKED):  # the driver area and device area go unread
            ring.queue = PackedQueue(memory, ring.num, desc, state=ring.base)
        else:
            ring.queue = SplitQueue(memory, ring.num, desc, avail, used, last_avail=ring.base)
        ring.broken = ""

    def _on_get_vring_base(self, msg: Message) -> None:
        """Stops the ring (vhost-user.rst, "Ring states") and tells where it stopped."""
        index, _ = msg.vring_state()
        ring = self._ring(index)
        base = ring.queue.last_avail if ring.queue else ring.base
        self._stop(index)
        self._reply(msg, struct.pack("<II", index, base))

    def _stop(self, index: int) -> None:
        ring = self._rings[index]
        if ring.kick is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(ring.kick)
            os.close(ring.kick)
        if ring.call is not None:
            os.close(ring.call)
        self._rings[index] = _Ring()

    def _fd_for(self, msg: Message) -> tuple[int, int | None]:
        value = msg.u64()
        if value & VRING_NOFD:
            return value & VRING_INDEX_MASK, None
        if len(msg.fds) != 1:
            raise ProtocolError(f"{msg.name}: {len(msg.fds)} descriptors, 1 expected")
        return value & VRING_INDEX_MASK, msg.fds[0]

    def _on_set_vring_kick(self, msg: Message) -> None:
        index, fd = self._fd_for(msg)
        ring = self._ring(index)
        if ring.kick is not None:
            self._selector.unregister(ring.kick)
            os.close(ring.kick)
        ring.kick = fd
        if fd is None:
            raise ProtocolError("polling rings (no kick descriptor) are not served")
        os.set_blocking(fd, False)
        self._selector.register(fd, selectors.EVENT_READ, ("kick", index))
        if not self.acked(F_PROTOCOL_FEATURES):
            ring.enabled = True  # without protocol features a ring starts enabled
        self._process(index)

    def _on_set_vring_call(self, msg: Message) -> None:
        index, fd = self._fd_for(msg)
        ring = self._ring(index)
        if ring.call is not None:
            os.close(ring.call)
        ring.call = fd

    def _on_set_vring_err(self, msg: Message) -> None:
        _, fd = self._fd_for(msg)
        if fd is not None:
            os.close(fd)

    def _on_set_vring_enable(self, msg: Message) -> None:
        index, enable = msg.vring_state()
        self._ring(index).enabled = bool(enable)
        if enable:
            self._process(index)

    def _on_get_config(self, msg: Message) -> None:
        offset, size, _, _ = msg.config()
        space = self.config() or b""
        data = space[offset:offset + size].ljust(size, b"\0")
        self._reply(msg, struct.pack("<III", offset, size, 0) + data)

    def _on_set_backend_req_fd(self, msg: Message) -> None:
        if len(msg.fds) != 1:
            raise ProtocolError(f"SET_BACKEND_REQ_FD with {len(msg.fds)} descriptors")
        if self._backend_channel is not None:
            os.close(self._backend_channel)
        self._backend_channel = msg.fds[0]

    def _on_iotlb_msg(self, msg: Message) -> None:
        """Only with a vIOMMU in front of the device: its translations are not kept, so a
        ring behind one is not served (the addresses would be IOVAs)."""
        self._reply(msg, U64.pack(0))

    def _on_set_config(self, msg: Message) -> None:
        offset, size, flags, data = msg.config()
        if len(data) < size or not self.set_config(offset, data[:size], flags):
            raise ProtocolError(f"SET_CONFIG of {size} bytes at {offset} refused: not a "
                                "writable field of this device")

    def _on_set_owner(self, msg: Message) -> None:
        pass

    def _on_reset_owner(self, msg: Message) -> None:
        for index in range(self.num_queues):
            self._stop(index)

    # --- the data path ------------------------------------------------------------------------

    def _process(self, index: int) -> None:
        """Serve what the driver made available. A request that breaks a rule ends there
        (logged, in `errors`); a ring that does is not served again until it is set up
        again; the back-end itself goes on either way."""
        ring = self._rings[index]
        queue = ring.queue
        if queue is None or ring.kick is None or not ring.enabled or ring.broken:
            return
        while True:
            try:
                chain = queue.pop()
                if chain is None:
                    return
                self._answer(queue, index, chain)
            except RingBroken as exc:
                ring.broken = str(exc)
                self._refuse(f"queue={index}: {exc}; the ring is not served until it is set "
                             "up again")
                return
            except ProtocolError as exc:
                self._refuse(f"queue={index}: {exc}; that request ends")

    def _refuse(self, what: str) -> None:
        self.errors.append(what)
        self._event("error", what)

    def _answer(self, queue: Queue, index: int, chain: Chain) -> None:
        campaign = self.campaign
        if campaign is not None and self.personality is Personality.GOOD:
            self._answer_drawn(queue, index, chain, campaign)
            return
        readable = sum(d.length for d in chain.readable)
        writable = chain.writable_bytes
        personality = self.personality
        if personality is Personality.NEVER_COMPLETE:
            self.requests.append(Served(index, chain.head, readable, writable, "kept"))
            self._event("request", f"queue={index} head={chain.head} out={readable} "
                                   f"in={writable}: kept, never completed (never-complete)")
            return
        length, what = self.serve(queue, index, chain)
        served = Served(index, chain.head, readable, writable, what)
        self.requests.append(served)
        ident = chain.head
        if personality in USED_LENGTHS:
            length = {Personality.USED_LEN_ZERO: 0, Personality.USED_LEN_PLUS_ONE: writable + 1,
                      Personality.USED_LEN_TOO_LARGE: writable + 4096,
                      Personality.USED_LEN_MAX: 0xFFFFFFFF}[personality]
        elif personality is Personality.USED_ID_OUT_OF_RANGE:
            ident = queue.num
        times = 2 if personality is Personality.USED_ID_TWICE else 1
        for _ in range(times):
            queue.put_used(ident, length)
            served.used.append((ident, length))
        self._event("request", f"queue={index} head={chain.head} out={readable} in={writable}:"
                               f" {what} -> used id={ident} len={length}"
                               + (" (twice)" if times == 2 else "")
                               + ("" if personality is Personality.GOOD
                                  else f" ({personality.value})"))
        ring = self._rings[index]
        if ring.call is not None:
            os.write(ring.call, U64.pack(1))

    def _answer_drawn(self, queue: Queue, index: int, chain: Chain,
                      campaign: Campaign) -> None:
        """Answer as the campaign's next draw says (devices/campaign.py)."""
        readable = sum(d.length for d in chain.readable)
        writable = chain.writable_bytes
        drawn = campaign.next(queue.num, writable)
        where = f"queue={index} head={chain.head} out={readable} in={writable}"
        if drawn.mutation is Mutation.NEVER_COMPLETE:
            self.requests.append(Served(index, chain.head, readable, writable, "kept"))
            self._event("request", f"{where}: kept, never completed ({campaign.name} {drawn})")
            return
        length, what = self.serve(queue, index, chain)
        if drawn.mutation is Mutation.DATA_RANDOM:
            what += self.scramble(queue, chain, drawn.data)
        served = Served(index, chain.head, readable, writable, what)
        self.requests.append(served)
        ident, length, times = used_element(drawn, chain.head, length, writable, queue.num)
        for _ in range(times):
            queue.put_used(ident, length)
            served.used.append((ident, length))
        self._event("request", f"{where}: {what} -> used id={ident} len={length}"
                               + (" (twice)" if times == 2 else "")
                               + f" ({campaign.name} {drawn})")
        ring = self._rings[index]
        if ring.call is not None:
            os.write(ring.call, U64.pack(1))

    def _drop_connection(self) -> None:
        for index in range(self.num_queues):
            with contextlib.suppress(OSError):
                self._stop(index)
        if self._conn is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._conn)
            self._conn.close()
            self._conn = None
        if self._memory is not None:
            self._memory.close()
            self._memory = None
        if self._backend_channel is not None:
            os.close(self._backend_channel)
            self._backend_channel = None


_ANSWERED = frozenset({Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES,
                       Request.GET_VRING_BASE, Request.GET_QUEUE_NUM, Request.GET_CONFIG,
                       Request.IOTLB_MSG})
"""Requests answered with a payload of their own, never with a REPLY_ACK."""


def present_fd(fd: int | None) -> int:
    if fd is None:
        raise ProtocolError("a kick on a ring without a kick descriptor")
    return fd
