"""An SPDM 1.2 responder on QEMU's SPDM socket: the device side of CMA authentication for an
emulated NVMe function (`-device nvme,spdm_port=N`), driven from a test.

It answers GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS, GET_DIGESTS, GET_CERTIFICATE
(in portions), CHALLENGE and GET_MEASUREMENTS with ECDSA P-256 or P-384 and SHA-256 or SHA-384,
and logs every message it reads and writes, decoded. Its `personality` may be changed at any
time, to make it misbehave in one precise way:

    good                   what a genuine device does
    untrusted-root         a chain that verifies, under a root the requester does not trust
    expired                the leaf certificate's notAfter is in the past
    wrong-san              the leaf's CMA SubjectAltName names another device
    no-san                 the leaf has no SubjectAltName at all
    bad-signature          CHALLENGE_AUTH's signature has one bit flipped
    changing-measurements  every MEASUREMENTS answer reports another firmware digest
    truncated              CERTIFICATE answers stop 16 bytes short of their PortionLength
    stall                  CHALLENGE is answered only after `stall_seconds`

QEMU's vCPU waits on the socket while the responder thinks, so a stall freezes the guest for
that long; keep it to seconds.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cocolab.spdm.certs import QEMU_NVME_SAN, Chain, make_leaf, make_root
from cocolab.spdm.messages import (
    NONCE_LEN,
    REQUESTS,
    VERSION_10,
    VERSION_12,
    Algorithms,
    Asym,
    Cap,
    Capabilities,
    Certificate,
    Challenge,
    ChallengeAuth,
    Code,
    Digests,
    Error,
    ErrorCode,
    GetCapabilities,
    GetCertificate,
    GetMeasurements,
    Hash,
    Header,
    Malformed,
    MeasHash,
    MeasurementBlock,
    Measurements,
    Message,
    NegotiateAlgorithms,
    Version,
)
from cocolab.spdm.signing import (
    CHALLENGE_AUTH_CONTEXT,
    MEASUREMENTS_CONTEXT,
    digest,
    sign,
    signing_message,
)
from cocolab.spdm.transport import (
    COMMAND_NORMAL,
    COMMAND_SHUTDOWN,
    COMMAND_TEST,
    DOE_TYPE_CMA,
    DOE_TYPE_DISCOVERY,
    TRANSPORT_PCI_DOE,
    DataObject,
    Frame,
    FramingError,
    discovery_response,
    read_frame,
)

LOG = logging.getLogger(__name__)
VCA_ORDER = (Code.GET_VERSION, Code.GET_CAPABILITIES, Code.NEGOTIATE_ALGORITHMS)
MIN_DATA_TRANSFER_SIZE = 42  # DSP0274 1.2 table 10
PORTION_MAX = 0x400  # the most of a chain one CERTIFICATE carries, whatever was asked
MEAS_HASH_FOR = {Hash.SHA_256: MeasHash.SHA_256, Hash.SHA_384: MeasHash.SHA_384}


class Personality(enum.Enum):
    GOOD = "good"
    UNTRUSTED_ROOT = "untrusted-root"
    EXPIRED = "expired"
    WRONG_SAN = "wrong-san"
    NO_SAN = "no-san"
    BAD_SIGNATURE = "bad-signature"
    CHANGING_MEASUREMENTS = "changing-measurements"
    TRUNCATED = "truncated"
    STALL = "stall"


@dataclass
class _Connection:
    """What one requester has negotiated, and the transcripts its signatures will cover."""

    version: int = VERSION_10
    """The connection's version: 1.0 until GET_CAPABILITIES settles it (errors carry it)."""
    phase: Code | None = None
    """The last VCA request answered: GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS."""
    answered: dict[Code, tuple[bytes, bytes]] = field(default_factory=dict)
    """Each VCA request answered, with its answer: an identical retry gets it again."""
    asym: Asym | None = None
    hash: Hash | None = None
    vca: bytes = b""
    m1: bytes = b""  # GET_DIGESTS .. CERTIFICATE, then CHALLENGE
    l1: bytes = b""  # GET_MEASUREMENTS and MEASUREMENTS since the last signed one
    chain: Chain | None = None
    measured: int = 0

    def reset(self) -> None:
        """GET_VERSION starts the connection over (DSP0274 1.2 §10.3); the count of
        measurements served survives it."""
        self.asym = self.hash = self.chain = None
        self.vca = self.m1 = self.l1 = b""
        self.version, self.phase = VERSION_10, None
        self.answered = {}


