"""cocolab.spdm without QEMU: the socket framing, the DOE object, every SPDM message against
bytes written out by hand from DSP0274 1.2's tables (not produced by the code under test),
the signing message of §15, and the responder over a real loopback socket, driven by a
requester written here from the specification."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cocolab.spdm import Personality, Responder
from cocolab.spdm.certs import CMA_SAN_OID, QEMU_NVME_SAN
from cocolab.spdm.messages import (
    Algorithms,
    Asym,
    Cap,
    Capabilities,
    Certificate,
    Challenge,
    ChallengeAuth,
    Digests,
    Error,
    ErrorCode,
    GetCapabilities,
    GetCertificate,
    GetDigests,
    GetMeasurements,
    GetVersion,
    Hash,
    Malformed,
    MeasHash,
    MeasurementBlock,
    Measurements,
    NegotiateAlgorithms,
    Version,
    cert_chain,
)
from cocolab.spdm.signing import sign, signing_message, verify
from cocolab.spdm.transport import DataObject, Frame, FramingError, read_frame

H = bytes.fromhex


# --- framing ---------------------------------------------------------------------------


def test_a_frame_is_three_big_endian_words_then_the_payload() -> None:
    assert Frame(0x0001, 0x02, b"\xab\xcd").pack() == H("00000001 00000002 00000002 abcd")


def test_a_frame_is_read_back_across_short_reads() -> None:
    a, b = socket.socketpair()
    with a, b:
        raw = H("00000001 00000002 00000003 010203")
        for byte in raw:  # one byte at a time
            a.send(bytes((byte,)))
        assert read_frame(b) == Frame(1, 2, H("010203"))
        a.close()
        assert read_frame(b) is None  # closed between frames: the end, not an error


def test_a_frame_cut_short_is_a_framing_error() -> None:
    a, b = socket.socketpair()
    with b:
        a.sendall(H("00000001 00000002 00000008 0102"))
        a.close()
        with pytest.raises(FramingError, match="closed after 2 of 8 bytes"):
            read_frame(b)


def test_an_oversized_frame_is_refused_before_it_is_read() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(H("00000001 00000002 00100000"))
        with pytest.raises(FramingError, match="larger than QEMU's"):
            read_frame(b)


def test_a_doe_object_header_counts_dwords_and_pads_the_message() -> None:
    # PCIe r6.0 §6.30.1: vendor 0001h, type 01h (CMA/SPDM), reserved, length 3 dwords
    assert DataObject(1, H("10840000")).pack() == H("0100 01 00 03000000 10840000")
    # 5 bytes of message: padded to 8, length 4 dwords
    assert DataObject(1, H("1281000001")).pack() == H("0100 01 00 04000000 12810000 01000000")
    assert DataObject.unpack(H("0100 01 00 03000000 10840000")) == DataObject(1, H("10840000"))


@pytest.mark.parametrize("raw", [H("0100 01 00 04000000 10840000"), H("0100 01 00"),
                                 H("0100 01 00 03000000 108400")])
def test_a_doe_object_whose_length_lies_is_refused(raw: bytes) -> None:
    with pytest.raises(FramingError):
        DataObject.unpack(raw)


# --- messages, byte for byte -----------------------------------------------------------

NONCE = bytes(range(32))
DIGEST48 = bytes(range(0x40, 0x70))

CASES = [
    # §10.3 table 8: GET_VERSION is always version 1.0
    (GetVersion(), "10 84 00 00"),
    # table 9: reserved, 1 entry, 0x1200 little-endian
    (Version((0x12,)), "10 04 00 00 00 01 0012"),
    (Version((0x11, 0x12)), "10 04 00 00 00 02 0011 0012"),
    # table 10: reserved, CTExponent, reserved(2), Flags, DataTransferSize, MaxSPDMmsgSize
    (GetCapabilities(0, 0, 0x1000, 0x1000), "12 e1 00 00 00 00 0000 00000000 00100000 00100000"),
    # table 11: CERT_CAP (bit 1), CHAL_CAP (bit 2), MEAS_CAP=10b (bits 4:3) = 0x16
    (Capabilities(0x0C, Cap.CERT | Cap.CHAL | Cap.MEAS_SIG, 0x1200, 0x1200),
     "12 61 00 00 00 0c 0000 16000000 00120000 00120000"),
    # table 14: Length 32, DMTF measurements, P-256 (bit 4) | P-384 (bit 7), SHA-256 | SHA-384
    (NegotiateAlgorithms(1, Asym.ECDSA_P256 | Asym.ECDSA_P384, Hash.SHA_256 | Hash.SHA_384),
     "12 e3 00 00 2000 01 00 90000000 03000000" + " 00" * 12 + " 00 00 0000"),
    # table 17: Length 36, MeasurementHashAlgo SHA-384 (bit 2), P-384, SHA-384
    (Algorithms(1, MeasHash.SHA_384, Asym.ECDSA_P384, Hash.SHA_384),
     "12 63 00 00 2400 01 00 04000000 80000000 02000000" + " 00" * 12 + " 00 00 0000"),
    # tables 24, 25: slot mask 01, one digest
    (GetDigests(), "12 81 00 00"),
    (Digests((DIGEST48,), 0x01), "12 01 00 01 " + DIGEST48.hex()),
    # table 27: slot 0, Offset 0x200, Length 0x200
    (GetCertificate(0, 0x200, 0x200), "12 82 00 00 0002 0002"),
    # table 28: PortionLength 3, RemainderLength 0x105
    (Certificate(0, b"abc", 0x105), "12 02 00 00 0300 0501 616263"),
    # table 29: slot 0, no measurement summary hash, nonce
    (Challenge(0, 0, NONCE), "12 83 00 00 " + NONCE.hex()),
    # table 47
    (Error(ErrorCode.UNEXPECTED_REQUEST, 0), "12 7f 04 00"),
    # table 40: signature requested, every block, nonce, slot 0
    (GetMeasurements(True, 0xFF, NONCE, 0), "12 e0 01 ff " + NONCE.hex() + " 00"),
    (GetMeasurements(False, 0x00), "12 e0 00 00"),
]


@pytest.mark.parametrize(("message", "spelled"), CASES, ids=lambda v: type(v).__name__
                         if not isinstance(v, str) else "")
def test_each_message_is_the_specifications_bytes_and_back(message: object,
                                                           spelled: str) -> None:
    raw = H(spelled)
    assert message.pack() == raw  # type: ignore[attr-defined]
    kind = type(message)
    if kind is Digests:
        assert Digests.unpack_with(raw, 48) == message
    else:
        assert kind.unpack(raw) == message  # type: ignore[attr-defined]


def test_challenge_auth_is_chain_hash_nonce_opaque_then_signature() -> None:
    sig = bytes([0x5A]) * 96
    auth = ChallengeAuth(0, 0x01, DIGEST48, NONCE, b"", b"", sig)
    # table 30: slot 0, slot mask 1, CertChainHash (48), Nonce (32), no summary hash,
    # OpaqueDataLength 0, Signature (96 for P-384)
    spelled = H("12 03 00 01" + DIGEST48.hex() + NONCE.hex() + "0000" + sig.hex())
    assert auth.pack() == spelled
    assert auth.signed_part() == spelled[:-96]
    assert ChallengeAuth.unpack_with(spelled, 48, 96, summary=False) == auth
    with pytest.raises(Malformed, match="Signature"):
        ChallengeAuth.unpack_with(spelled[:-1], 48, 96, summary=False)


def test_measurements_carry_dmtf_blocks_and_a_three_byte_record_length() -> None:
    block = MeasurementBlock(1, 0x01, H("abababab"))
    # table 43/45: Index 1, spec DMTF, size 7; DMTF type 01h (mutable firmware), size 4, value
    assert block.pack() == H("01 01 0700 01 0400 abababab")
    sig = bytes([0x33]) * 64
    meas = Measurements(0, 0, (block,), NONCE, b"", sig)
    spelled = H("12 60 00 00 01 0b0000 " + block.pack().hex() + NONCE.hex() + "0000" + sig.hex())
    assert meas.pack() == spelled
    assert Measurements.unpack_with(spelled, 64) == meas
    with pytest.raises(Malformed, match="MeasurementRecordLength"):
        MeasurementBlock.unpack_all(block.pack() + b"\0", 1)


def test_the_chain_format_is_length_reserved_root_hash_then_certificates() -> None:
    # table 26: Length (of all of it) 2 bytes, Reserved 2, RootHash, certificates
    assert cert_chain([b"R", b"L"], H("aaaa")) == H("0800 0000 aaaa 52 4c")


@pytest.mark.parametrize("raw", ["12 82 00", "12 02 00 00 0500 0000 6162", "12 e3 00 00 4000"
                                 + " 00" * 28])
def test_short_or_inconsistent_messages_are_malformed(raw: str) -> None:
    kind = {0x82: GetCertificate, 0x02: Certificate, 0xE3: NegotiateAlgorithms}[H(raw)[1]]
    with pytest.raises(Malformed):
        kind.unpack(H(raw))


def test_a_length_field_tolerates_doe_padding_but_no_more() -> None:
    raw = NegotiateAlgorithms().pack()
    assert NegotiateAlgorithms.unpack(raw + b"\0\0\0") == NegotiateAlgorithms()
    with pytest.raises(Malformed):
        NegotiateAlgorithms.unpack(raw + b"\0\0\0\0")


# --- §15: what a signature covers -------------------------------------------------------


def test_the_signing_message_is_prefix_padding_context_then_digest() -> None:
    th = hashlib.sha384(b"transcript").digest()
    msg = signing_message(0x12, b"responder-challenge_auth signing", th)
    assert msg[:64] == b"dmtf-spdm-v1.2.*" * 4
    assert msg[64:68] == bytes(4)  # 36 - 32 bytes of context
    assert msg[68:100] == b"responder-challenge_auth signing"
    assert msg[100:] == th and len(msg) == 148
    meas = signing_message(0x12, b"responder-measurements signing", th)
    assert meas[64:70] == bytes(6) and meas[70:100] == b"responder-measurements signing"


@pytest.mark.parametrize(("curve", "base_hash", "size"), [(ec.SECP256R1, Hash.SHA_256, 64),
                                                          (ec.SECP384R1, Hash.SHA_384, 96)])
def test_signatures_are_raw_r_and_s_and_a_flipped_bit_fails(curve: type[ec.EllipticCurve],
                                                            base_hash: Hash, size: int) -> None:
    key = ec.generate_private_key(curve())
    sig = sign(key, base_hash, b"message")
    assert len(sig) == size
    assert verify(key.public_key(), base_hash, b"message", sig)
    assert not verify(key.public_key(), base_hash, b"message", bytes((sig[0] ^ 1,)) + sig[1:])
    assert not verify(key.public_key(), base_hash, b"another message", sig)


# --- the responder, driven over loopback by a requester written from the spec ----------


class SpecRequester:
    """The requester side, straight from DSP0274 1.2, raw bytes in and out."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.vca = b""

    def exchange(self, request: bytes) -> bytes:
        self.sock.sendall(Frame(1, 2, DataObject(1, request).pack()).pack())
        frame = read_frame(self.sock)
        assert frame is not None and frame.command == 1 and frame.transport == 2
        return DataObject.unpack(frame.payload).data

    def connect(self) -> None:
        for request, size in ((H("10840000"), 8), (GetCapabilities().pack(), 20),
                              (NegotiateAlgorithms().pack(), 36)):
            response = self.exchange(request)
            self.vca += request + response[:size]

    def authenticate(self) -> tuple[str, str]:
        """(the step that failed or 'done', why)."""
        self.connect()
        m1 = H("12810000")
        digests = self.exchange(m1)
        m1 += digests[:4 + 48]
        chain = b""
        while True:
            request = GetCertificate(0, len(chain), 0x200).pack()
            response = self.exchange(request)
            portion, remainder = struct.unpack("<HH", response[4:8])
            if len(response) < 8 + portion:
                return "certificate", "truncated"
            m1 += request + response[:8 + portion]
            chain += response[8:8 + portion]
            if not remainder:
                break
        if hashlib.sha384(chain).digest() != digests[4:52]:
            return "digests", "chain does not match its digest"
        leaf = x509.load_der_x509_certificate(self._certs(chain)[-1])
        request = H("12830000") + os.urandom(32)
        auth = self.exchange(request)
        signed = auth[:4 + 48 + 32 + 2]
        message = signing_message(0x12, b"responder-challenge_auth signing",
                                  hashlib.sha384(self.vca + m1 + request + signed).digest())
        key = leaf.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        if not verify(key, Hash.SHA_384, message, auth[len(signed):len(signed) + 96]):
            return "challenge", "bad signature"
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.value for n in san if isinstance(n, x509.OtherName)
                 and n.type_id == CMA_SAN_OID]
        if names != [b"\x0c" + bytes((len(QEMU_NVME_SAN),)) + QEMU_NVME_SAN.encode()]:
            return "san", f"{names}"
        return "done", ""

    @staticmethod
    def _certs(chain: bytes) -> list[bytes]:
        body, out = chain[4 + 48:], []
        while body:
            # DER SEQUENCE with a two-byte long-form length (0x30 0x82 hi lo)
            assert body[0] == 0x30 and body[1] == 0x82
            n = 4 + int.from_bytes(body[2:4], "big")
            out.append(body[:n])
            body = body[n:]
        return out


