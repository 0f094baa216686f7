"""Can this host run a TDX or SEV-SNP guest? Every missing piece, in one "why not" string.

Everything is read under an injectable root (sysfs, /dev, /proc), so the logic is unit-tested
against fake trees. Facts used:
  - KVM TDX: /sys/module/kvm_intel/parameters/tdx is Y when the host kernel enabled TDX
    (Linux 6.16+, boot with kvm_intel.tdx=1, TDX on in the BIOS).
  - KVM SNP: /sys/module/kvm_amd/parameters/sev_snp is Y (Linux 6.11+; SNP on in the BIOS).
  - QEMU: the QOM types tdx-guest (QEMU 10.1+) and sev-snp-guest (QEMU 9.1+), asked over QMP.
  - /dev/kvm must really work: the accelerator proof boot (host/accel.py).
  - Firmware: an OVMF build with TDVF (-bios, docs/system/i386/tdx.rst) or one for SEV.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from cocolab.host.accel import AccelChoice
from cocolab.host.qemu import QemuInfo

_PARAM = {"tdx": "kvm_intel/parameters/tdx", "snp": "kvm_amd/parameters/sev_snp"}
_ENABLE = {"tdx": "boot the host with kvm_intel.tdx=1 and TDX enabled in the BIOS",
           "snp": "enable SEV-SNP in the BIOS and load kvm_amd with sev_snp=1"}
_QOM = {"tdx": ("tdx-guest", "10.1"), "snp": ("sev-snp-guest", "9.1")}
FIRMWARE_CANDIDATES = {
    "tdx": ("/usr/share/ovmf/OVMF.inteltdx.fd", "/usr/share/OVMF/OVMF.inteltdx.fd",
            "/usr/share/edk2/ovmf/OVMF.inteltdx.fd", "/usr/share/qemu/OVMF.inteltdx.fd",
            "/usr/share/edk2/x64/OVMF.inteltdx.fd"),
    "snp": ("/usr/share/ovmf/OVMF.amdsev.fd", "/usr/share/OVMF/OVMF.amdsev.fd",
            "/usr/share/edk2/ovmf/OVMF.amdsev.fd", "/usr/share/qemu/OVMF.amdsev.fd",
            "/usr/share/edk2/x64/OVMF.amdsev.fd"),
}


@dataclass(frozen=True)
class FirmwareSearch:
    found: Path | None
    searched: tuple[str, ...]
    """Where it looked, each with its source: '--firmware X', 'lane key firmware (f): X', ..."""

    def why_not(self, kind: str) -> str:
        return (f"no {kind.upper()} firmware: looked at " + ", ".join(self.searched)
                + "; install an OVMF build with "
                + ("TDVF" if kind == "tdx" else "SEV support (AmdSev)")
                + " or pass --firmware")


def find_firmware(kind: str, option: str | None, lane_value: str | None, lane_source: str,
                  root: Path = Path("/")) -> FirmwareSearch:
    """--firmware, then the lane key, then the usual distribution paths (under `root`)."""
    tried: list[str] = []
    explicit = [(option, f"--firmware {option}"),
                (lane_value, f"lane key firmware ({lane_source}): {lane_value}")]
    for value, where in explicit:
        if value:
            tried.append(where)
            if Path(value).is_file():
                return FirmwareSearch(Path(value), tuple(tried))
    for path in FIRMWARE_CANDIDATES[kind]:
        tried.append(path)
        if (root / path.lstrip("/")).is_file():
            return FirmwareSearch(root / path.lstrip("/"), tuple(tried))
    return FirmwareSearch(None, tuple(tried))


def host_problems(kind: str, *, root: Path, qemu: QemuInfo | None, accel: AccelChoice | None,
                  firmware: FirmwareSearch) -> list[str]:
    """Everything that keeps this host from running a `kind` guest (empty: it can)."""
    problems = []
    param = root / "sys/module" / _PARAM[kind]
    if not param.exists():
        module = _PARAM[kind].split("/")[0]
        problems.append(f"{module} is not loaded or has no {param.name} parameter "
                        f"(/sys/module/{_PARAM[kind]} absent): not a {kind.upper()} host")
    elif param.read_text().strip() not in ("Y", "1"):
        problems.append(f"/sys/module/{_PARAM[kind]} is {param.read_text().strip()}: "
                        f"{_ENABLE[kind]}")
    if accel is None or accel.accel != "kvm":
        reason = accel.reason if accel else "not probed"
        problems.append(f"KVM is not usable ({reason})")
    qom, since = _QOM[kind]
    if qemu is None:
        problems.append("no QEMU found")
    elif not qemu.has_device(qom):
        problems.append(f"QEMU {qemu.version} ({qemu.binary}) has no {qom} object (QEMU "
                        f"{since}+ has it; pass --qemu)")
    if firmware.found is None:
        problems.append(firmware.why_not(kind))
    return problems


@dataclass(frozen=True)
class CBit:
    position: int
    reduced_phys_bits: int


def parse_cpuid_8000001f(raw: bytes) -> CBit:
    """CPUID Fn8000_001F as /dev/cpu/N/cpuid returns it (eax, ebx, ecx, edx): EBX[5:0] is the
    C-bit position, EBX[11:6] the physical address bits lost to encryption (AMD APM vol. 2,
    15.34.1)."""
    _eax, ebx, _ecx, _edx = struct.unpack("<4I", raw[:16])
    return CBit(ebx & 0x3F, (ebx >> 6) & 0x3F)


def host_cbit(root: Path = Path("/")) -> CBit | None:
    """The host's C-bit, from /dev/cpu/0/cpuid (needs the cpuid module and root)."""
    try:
        with (root / "dev/cpu/0/cpuid").open("rb") as f:
            f.seek(0x8000001F)
            return parse_cpuid_8000001f(f.read(16))
    except OSError:
        return None
