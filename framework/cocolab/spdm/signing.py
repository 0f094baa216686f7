"""What an SPDM 1.2 signature covers (DSP0274 1.2 §15, "Signature generation"): not the
transcript itself but a prefixed digest of it, so that a signature made for one purpose
cannot be replayed as another."""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from cocolab.spdm.messages import Asym, Hash

CHALLENGE_AUTH_CONTEXT = b"responder-challenge_auth signing"
MEASUREMENTS_CONTEXT = b"responder-measurements signing"

HASHES = {Hash.SHA_256: "sha256", Hash.SHA_384: "sha384", Hash.SHA_512: "sha512"}
CURVES = {Asym.ECDSA_P256: ec.SECP256R1, Asym.ECDSA_P384: ec.SECP384R1}
_HAZMAT: dict[Hash, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    Hash.SHA_256: hashes.SHA256, Hash.SHA_384: hashes.SHA384, Hash.SHA_512: hashes.SHA512}


def digest(base_hash: Hash, data: bytes) -> bytes:
    return hashlib.new(HASHES[base_hash], data).digest()


def signing_message(version: int, context: bytes, transcript_hash: bytes) -> bytes:
    """combined_spdm_prefix || Hash(transcript): "dmtf-spdm-v1.2.*" four times (64 bytes),
    zero padding to 36 bytes of context, the context string, then the digest."""
    if len(context) > 36:
        raise ValueError(f"an SPDM signing context is at most 36 bytes, not {len(context)}")
    prefix = f"dmtf-spdm-v{version >> 4}.{version & 0xF}.*".encode() * 4
    return prefix + bytes(36 - len(context)) + context + transcript_hash


def sign(key: ec.EllipticCurvePrivateKey, base_hash: Hash, message: bytes) -> bytes:
    """ECDSA over `message` hashed with the negotiated hash, as SPDM carries it: r || s, each
    the curve's size, big-endian."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(_HAZMAT[base_hash]())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def verify(key: ec.EllipticCurvePublicKey, base_hash: Hash, message: bytes,
           signature: bytes) -> bool:
    size = (key.curve.key_size + 7) // 8
    if len(signature) != 2 * size:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:size], "big"),
                               int.from_bytes(signature[size:], "big"))
    try:
        key.verify(der, message, ec.ECDSA(_HAZMAT[base_hash]()))
    except InvalidSignature:
        return False
    return True