@pytest.fixture
def responder(tmp_path) -> Iterator[Responder]:  # type: ignore[no-untyped-def]
    with Responder(tmp_path / "spdm.log", stall_seconds=0.5) as r:
        yield r


def test_the_good_responder_authenticates_to_a_requester_from_the_spec(
        responder: Responder) -> None:
    assert SpecRequester(responder.port).authenticate() == ("done", "")
    log = responder.log_path.read_text()  # type: ignore[union-attr]
    assert "<- GET_VERSION v1.0" in log and "-> CHALLENGE_AUTH v1.2" in log


@pytest.mark.parametrize(("personality", "step"), [("bad-signature", "challenge"),
                                                   ("truncated", "certificate"),
                                                   ("wrong-san", "san")])
def test_a_bad_personality_fails_the_spec_requester_where_it_should(
        responder: Responder, personality: str, step: str) -> None:
    responder.set_personality(personality)
    assert SpecRequester(responder.port).authenticate()[0] == step


def test_requests_before_algorithms_are_unexpected(responder: Responder) -> None:
    requester = SpecRequester(responder.port)
    # UnexpectedRequest, in version 1.0: nothing is negotiated yet
    assert requester.exchange(H("12810000")) == H("107f0400")


def test_an_unknown_request_is_unsupported_and_the_connection_lives(
        responder: Responder) -> None:
    requester = SpecRequester(responder.port)
    assert requester.exchange(H("12fe0000"))[:3] == H("107f07")
    assert requester.exchange(H("10840000")) == H("10040000 00010012")