class Responder:
    """Listens on 127.0.0.1 (port 0: the kernel picks a free one; see `port`); one thread per
    connection. `close()` stops listening and drops every connection."""

    def __init__(self, log_path: Path | None = None, *, port: int = 0,
                 asym: Asym = Asym.ECDSA_P384, base_hash: Hash = Hash.SHA_384,
                 stall_seconds: float = 5.0) -> None:
        self.asym, self.base_hash = asym, base_hash
        self.stall_seconds = stall_seconds
        self.personality = Personality.GOOD
        self.log_path = log_path
        self._lock = threading.Lock()
        root = make_root(asym)
        self.chains = {
            Personality.GOOD: make_leaf(root, asym),
            Personality.UNTRUSTED_ROOT: make_leaf(make_root(asym, "an untrusted root"), asym),
            Personality.EXPIRED: make_leaf(root, asym, expired=True),
            Personality.WRONG_SAN: make_leaf(
                root, asym, san=QEMU_NVME_SAN.replace("Device=0010", "Device=0011")),
            Personality.NO_SAN: make_leaf(root, asym, san=None),
        }
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._conns: set[socket.socket] = set()
        """Open connections; a closed one leaves the set."""
        self._threads: list[threading.Thread] = []
        """Serving threads still running (an ended one is dropped at the next accept)."""
        self._closing = threading.Event()
        """Set by close(): the accepting thread ends, and a stall is cut short."""
        self.restart_threads()
        self._note(f"listening on 127.0.0.1:{self.port} ({asym.name}, {base_hash.name})")

    def restart_threads(self) -> None:
        """Start accepting connections: at creation, and again in a forked child."""
        self._accepting = threading.Thread(target=self._accept, name=f"spdm-{self.port}",
                                           daemon=True)
        self._accepting.start()

    # --- what a test uses --------------------------------------------------------------

    @property
    def root_pem(self) -> bytes:
        """The root a requester should trust: the good chain's."""
        return self.chains[Personality.GOOD].root_pem()

    def set_personality(self, personality: Personality | str) -> None:
        self.personality = Personality(personality)
        self._note(f"personality: {self.personality.value}")

    def close(self) -> None:
        """Stop listening, end every connection (a stall included) and join every thread."""
        self._closing.set()
        with contextlib.suppress(OSError):  # wakes the accepting thread (Linux)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(timeout=2)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):  # wakes a thread blocked reading it
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=2)

    @property
    def connections(self) -> int:
        """Connections open now (a closed one is forgotten)."""
        with self._lock:
            return len(self._conns)

    def __enter__(self) -> Responder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- the socket ----------------------------------------------------------------------

    def _note(self, line: str) -> None:
        LOG.debug("spdm %s: %s", self.port, line)
        if self.log_path is not None:
            with self._lock, self.log_path.open("a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return
            self._note(f"connection from {peer[0]}:{peer[1]}")
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                      name=f"spdm-{self.port}-{peer[1]}")
            with self._lock:
                self._conns.add(conn)
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        state = _Connection()
        try:
            while (frame := read_frame(conn)) is not None:
                if frame.command == COMMAND_SHUTDOWN:
                    self._note("SHUTDOWN: the requester is closing")
                    with contextlib.suppress(OSError):  # QEMU does not wait for the echo
                        conn.sendall(Frame(COMMAND_SHUTDOWN, frame.transport, b"").pack())
                    break
                if frame.command == COMMAND_TEST:  # spdm-emu's requester says hello first
                    self._note(f"TEST: {frame.payload.rstrip(bytes(1)).decode(errors='replace')}")
                    conn.sendall(Frame(COMMAND_TEST, frame.transport, b"Server Hello!\0").pack())
                    continue
                if frame.command != COMMAND_NORMAL or frame.transport != TRANSPORT_PCI_DOE:
                    self._note(f"frame with command {frame.command:#x}, transport "
                               f"{frame.transport:#x}: not a PCI DOE message; closing")
                    break
                reply = self._doe(state, frame.payload)
                conn.sendall(Frame(COMMAND_NORMAL, TRANSPORT_PCI_DOE, reply).pack())
        except (OSError, FramingError) as exc:
            if not self._closing.is_set():
                self._note(f"connection ends: {exc}")
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _doe(self, state: _Connection, raw: bytes) -> bytes:
        try:
            obj = DataObject.unpack(raw)
        except FramingError as exc:
            self._note(f"<- a bad DOE object ({exc}): {raw.hex()}")
            return b""
        if obj.kind == DOE_TYPE_DISCOVERY:
            # QEMU answers discovery itself; a requester on the socket (spdm-emu's) asks us
            index = obj.data[0] if obj.data else 0
            answer = discovery_response(index)
            self._note(f"<- DOE discovery, index {index}; -> {answer.hex()}")
            return DataObject(DOE_TYPE_DISCOVERY, answer).pack()
        if obj.kind != DOE_TYPE_CMA:
            self._note(f"<- DOE object type {obj.kind} (secured CMA needs a session, which "
                       "this responder does not offer); no answer")
            return b""
        response = self.respond(state, obj.data)
        return DataObject(DOE_TYPE_CMA, response).pack()

    # --- SPDM ----------------------------------------------------------------------------

    def respond(self, state: _Connection, request: bytes) -> bytes:
        """The response to one SPDM request (padding from DOE may follow it)."""
        try:
            header = Header.unpack(request)
            kind = REQUESTS.get(header.code)
            if kind is None:
                self._note(f"<- {header}: not a request this responder knows")
                return self._error(state, ErrorCode.UNSUPPORTED_REQUEST, header.code)
            wrong_version = self._wrong_version(state, header)
            if wrong_version:  # before decoding: another version has another layout
                self._note(f"<- {header}: {wrong_version}")
                return self._error(state, ErrorCode.VERSION_MISMATCH)
            message = kind.unpack(request)
        except Malformed as exc:
            self._note(f"<- malformed ({exc}): {request.hex()}")
            return self._error(state, ErrorCode.INVALID_REQUEST)
        self._note(f"<- {message}")
        code, raw = Code(header.code), request[:len(message.pack())]
        refused = self._out_of_order(state, code, raw)
        if refused is not None:
            return refused
        handler = getattr(self, f"_on_{code.name.lower()}")
        response: bytes = handler(state, message, raw)
        if code in VCA_ORDER and response[1] != Code.ERROR:
            state.phase, state.answered[code] = code, (raw, response)
        return response

    def _out_of_order(self, state: _Connection, code: Code, raw: bytes) -> bytes | None:
        """The ERROR a request gets for its place in the connection, or None to answer it
        (DSP0274 1.2 §10.2 and table 48): VCA in order, an identical VCA retry answered
        again, anything else after VCA only (its version is _wrong_version's business)."""
        if code is Code.GET_VERSION:
            return None
        if code in VCA_ORDER:
            if code in state.answered:
                earlier, answer = state.answered[code]
                if earlier == raw:  # a retry: the same answer, the transcript unchanged
                    self._note(f"-> the same answer again ({len(answer)} bytes)")
                    return answer
                return self._error(state, ErrorCode.UNEXPECTED_REQUEST)
            previous = VCA_ORDER[VCA_ORDER.index(code) - 1] if code in VCA_ORDER[1:] else None
            if state.phase is not previous:
                return self._error(state, ErrorCode.UNEXPECTED_REQUEST)
            return None
        if state.phase is not Code.NEGOTIATE_ALGORITHMS:
            return self._error(state, ErrorCode.UNEXPECTED_REQUEST)
        return None

    @staticmethod
    def _wrong_version(state: _Connection, header: Header) -> str:
        """GET_VERSION is always 1.0; GET_CAPABILITIES picks a version VERSION offered (1.2
        only); everything after it is in the version it picked."""
        if header.code == Code.GET_VERSION:
            return ""
        if header.code == Code.GET_CAPABILITIES:
            wanted = VERSION_12
        elif state.version == VERSION_10:
            return ""  # nothing settled yet: out of order, which _out_of_order says
        else:
            wanted = state.version
        return "" if header.version == wanted else \
            f"version {header.version >> 4}.{header.version & 0xF}, not " \
            f"{wanted >> 4}.{wanted & 0xF}"

    def _send(self, message: Message, raw: bytes | None = None) -> bytes:
        self._note(f"-> {message}" if raw is None else f"-> {message} (sent as {len(raw)} "
                   "bytes)")
        return message.pack() if raw is None else raw

    def _error(self, state: _Connection, code: ErrorCode, data: int = 0) -> bytes:
        return self._send(Error(code, data, version=state.version))

    def _on_get_version(self, state: _Connection, message: Message, raw: bytes) -> bytes:
        state.reset()
        response = Version((VERSION_12,)).pack()
        state.vca = raw + response
        return self._send(Version((VERSION_12,)))

    def _on_get_capabilities(self, state: _Connection, message: Message, raw: bytes) -> bytes:
        assert isinstance(message, GetCapabilities)
        problem = _invalid_requester_caps(message)
        if problem:  # in the version asked for, which VERSION offered
            self._note(f"   invalid: {problem}")
            return self._send(Error(ErrorCode.INVALID_REQUEST, version=message.version))
        state.version = message.version
        response = Capabilities(0, Cap.CERT | Cap.CHAL | Cap.MEAS_SIG, 0x1200, 0x1200)
        state.vca += raw + response.pack()
        return self._send(response)

    def _on_negotiate_algorithms(self, state: _Connection, message: Message, raw: bytes
                                 ) -> bytes:
        assert isinstance(message, NegotiateAlgorithms)
        problem = message.invalid()
        if problem:
            self._note(f"   invalid: {problem}")
            return self._error(state, ErrorCode.INVALID_REQUEST)
        if not message.base_asym & self.asym or not message.base_hash & self.base_hash:
            self._note(f"   the requester offers asym {message.base_asym:#x}, hash "
                       f"{message.base_hash:#x}; this responder has only {self.asym.name}, "
                       f"{self.base_hash.name}")
            return self._error(state, ErrorCode.UNSPECIFIED)
        state.asym, state.hash = self.asym, self.base_hash
        response = Algorithms(measurement_hash=MEAS_HASH_FOR[self.base_hash],
                              base_asym=self.asym, base_hash=self.base_hash)
        state.vca += raw + response.pack()
        return self._send(response)

    def _chain(self, state: _Connection) -> Chain:
        chain = self.chains.get(self.personality, self.chains[Personality.GOOD])
        state.chain = chain
        return chain

    def _on_get_digests(self, state: _Connection, message: Message, raw: bytes) -> bytes:
        assert state.hash is not None
        response = Digests((digest(state.hash, self._chain(state).slot_bytes(state.hash)),))
        state.m1 = raw + response.pack()
        return self._send(response)

    def _on_get_certificate(self, state: _Connection, message: Message, raw: bytes) -> bytes:
        assert isinstance(message, GetCertificate)
        if message.slot != 0:
            return self._error(state, ErrorCode.INVALID_REQUEST)
        assert state.hash is not None
        blob = self._chain(state).slot_bytes(state.hash)
        if message.offset >= len(blob):
            return self._error(state, ErrorCode.INVALID_REQUEST)
        portion = blob[message.offset:message.offset + min(message.length, PORTION_MAX)]
        response = Certificate(0, portion, len(blob) - message.offset - len(portion))
        state.m1 += raw + response.pack()
        if self.personality is Personality.TRUNCATED:
            return self._send(response, response.pack()[:-16])
        return self._send(response)

    def _on_challenge(self, state: _Connection, message: Message, raw: bytes) -> bytes:
        assert isinstance(message, Challenge)
        if message.slot != 0 or message.summary_type not in (0x00, 0x01, 0xFF):
            return self._error(state, ErrorCode.INVALID_REQUEST)
        assert state.hash is not None
        chain = state.chain or self._chain(state)
        summary = b""
        if message.summary_type:
            # the hash of the measurement blocks (0xFF: all; 0x01: those of the TCB, which
            # here are all of them too: immutable ROM and mutable firmware)
            summary = digest(state.hash, b"".join(
                b.pack() for b in self._blocks(state.hash, state.measured)))
        unsigned = ChallengeAuth(0, 0x01, digest(state.hash, chain.slot_bytes(state.hash)),
                                 secrets.token_bytes(NONCE_LEN), summary)
        transcript = state.vca + state.m1 + raw + unsigned.signed_part()
        signature = sign(chain.leaf_key, state.hash, signing_message(
            state.version, CHALLENGE_AUTH_CONTEXT, digest(state.hash, transcript)))
        if self.personality is Personality.BAD_SIGNATURE:
            signature = bytes((signature[0] ^ 0x01,)) + signature[1:]
        state.m1 = b""
        if self.personality is Personality.STALL:
            self._note(f"   stalling {self.stall_seconds:g}s before CHALLENGE_AUTH")
            if self._closing.wait(self.stall_seconds):  # close() ends the stall at once
                raise OSError("the responder is closing")
        return self._send(ChallengeAuth(
            unsigned.slot, unsigned.slot_mask, unsigned.cert_chain_hash, unsigned.nonce,
            summary, signature=signature))

    def _blocks(self, base_hash: Hash, count: int) -> tuple[MeasurementBlock, ...]:
        """The device's measurements: its ROM, and its firmware (which the
        changing-measurements personality rebuilds at every `count`)."""
        firmware = b"cocolab nvme firmware 1.0"
        if self.personality is Personality.CHANGING_MEASUREMENTS:
            firmware += f" build {count}".encode()
        return (MeasurementBlock(1, 0x00, digest(base_hash, b"cocolab nvme rom")),
                MeasurementBlock(2, 0x01, digest(base_hash, firmware)))

    def _on_get_measurements(self, state: _Connection, message: Message, raw: bytes
                             ) -> bytes:
        assert isinstance(message, GetMeasurements)
        assert state.hash is not None
        if message.signed and message.slot != 0:  # one slot, 0
            return self._error(state, ErrorCode.INVALID_REQUEST)
        state.measured += 1
        blocks = self._blocks(state.hash, state.measured)
        if message.operation == 0:
            response = Measurements(total=len(blocks), nonce=secrets.token_bytes(NONCE_LEN))
        elif message.operation == 0xFF:
            response = Measurements(blocks=blocks, nonce=secrets.token_bytes(NONCE_LEN))
        elif 1 <= message.operation <= len(blocks):
            response = Measurements(blocks=blocks[message.operation - 1:message.operation],
                                    nonce=secrets.token_bytes(NONCE_LEN))
        else:
            return self._error(state, ErrorCode.INVALID_REQUEST)
        if not message.signed:
            state.l1 += raw + response.pack()
            return self._send(response)
        chain = state.chain or self._chain(state)
        transcript = state.vca + state.l1 + raw + response.signed_part()
        state.l1 = b""
        signature = sign(chain.leaf_key, state.hash, signing_message(
            state.version, MEASUREMENTS_CONTEXT, digest(state.hash, transcript)))
        return self._send(Measurements(response.total, response.slot, response.blocks,
                                              response.nonce, signature=signature))


