"""Choose the accelerator by a canary boot, never by the mere presence of /dev/kvm.

A /dev/kvm can exist and still be unusable: under a nested PVM hypervisor QEMU aborts with
`-cpu host` ("failed to set MSR 0x10a") or crawls. The canary is a 64 KiB firmware image whose
reset vector writes "OK" to the serial port and a value to isa-debug-exit, so QEMU exits with
status (1 << 1) | 1 = 3 after a handful of instructions. Any other outcome within the deadline
means the accelerator does not work. The verdict is cached per host boot and QEMU binary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from cocolab.errors import AccelError, ConfigError
from cocolab.host.process import kill_qemu, start_qemu
from cocolab.paths import cache_dir

LOG = logging.getLogger(__name__)

CANARY_DEADLINE = 15.0
_CANARY_EXIT = 3
# Reset vector (real mode, CS:IP = F000:FFF0), 16 bytes:
#   mov dx,0x3f8; mov al,'O'; out dx,al; mov al,'K'; out dx,al; mov al,1; out 0xf4,al; hlt; jmp $-1
_RESET_VECTOR = bytes.fromhex("BAF803B04FEEB04BEEB001E6F4F4EBFD")
ACCELS = ("auto", "kvm", "tcg")


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str


def canary_firmware() -> bytes:
    return b"\xf4" * (65536 - len(_RESET_VECTOR)) + _RESET_VECTOR


def _host_key(qemu: str) -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    st = Path(qemu).stat()
    text = f"{socket.gethostname()}:{boot_id}:{qemu}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kvm_canary(qemu: str, deadline: float = CANARY_DEADLINE,
               dev: Path = Path("/dev/kvm")) -> tuple[bool, str]:
    """Boot the canary under KVM. (works, why) — `why` is the evidence either way."""
    if not dev.exists():
        return False, "/dev/kvm does not exist (no KVM module loaded, or not a KVM host)"
    if not os.access(dev, os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user (add it to group kvm)"
    with tempfile.TemporaryDirectory(prefix="cocolab-canary-") as tmp:
        fw = Path(tmp) / "canary.bin"
        fw.write_bytes(canary_firmware())
        log = Path(tmp) / "qemu.log"
        proc = start_qemu([qemu, "-nodefaults", "-no-user-config", "-display", "none",
                           "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "64M",
                           "-bios", str(fw), "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                           "-serial", "none"], log)
        try:
            rc = proc.wait(deadline)
        except subprocess.TimeoutExpired:
            kill_qemu(proc, grace=1)
            return False, (f"the KVM canary (a 16-instruction firmware) did not finish within "
                           f"{deadline:g}s: KVM hangs on this host")
        said = log.read_text(errors="replace").strip()
    if rc == _CANARY_EXIT:
        return True, "the KVM canary boot succeeded"
    last = said.splitlines()[0] if said else f"exit status {rc}"
    return False, f"the KVM canary boot failed: {last}"


def choose_accel(qemu: str, requested: str) -> AccelChoice:
    """Resolve --accel auto|kvm|tcg to an accelerator that works, with the reason."""
    if requested not in ACCELS:
        raise ConfigError(f"--accel {requested!r}: choose one of {', '.join(ACCELS)}")
    if requested == "tcg":
        return AccelChoice("tcg", "--accel tcg")
    cache = cache_dir("host") / f"accel-{_host_key(qemu)}.json"
    with FileLock(str(cache) + ".lock"):
        if cache.exists():
            works, why = json.loads(cache.read_text())
            why += " (cached verdict for this host boot)"
        else:
            works, why = kvm_canary(qemu)
            cache.write_text(json.dumps([works, why]))
    if works:
        return AccelChoice("kvm", why)
    if requested == "kvm":
        raise AccelError(f"--accel kvm: {why}. Use --accel tcg (or auto) on this host.")
    return AccelChoice("tcg", f"KVM unusable, {why}; using TCG")
