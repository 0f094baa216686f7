"""QEMU arguments for confidential guests. Pure.

TDX (QEMU docs/system/i386/tdx.rst): a tdx-guest object named by the machine's
confidential-guest-support, split irqchip, the TDVF firmware through -bios (TDX has no
read-only memslots, so no pflash), -accel kvm -cpu host.
SEV-SNP (QEMU docs/system/i386/amd-memory-encryption.rst and the SNP series' examples): an
sev-snp-guest object with the host's C-bit position and reduced physical bits, guest RAM from
a shared memfd backend named by the machine's memory-backend, firmware through -bios.
"""

from __future__ import annotations

from pathlib import Path

from cocolab.host.cc import CBit

CC_ID = "cc0"
RAM_ID = "ram0"
SNP_POLICY = 0x30000
"""QEMU's default SNP guest policy: bit 17 (reserved, must be 1) and bit 16 (SMT allowed)."""


def cc_machine_options(kind: str) -> tuple[str, ...]:
    if kind == "tdx":
        return ("kernel-irqchip=split", f"confidential-guest-support={CC_ID}")
    if kind == "snp":
        return (f"confidential-guest-support={CC_ID}", f"memory-backend={RAM_ID}")
    raise ValueError(kind)


def cc_platform_args(kind: str, *, memory_mib: int, firmware: Path,
                     cbit: CBit | None = None) -> tuple[str, ...]:
    if kind == "tdx":
        return ("-object", f"tdx-guest,id={CC_ID}", "-bios", str(firmware))
    if kind == "snp":
        if cbit is None:
            raise ValueError("an SNP guest needs the host's C-bit position")
        return (
            "-object", f"memory-backend-memfd,id={RAM_ID},size={memory_mib}M,share=true,"
                       "prealloc=false",
            "-object", f"sev-snp-guest,id={CC_ID},cbitpos={cbit.position},"
                       f"reduced-phys-bits={cbit.reduced_phys_bits},policy={SNP_POLICY:#x}",
            "-bios", str(firmware),
        )
    raise ValueError(kind)
