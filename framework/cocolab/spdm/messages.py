"""SPDM 1.2 messages (DMTF DSP0274 1.2), encoded and decoded: the ones a CMA requester sends
before it trusts a device, and their responses. Each class is one message; `pack()` gives its
bytes, `unpack()` reads them back, raising Malformed on anything short or inconsistent.

Field layouts are DSP0274 1.2's tables (section numbers in each docstring). Integers are
little-endian, as SPDM's are.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field, fields
from typing import ClassVar, TypeVar

VERSION_10 = 0x10
VERSION_12 = 0x12
NONCE_LEN = 32


class Malformed(ValueError):
    """Bytes that are not the message they claim to be."""


class Code(enum.IntEnum):
    """RequestResponseCode (DSP0274 1.2 tables 4 and 5)."""

    DIGESTS = 0x01
    CERTIFICATE = 0x02
    CHALLENGE_AUTH = 0x03
    VERSION = 0x04
    MEASUREMENTS = 0x60
    CAPABILITIES = 0x61
    ALGORITHMS = 0x63
    ERROR = 0x7F
    GET_DIGESTS = 0x81
    GET_CERTIFICATE = 0x82
    CHALLENGE = 0x83
    GET_VERSION = 0x84
    GET_MEASUREMENTS = 0xE0
    GET_CAPABILITIES = 0xE1
    NEGOTIATE_ALGORITHMS = 0xE3


class ErrorCode(enum.IntEnum):
    """ERROR's Param1 (DSP0274 1.2 table 48), the ones this responder sends."""

    INVALID_REQUEST = 0x01
    BUSY = 0x03
    UNEXPECTED_REQUEST = 0x04
    UNSPECIFIED = 0x05
    UNSUPPORTED_REQUEST = 0x07
    VERSION_MISMATCH = 0x41


class Cap(enum.IntFlag):
    """Capability flags (DSP0274 1.2 tables 10 and 11: requester and responder put the ones
    used here at the same bits)."""

    CACHE = 1 << 0
    CERT = 1 << 1
    CHAL = 1 << 2
    MEAS_NO_SIG = 1 << 3
    MEAS_SIG = 2 << 3
    MEAS_FRESH = 1 << 5
    ENCRYPT = 1 << 6
    MAC = 1 << 7
    KEY_EX = 1 << 9
    PSK = 3 << 10
    HANDSHAKE_IN_THE_CLEAR = 1 << 15
    PUB_KEY_ID = 1 << 16
    CHUNK = 1 << 17


class Asym(enum.IntFlag):
    """BaseAsymAlgo (DSP0274 1.2 table 15)."""

    RSASSA_2048 = 1 << 0
    RSAPSS_2048 = 1 << 1
    RSASSA_3072 = 1 << 2
    RSAPSS_3072 = 1 << 3
    ECDSA_P256 = 1 << 4
    RSASSA_4096 = 1 << 5
    RSAPSS_4096 = 1 << 6
    ECDSA_P384 = 1 << 7
    ECDSA_P521 = 1 << 8


class Hash(enum.IntFlag):
    """BaseHashAlgo (DSP0274 1.2 table 15)."""

    SHA_256 = 1 << 0
    SHA_384 = 1 << 1
    SHA_512 = 1 << 2


class MeasHash(enum.IntFlag):
    """MeasurementHashAlgo (DSP0274 1.2 table 18)."""

    RAW = 1 << 0
    SHA_256 = 1 << 1
    SHA_384 = 1 << 2
    SHA_512 = 1 << 3


MEAS_SPEC_DMTF = 0x01
HASH_LEN = {Hash.SHA_256: 32, Hash.SHA_384: 48, Hash.SHA_512: 64}
SIG_LEN = {Asym.ECDSA_P256: 64, Asym.ECDSA_P384: 96}


