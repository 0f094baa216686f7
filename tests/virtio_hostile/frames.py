"""Ethernet frames the net tests hand the guest and read back: an ICMP echo request, and
the echo reply the guest's stack answers it with (RFC 792, RFC 791, RFC 1071's checksum).
Beside the tests, as guest_side.py is."""

from __future__ import annotations

import ipaddress
import struct

HOST_MAC = bytes.fromhex("020000000001")
"""The back-end's end of the wire (a locally administered address)."""
HOST_IP, GUEST_IP = "10.0.9.1", "10.0.9.2"


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(guest_mac: bytes, ident: int, seq: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    src, dst = (ipaddress.IPv4Address(a).packed for a in (HOST_IP, GUEST_IP))
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0x4000, 64, 1, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return guest_mac + HOST_MAC + b"\x08\x00" + ip + icmp


def echo_reply(frame: bytes) -> tuple[int, int, bytes] | None:
    """(id, seq, payload) if `frame` is an ICMP echo reply to the host, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 1:
        return None
    header = (frame[14] & 0x0F) * 4
    total = struct.unpack("!H", frame[16:18])[0]
    icmp = frame[14 + header:14 + total]
    if len(icmp) < 8 or icmp[0] != 0:
        return None
    ident, seq = struct.unpack("!HH", icmp[4:8])
    return ident, seq, icmp[8:]
