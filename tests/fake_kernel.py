"""A file cocolab takes for an x86 bzImage: just the boot header, with the release in its
kernel_version string (the x86 boot protocol: "HdrS" at 0x202, the string's offset from 0x200
at 0x20e). It never boots; tests that need cocolab to read a kernel, not run one, use it."""

from __future__ import annotations

import struct
from pathlib import Path


def fake_bzimage(path: Path, release: str = "6.99.0-fake") -> Path:
    head = bytearray(0x400)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x100)
    text = f"{release} (builder@host) #1 SMP".encode() + b"\0"
    head[0x300:0x300 + len(text)] = text
    path.write_bytes(bytes(head))
    return path