@dataclass(frozen=True)
class Header:
    """The four bytes every SPDM message starts with (DSP0274 1.2 table 3)."""

    version: int
    code: int
    param1: int = 0
    param2: int = 0

    def pack(self) -> bytes:
        return bytes((self.version, self.code, self.param1, self.param2))

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        if len(data) < 4:
            raise Malformed(f"{len(data)} bytes: shorter than an SPDM header (4)")
        return cls(*data[:4])

    def __str__(self) -> str:
        try:
            name = Code(self.code).name
        except ValueError:
            name = f"code {self.code:#04x}"
        return f"{name} v{self.version >> 4}.{self.version & 0xF}"


def _take(data: bytes, offset: int, n: int, what: str) -> bytes:
    if offset + n > len(data):
        raise Malformed(f"{what}: needs bytes {offset}..{offset + n}, the message has "
                        f"{len(data)}")
    return data[offset:offset + n]


def _check_length(length: int, data: bytes) -> None:
    """A Length field against the bytes that came (a DOE object pads them to a dword)."""
    if not 0 <= len(data) - length < 4:
        raise Malformed(f"Length says {length} bytes, the message has {len(data)}")


Msg = TypeVar("Msg", bound="Message")


@dataclass(frozen=True)
class Message:
    """Base: a message knows its code and which version byte it carries."""

    CODE: ClassVar[Code]
    version: int = field(default=VERSION_12, kw_only=True)

    def header(self, param1: int = 0, param2: int = 0) -> bytes:
        return Header(self.version, self.CODE, param1, param2).pack()

    def pack(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def unpack(cls: type[Msg], data: bytes) -> Msg:
        raise NotImplementedError

    def __str__(self) -> str:
        """The message as the responder's log shows it: its name, version and fields, long
        byte strings cut to their first 16 bytes."""
        parts = []
        for f in fields(self):
            if f.name == "version":
                continue
            name, value = f.name, getattr(self, f.name)
            if name == "versions":
                text = ", ".join(f"{v >> 4}.{v & 0xF}" for v in value)
            elif isinstance(value, bytes):
                text = value.hex() if len(value) <= 16 else f"{value[:16].hex()}..({len(value)})"
            elif isinstance(value, tuple) and value and isinstance(value[0], bytes):
                text = "[" + ", ".join(v[:8].hex() + ".." for v in value) + "]"
            elif isinstance(value, tuple):
                text = "[" + ", ".join(str(v) for v in value) + "]"
            elif isinstance(value, enum.IntFlag):
                text = "|".join(f.name or "" for f in type(value) if f in value) or "0"
            else:
                text = str(value)
            parts.append(f"{name}={text}")
        return (f"{self.CODE.name} v{self.version >> 4}.{self.version & 0xF}"
                + (" " + " ".join(parts) if parts else ""))

    @classmethod
    def _check(cls, data: bytes) -> Header:
        header = Header.unpack(data)
        if header.code != cls.CODE:
            raise Malformed(f"expected {cls.CODE.name}, got {header}")
        return header


# --- VCA: version, capabilities, algorithms -----------------------------------------------


@dataclass(frozen=True)
class GetVersion(Message):
    """DSP0274 1.2 §10.3, table 8: always version 1.0."""

    CODE: ClassVar[Code] = Code.GET_VERSION
    version: int = field(default=VERSION_10, kw_only=True)

    def pack(self) -> bytes:
        return self.header()

    @classmethod
    def unpack(cls, data: bytes) -> GetVersion:
        return cls(version=cls._check(data).version)


@dataclass(frozen=True)
class Version(Message):
    """Table 9: Reserved, VersionNumberEntryCount, then u16 entries (major<<12 | minor<<8 |
    update<<4 | alpha)."""

    CODE: ClassVar[Code] = Code.VERSION
    versions: tuple[int, ...] = (VERSION_12,)
    version: int = field(default=VERSION_10, kw_only=True)

    def pack(self) -> bytes:
        entries = b"".join(struct.pack("<H", v << 8) for v in self.versions)
        return self.header() + bytes((0, len(self.versions))) + entries

    @classmethod
    def unpack(cls, data: bytes) -> Version:
        header = cls._check(data)
        count = _take(data, 5, 1, "VersionNumberEntryCount")[0]
        raw = _take(data, 6, 2 * count, "VersionNumberEntry")
        return cls(tuple(v >> 8 for v in struct.unpack(f"<{count}H", raw)),
                   version=header.version)


@dataclass(frozen=True)
class GetCapabilities(Message):
    """Table 10 (1.2: 20 bytes): Reserved, CTExponent, Reserved(2), Flags(4),
    DataTransferSize(4), MaxSPDMmsgSize(4)."""

    CODE: ClassVar[Code] = Code.GET_CAPABILITIES
    ct_exponent: int = 0
    flags: int = 0
    data_transfer_size: int = 0x1000
    max_spdm_msg_size: int = 0x1000

    def pack(self) -> bytes:
        return self.header() + struct.pack("<BBHIII", 0, self.ct_exponent, 0, self.flags,
                                           self.data_transfer_size, self.max_spdm_msg_size)

    @classmethod
    def unpack(cls, data: bytes) -> GetCapabilities:
        header = cls._check(data)
        _, ct, _, flags, dts, maxm = struct.unpack("<BBHIII", _take(data, 4, 16, "body"))
        return cls(ct, Cap(flags), dts, maxm, version=header.version)


@dataclass(frozen=True)
class Capabilities(GetCapabilities):
    """Table 11: the same layout as the request."""

    CODE: ClassVar[Code] = Code.CAPABILITIES


@dataclass(frozen=True)
class NegotiateAlgorithms(Message):
    """Table 14: Param1 = number of ReqAlgStruct, Length(2), MeasurementSpecification,
    OtherParamsSupport, BaseAsymAlgo(4), BaseHashAlgo(4), Reserved(12), ExtAsymCount,
    ExtHashCount, Reserved(2) (32 bytes so far), then ExtAsym, ExtHash and the AlgStruct
    tables (DHE, AEAD, ReqBaseAsymAlg, KeySchedule), kept as `tables`, byte for byte: they
    are part of the transcript a signature covers, whether or not they are understood here."""

    CODE: ClassVar[Code] = Code.NEGOTIATE_ALGORITHMS
    measurement_spec: int = MEAS_SPEC_DMTF
    base_asym: int = Asym.ECDSA_P256 | Asym.ECDSA_P384
    base_hash: int = Hash.SHA_256 | Hash.SHA_384
    other_params: int = 0
    ext_asym_count: int = 0
    ext_hash_count: int = 0
    alg_structs: int = 0
    tables: bytes = b""

    def pack(self) -> bytes:
        return self.header(self.alg_structs) + struct.pack(
            "<HBBII12xBB2x", 32 + len(self.tables), self.measurement_spec, self.other_params,
            self.base_asym, self.base_hash, self.ext_asym_count,
            self.ext_hash_count) + self.tables

    def invalid(self) -> str:
        """Why the request breaks table 14's rules, or "" (Length at most 128, at most 20
        extended algorithms of each kind, AlgStructs in AlgType order 2..5, each with two
        bytes of fixed algorithms, and nothing left over)."""
        if 32 + len(self.tables) > 128:
            return f"Length {32 + len(self.tables)} is over 128"
        if self.ext_asym_count > 20 or self.ext_hash_count > 20:
            return f"ExtAsymCount {self.ext_asym_count}, ExtHashCount {self.ext_hash_count}: " \
                   "at most 20 each"
        at, last_type = 4 * (self.ext_asym_count + self.ext_hash_count), 1
        for _ in range(self.alg_structs):
            if at + 2 > len(self.tables):
                return f"{self.alg_structs} AlgStructs do not fit in Length"
            alg_type, alg_count = self.tables[at], self.tables[at + 1]
            if not last_type < alg_type <= 5 or alg_count >> 4 != 2:
                return f"AlgStruct type {alg_type}, AlgCount {alg_count:#04x}: types ascend " \
                       "from 2 to 5, each with 2 bytes of fixed algorithms"
            last_type, at = alg_type, at + 4 + 4 * (alg_count & 0xF)
        if at != len(self.tables):
            return f"Length says {32 + len(self.tables)} bytes, the tables fill {32 + at}"
        return ""

    @classmethod
    def unpack(cls, data: bytes) -> NegotiateAlgorithms:
        header = cls._check(data)
        length, spec, other, asym, hsh, ext_a, ext_h = struct.unpack(
            "<HBBII12xBB2x", _take(data, 4, 28, "body"))
        if length < 32:
            raise Malformed(f"Length says {length} bytes, fewer than the 32 it must have")
        _check_length(length, data)
        return cls(spec, Asym(asym), Hash(hsh), other, ext_a, ext_h, header.param1,
                   data[32:length], version=header.version)


@dataclass(frozen=True)
class Algorithms(Message):
    """Table 17 (36 bytes with no extended algorithms or AlgStruct tables): Param1 = number of
    RespAlgStruct, Length(2), MeasurementSpecificationSel, OtherParamsSelection,
    MeasurementHashAlgo(4), BaseAsymSel(4), BaseHashSel(4), Reserved(12), ExtAsymSelCount,
    ExtHashSelCount, Reserved(2)."""

    CODE: ClassVar[Code] = Code.ALGORITHMS
    measurement_spec: int = MEAS_SPEC_DMTF
    measurement_hash: int = MeasHash.SHA_384
    base_asym: int = Asym.ECDSA_P384
    base_hash: int = Hash.SHA_384

    def pack(self) -> bytes:
        return self.header() + struct.pack("<HBBIII12xBB2x", 36, self.measurement_spec, 0,
                                           self.measurement_hash, self.base_asym,
                                           self.base_hash, 0, 0)

    @classmethod
    def unpack(cls, data: bytes) -> Algorithms:
        header = cls._check(data)
        length, spec, _, mhash, asym, hsh, _, _ = struct.unpack(
            "<HBBIII12xBB2x", _take(data, 4, 32, "body"))
        _check_length(length, data)
        return cls(spec, MeasHash(mhash), Asym(asym), Hash(hsh), version=header.version)


# --- certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class GetDigests(Message):
    """§10.6, table 24: the header alone."""

    CODE: ClassVar[Code] = Code.GET_DIGESTS

    def pack(self) -> bytes:
        return self.header()

    @classmethod
    def unpack(cls, data: bytes) -> GetDigests:
        return cls(version=cls._check(data).version)


@dataclass(frozen=True)
class Digests(Message):
    """Table 25: Param2 = slot mask, then one digest per slot set in it."""

    CODE: ClassVar[Code] = Code.DIGESTS
    digests: tuple[bytes, ...] = ()
    slot_mask: int = 0x01

    def pack(self) -> bytes:
        return self.header(0, self.slot_mask) + b"".join(self.digests)

    @classmethod
    def unpack_with(cls, data: bytes, hash_len: int) -> Digests:
        header = cls._check(data)
        n = bin(header.param2).count("1")
        body = _take(data, 4, n * hash_len, "Digest")
        return cls(tuple(body[i * hash_len:(i + 1) * hash_len] for i in range(n)),
                   header.param2, version=header.version)


@dataclass(frozen=True)
class GetCertificate(Message):
    """Table 27: Param1 = slot, Offset(2), Length(2)."""

    CODE: ClassVar[Code] = Code.GET_CERTIFICATE
    slot: int = 0
    offset: int = 0
    length: int = 0xFFFF

    def pack(self) -> bytes:
        return self.header(self.slot) + struct.pack("<HH", self.offset, self.length)

    @classmethod
    def unpack(cls, data: bytes) -> GetCertificate:
        header = cls._check(data)
        offset, length = struct.unpack("<HH", _take(data, 4, 4, "Offset and Length"))
        return cls(header.param1 & 0xF, offset, length, version=header.version)


@dataclass(frozen=True)
class Certificate(Message):
    """Table 28: Param1 = slot, PortionLength(2), RemainderLength(2), the portion."""

    CODE: ClassVar[Code] = Code.CERTIFICATE
    slot: int = 0
    portion: bytes = b""
    remainder: int = 0

    def pack(self) -> bytes:
        return (self.header(self.slot) + struct.pack("<HH", len(self.portion), self.remainder)
                + self.portion)

    @classmethod
    def unpack(cls, data: bytes) -> Certificate:
        header = cls._check(data)
        n, remainder = struct.unpack("<HH", _take(data, 4, 4, "PortionLength"))
        return cls(header.param1 & 0xF, _take(data, 8, n, "CertChain portion"), remainder,
                   version=header.version)


def cert_chain(certs_der: list[bytes], root_hash: bytes) -> bytes:
    """The certificate chain format a slot holds (table 26): Length(2) of the whole,
    Reserved(2), RootHash (the hash of the root certificate's DER), then the certificates,
    root first."""
    body = root_hash + b"".join(certs_der)
    return struct.pack("<HH", 4 + len(body), 0) + body


# --- authentication ------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge(Message):
    """Table 29: Param1 = slot, Param2 = measurement summary hash type (0 none, 1 TCB,
    0xFF all), Nonce(32)."""

    CODE: ClassVar[Code] = Code.CHALLENGE
    slot: int = 0
    summary_type: int = 0
    nonce: bytes = bytes(NONCE_LEN)

    def pack(self) -> bytes:
        return self.header(self.slot, self.summary_type) + self.nonce

    @classmethod
    def unpack(cls, data: bytes) -> Challenge:
        header = cls._check(data)
        return cls(header.param1, header.param2, _take(data, 4, NONCE_LEN, "Nonce"),
                   version=header.version)


@dataclass(frozen=True)
class ChallengeAuth(Message):
    """Table 30: Param1 = slot, Param2 = slot mask, CertChainHash(H), Nonce(32),
    MeasurementSummaryHash (H, absent when the request's Param2 was 0), OpaqueDataLength(2),
    OpaqueData, Signature(S)."""

    CODE: ClassVar[Code] = Code.CHALLENGE_AUTH
    slot: int = 0
    slot_mask: int = 0x01
    cert_chain_hash: bytes = b""
    nonce: bytes = bytes(NONCE_LEN)
    summary_hash: bytes = b""
    opaque: bytes = b""
    signature: bytes = b""

    def signed_part(self) -> bytes:
        """Everything but the signature: the end of the transcript it signs."""
        return (self.header(self.slot, self.slot_mask) + self.cert_chain_hash + self.nonce
                + self.summary_hash + struct.pack("<H", len(self.opaque)) + self.opaque)

    def pack(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def unpack_with(cls, data: bytes, hash_len: int, sig_len: int,
                    summary: bool) -> ChallengeAuth:
        header = cls._check(data)
        at = 4
        chain_hash = _take(data, at, hash_len, "CertChainHash")
        nonce = _take(data, at := at + hash_len, NONCE_LEN, "Nonce")
        at += NONCE_LEN
        summary_hash = _take(data, at, hash_len, "MeasurementSummaryHash") if summary else b""
        at += len(summary_hash)
        (n,) = struct.unpack("<H", _take(data, at, 2, "OpaqueDataLength"))
        opaque = _take(data, at + 2, n, "OpaqueData")
        signature = _take(data, at + 2 + n, sig_len, "Signature")
        return cls(header.param1 & 0xF, header.param2, chain_hash, nonce, summary_hash, opaque,
                   signature, version=header.version)


# --- measurements --------------------------------------------------------------------------

MEAS_ALL = 0xFF
MEAS_SIGNATURE_REQUESTED = 0x01


@dataclass(frozen=True)
class GetMeasurements(Message):
    """Table 40: Param1 bit 0 = signature requested, Param2 = operation (0 count, 0xFF all, N
    one index); with a signature, Nonce(32) and SlotIDParam follow."""

    CODE: ClassVar[Code] = Code.GET_MEASUREMENTS
    signed: bool = True
    operation: int = MEAS_ALL
    nonce: bytes = bytes(NONCE_LEN)
    slot: int = 0

    def pack(self) -> bytes:
        head = self.header(MEAS_SIGNATURE_REQUESTED if self.signed else 0, self.operation)
        return head + (self.nonce + bytes((self.slot,)) if self.signed else b"")

    @classmethod
    def unpack(cls, data: bytes) -> GetMeasurements:
        header = cls._check(data)
        signed = bool(header.param1 & MEAS_SIGNATURE_REQUESTED)
        if not signed:
            return cls(False, header.param2, version=header.version)
        return cls(True, header.param2, _take(data, 4, NONCE_LEN, "Nonce"),
                   _take(data, 4 + NONCE_LEN, 1, "SlotIDParam")[0], version=header.version)


@dataclass(frozen=True)
class MeasurementBlock:
    """Table 43 with a DMTF measurement (table 45): Index, MeasurementSpecification(=1),
    MeasurementSize(2), then DMTFSpecMeasurementValueType, DMTFSpecMeasurementValueSize(2)
    and the value (a digest here)."""

    index: int
    value_type: int
    value: bytes

    def __str__(self) -> str:
        return f"#{self.index} type {self.value_type:#04x} {self.value[:8].hex()}.."

    def pack(self) -> bytes:
        dmtf = struct.pack("<BH", self.value_type, len(self.value)) + self.value
        return struct.pack("<BBH", self.index, MEAS_SPEC_DMTF, len(dmtf)) + dmtf

    @classmethod
    def unpack_all(cls, record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
        blocks, at = [], 0
        for _ in range(count):
            index, _, size = struct.unpack("<BBH", _take(record, at, 4, "block header"))
            dmtf = _take(record, at + 4, size, f"measurement block {index}")
            value_type, n = struct.unpack("<BH", _take(dmtf, 0, 3, "DMTF measurement header"))
            blocks.append(cls(index, value_type, _take(dmtf, 3, n, "measurement value")))
            at += 4 + size
        if at != len(record):
            raise Malformed(f"MeasurementRecordLength is {len(record)}, its {count} blocks "
                            f"take {at}")
        return tuple(blocks)


@dataclass(frozen=True)
class Measurements(Message):
    """Table 41: Param1 = total count (operation 0 only), Param2 = slot, NumberOfBlocks,
    MeasurementRecordLength(3), MeasurementRecord, Nonce(32), OpaqueDataLength(2), OpaqueData,
    Signature (when requested)."""

    CODE: ClassVar[Code] = Code.MEASUREMENTS
    total: int = 0
    slot: int = 0
    blocks: tuple[MeasurementBlock, ...] = ()
    nonce: bytes = bytes(NONCE_LEN)
    opaque: bytes = b""
    signature: bytes = b""

    def signed_part(self) -> bytes:
        record = b"".join(b.pack() for b in self.blocks)
        return (self.header(self.total, self.slot) + bytes((len(self.blocks),))
                + len(record).to_bytes(3, "little") + record + self.nonce
                + struct.pack("<H", len(self.opaque)) + self.opaque)

    def pack(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def unpack_with(cls, data: bytes, sig_len: int) -> Measurements:
        header = cls._check(data)
        count = _take(data, 4, 1, "NumberOfBlocks")[0]
        length = int.from_bytes(_take(data, 5, 3, "MeasurementRecordLength"), "little")
        blocks = MeasurementBlock.unpack_all(_take(data, 8, length, "MeasurementRecord"), count)
        at = 8 + length
        nonce = _take(data, at, NONCE_LEN, "Nonce")
        (n,) = struct.unpack("<H", _take(data, at + NONCE_LEN, 2, "OpaqueDataLength"))
        opaque = _take(data, at + NONCE_LEN + 2, n, "OpaqueData")
        signature = _take(data, at + NONCE_LEN + 2 + n, sig_len, "Signature")
        return cls(header.param1, header.param2 & 0xF, blocks, nonce, opaque, signature,
                   version=header.version)


@dataclass(frozen=True)
class Error(Message):
    """Table 47: Param1 = error code, Param2 = error data."""

    CODE: ClassVar[Code] = Code.ERROR
    error: int = ErrorCode.UNSPECIFIED
    data: int = 0

    def pack(self) -> bytes:
        return self.header(self.error, self.data)

    @classmethod
    def unpack(cls, data: bytes) -> Error:
        header = cls._check(data)
        return cls(header.param1, header.param2, version=header.version)


REQUESTS: dict[int, type[Message]] = {m.CODE: m for m in (
    GetVersion, GetCapabilities, NegotiateAlgorithms, GetDigests, GetCertificate, Challenge,
    GetMeasurements)}
