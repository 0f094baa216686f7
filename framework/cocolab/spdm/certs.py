"""Certificate chains for the responder, made with `cryptography`: a root CA and a device leaf
whose SubjectAltName carries the PCIe CMA otherName (PCIe r6.x §6.31.3: type-id 2.23.147, a
UTF8String "Vendor=...:Device=...:CC=...:REV=...:SSVID=...:SSID=..."), as a kernel's CMA
requester checks it. Each bad chain a personality needs is a variant of the good one."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cocolab.spdm.messages import Asym, Hash, cert_chain
from cocolab.spdm.signing import CURVES, digest

CMA_SAN_OID = x509.ObjectIdentifier("2.23.147")


def cma_san(vendor: int, device: int, klass: int, revision: int, ssvid: int, ssid: int) -> str:
    """The CMA SubjectAltName string for a PCI function, lower-case hex as Linux prints it."""
    return (f"Vendor={vendor:04x}:Device={device:04x}:CC={klass:06x}:REV={revision:02x}:"
            f"SSVID={ssvid:04x}:SSID={ssid:04x}")


# QEMU's nvme (hw/nvme/ctrl.c): 1b36:0010, class 010802, revision 2, subsystem 1af4:1100
QEMU_NVME_SAN = cma_san(0x1B36, 0x0010, 0x010802, 0x02, 0x1AF4, 0x1100)


def _utf8string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 127:
        raise ValueError("a CMA SAN longer than 127 bytes needs a long-form DER length")
    return bytes((0x0C, len(raw))) + raw


@dataclass(frozen=True)
class Chain:
    """One slot's chain: DER certificates root first, and the leaf's private key."""

    certs: tuple[x509.Certificate, ...]
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def root(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certs[-1]

    def der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in self.certs]

    def slot_bytes(self, base_hash: Hash) -> bytes:
        """The chain as the slot holds it (DSP0274 table 26)."""
        der = self.der()
        return cert_chain(der, digest(base_hash, der[0]))

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cocolab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(asym: Asym) -> hashes.SHA256 | hashes.SHA384:
    return hashes.SHA384() if asym is Asym.ECDSA_P384 else hashes.SHA256()


def make_root(asym: Asym, cn: str = "cocolab CMA test root") -> tuple[x509.Certificate,
                                                                      ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(CURVES[asym]())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, _hash_for(asym)))
    return cert, key


def make_leaf(root: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], asym: Asym, *,
              san: str | None = QEMU_NVME_SAN, expired: bool = False) -> Chain:
    root_cert, root_key = root
    key = ec.generate_private_key(CURVES[asym]())
    now = datetime.datetime.now(datetime.UTC)
    start, end = ((now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
                  if expired else (now - datetime.timedelta(days=1),
                                   now + datetime.timedelta(days=365)))
    builder = (x509.CertificateBuilder().subject_name(_name("cocolab nvme device"))
               .issuer_name(root_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                            False, False), critical=True))
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.OtherName(CMA_SAN_OID, _utf8string(san))]), critical=False)
    return Chain((root_cert, builder.sign(root_key, _hash_for(asym))), key)
