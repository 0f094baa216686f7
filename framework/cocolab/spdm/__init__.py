"""SPDM for CMA tests: a responder QEMU's emulated NVMe talks to (`Responder`), its messages
(`messages`), the socket framing (`transport`) and the certificate chains it serves."""

from cocolab.spdm.responder import Personality, Responder

__all__ = ["Personality", "Responder"]