def _invalid_requester_caps(message: GetCapabilities) -> str:
    """Why a GET_CAPABILITIES breaks DSP0274 1.2 table 10's rules, or "" (those checked
    here: the transfer sizes and the flags that need one another)."""
    flags = message.flags
    if not MIN_DATA_TRANSFER_SIZE <= message.data_transfer_size <= message.max_spdm_msg_size:
        return (f"DataTransferSize {message.data_transfer_size} is under "
                f"{MIN_DATA_TRANSFER_SIZE} or over MaxSPDMmsgSize {message.max_spdm_msg_size}")
    if not flags & Cap.CHUNK and message.data_transfer_size != message.max_spdm_msg_size:
        return (f"DataTransferSize {message.data_transfer_size} and MaxSPDMmsgSize "
                f"{message.max_spdm_msg_size} differ, and the requester has no CHUNK_CAP")
    secure = bool(flags & (Cap.ENCRYPT | Cap.MAC))
    exchange = bool(flags & (Cap.KEY_EX | Cap.PSK))
    if secure != exchange:
        return f"flags {flags:#x}: ENCRYPT_CAP or MAC_CAP goes with KEY_EX_CAP or PSK_CAP"
    if flags & Cap.PSK == Cap.PSK:
        return f"flags {flags:#x}: PSK_CAP 11b is reserved"
    if flags & Cap.HANDSHAKE_IN_THE_CLEAR and not flags & Cap.KEY_EX:
        return f"flags {flags:#x}: HANDSHAKE_IN_THE_CLEAR_CAP needs KEY_EX_CAP"
    if flags & Cap.CERT and flags & Cap.PUB_KEY_ID:
        return f"flags {flags:#x}: CERT_CAP and PUB_KEY_ID_CAP exclude each other"
    return ""