def test_the_stall_personality_answers_late(responder: Responder) -> None:
    requester = SpecRequester(responder.port)
    requester.connect()
    responder.set_personality(Personality.STALL)
    start = time.monotonic()
    assert requester.exchange(H("12830000") + bytes(32))[1] == 0x03
    assert time.monotonic() - start >= 0.5


def _serving_threads(responder: Responder) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"spdm-{responder.port}-")]


def test_a_closed_connection_is_forgotten_and_its_thread_ends(responder: Responder) -> None:
    requester = SpecRequester(responder.port)
    requester.exchange(H("10840000"))
    assert responder.connections == 1
    requester.sock.close()
    deadline = time.monotonic() + 30
    while responder.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert responder.connections == 0
    for thread in _serving_threads(responder):
        thread.join(timeout=30)
    assert _serving_threads(responder) == []


def test_close_cuts_a_stall_short_and_joins_every_thread(tmp_path: Path) -> None:
    responder = Responder(tmp_path / "spdm.log", stall_seconds=60)
    requester = SpecRequester(responder.port)
    requester.connect()
    responder.set_personality(Personality.STALL)
    requester.sock.sendall(Frame(1, 2, DataObject(1, H("12830000") + bytes(32)).pack()).pack())
    deadline = time.monotonic() + 30
    while "stalling" not in (tmp_path / "spdm.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    responder.close()
    assert time.monotonic() - start < 30  # the stall was 60 s: close() did not wait it out
    assert _serving_threads(responder) == [] and responder.connections == 0
    assert read_frame(requester.sock) is None  # the requester sees the connection end


def test_measurements_change_only_for_that_personality(responder: Responder) -> None:
    requester = SpecRequester(responder.port)
    requester.connect()
    ask = GetMeasurements(False, 0xFF).pack()
    first, second = (Measurements.unpack_with(requester.exchange(ask), 0).blocks
                     for _ in range(2))
    assert first == second
    responder.set_personality("changing-measurements")
    third, fourth = (Measurements.unpack_with(requester.exchange(ask), 0).blocks
                     for _ in range(2))
    assert third != fourth


def test_close_drops_the_listener(tmp_path) -> None:  # type: ignore[no-untyped-def]
    responder = Responder()
    port = responder.port
    responder.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_doe_discovery_walks_discovery_cma_and_secured_cma(responder: Responder) -> None:
    """QEMU answers discovery itself; a socket requester (spdm-emu's) asks the responder."""
    requester = SpecRequester(responder.port)
    seen, index = [], 0
    for _ in range(4):
        requester.sock.sendall(Frame(1, 2, DataObject(0, bytes((index, 0, 0, 0))).pack()).pack())
        frame = read_frame(requester.sock)
        assert frame is not None
        answer = DataObject.unpack(frame.payload)
        assert answer.kind == 0
        # dword: vendor 0001h, type, next index
        seen.append(answer.data[:3].hex())
        index = answer.data[3]
        if not index:
            break
    assert seen == ["010000", "010001", "010002"]


def test_negotiate_algorithms_keeps_its_alg_struct_tables_for_the_transcript() -> None:
    """libspdm's requester sends DHE, AEAD, ReqBaseAsymAlg and KeySchedule tables (table 16:
    AlgType, AlgCount, AlgSupported(2)); the responder must sign over them as they came."""
    tables = H("02 20 1000  03 20 0200  04 20 0400  05 20 0100")
    raw = H("12 e3 04 00 3000 01 02 80000000 02000000" + " 00" * 12 + " 00 00 0000") + tables
    message = NegotiateAlgorithms.unpack(raw)
    assert (message.alg_structs, message.other_params, message.tables) == (4, 2, tables)
    assert message.pack() == raw


def test_vca_comes_in_order_and_later_requests_in_the_negotiated_version(
        responder: Responder) -> None:
    """What DMTF's SPDM-Responder-Validator checks (cases 2.2, 2.6, 4.2, 3.4)."""
    requester = SpecRequester(responder.port)
    assert requester.exchange(H("10840000"))[1] == 0x04
    # GET_CAPABILITIES in 1.1 after VERSION offered only 1.2: VersionMismatch, in 1.0
    assert requester.exchange(GetCapabilities(version=0x11).pack()) == H("107f4100")
    # DataTransferSize under MinDataTransferSize (42): InvalidRequest, in the version asked
    assert requester.exchange(GetCapabilities(0, 0, 41, 0x1000).pack())[:3] == H("127f01")
    # without CHUNK_CAP, DataTransferSize and MaxSPDMmsgSize must be equal
    assert requester.exchange(GetCapabilities(0, 0, 0x1000, 0x2000).pack())[:3] == H("127f01")
    capabilities = requester.exchange(GetCapabilities().pack())
    assert capabilities[1] == 0x61
    # an identical retry gets the same answer; a different one is unexpected
    assert requester.exchange(GetCapabilities().pack()) == capabilities
    assert requester.exchange(GetCapabilities(1).pack()) == H("127f0400")
    # an AlgStruct with AlgCount 0x10 (one byte of fixed algorithms): InvalidRequest
    bad = NegotiateAlgorithms(alg_structs=1, tables=H("02 10 0000"))
    assert requester.exchange(bad.pack())[:3] == H("127f01")
    assert requester.exchange(NegotiateAlgorithms().pack())[1] == 0x63
    # after VCA, a request in another version than 1.2: VersionMismatch
    assert requester.exchange(H("11810000")) == H("127f4100")
    assert requester.exchange(H("12810000"))[1] == 0x01  # and in 1.2, DIGESTS
