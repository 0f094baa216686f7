"""Proof, from inside a guest, that it is a confidential (TDX or SEV-SNP) guest, or a simulated
one (the cc-sim lane).

A lane can only *ask* for a confidential guest; firmware, QEMU or the host may silently give a
plain one. The guest proves it with two independent kinds of evidence: the kernel's own boot
message, and a device or interface only a CC guest kernel creates. The wordings used across
kernel versions (arch/x86/mm/mem_encrypt.c print_mem_encrypt_feature_info(); before v5.19 it
said "AMD Memory Encryption Features active:"; arch/x86/coco/tdx/tdx.c "tdx: Guest detected"):
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocolab.guest import Guest
    from cocolab.vm import VM

KERNEL_MESSAGES = {
    "tdx": (r"Memory Encryption Features active: Intel TDX", r"\btdx: Guest detected"),
    "snp": (r"Memory Encryption Features active: (AMD )?SEV SEV-ES SEV-SNP",
            r"AMD Memory Encryption Features active: SEV SEV-ES SEV-SNP",
            r"\bSEV: SNP guest platform device"),
}
INTERFACES = {
    "tdx": ("/dev/tdx_guest",),
    "snp": ("/dev/sev-guest",),
}
TSM_PROVIDERS = {"tdx": "tdx_guest", "snp": "sev_guest"}
CPU_FLAGS = {"tdx": "tdx_guest", "snp": "sev_snp"}
SIMULATION_MESSAGES = {"tdx": r"\bcc_sim: simulated TDX guest"}
"""What guests/cc-sim/cc-sim-tdx.patch prints when cc_sim=tdx took effect."""
POLICY_MESSAGES = {"tdx": r"Memory Encryption Features active: Intel TDX"}
"""What the policy code prints once cc_platform_has(CC_ATTR_MEM_ENCRYPT) holds
(print_mem_encrypt_feature_info(), arch/x86/mm/mem_encrypt.c): the decision was made. A
simulated kernel prints it too, so it never proves hardware on its own."""
SIMULATED = ("cc_platform_has forced by the cc-sim patch; memory is not encrypted, nothing "
             "is attested")


@dataclass(frozen=True)
class CCProof:
    kind: str | None
    """'tdx' or 'snp' once both kinds of evidence agree, else None."""
    messages: tuple[str, ...]
    interfaces: tuple[str, ...]
    simulated: bool = False
    """The proof is of a simulated guest's decision (cc-sim): never of the hardware."""

    def __str__(self) -> str:
        if self.kind and self.simulated:
            return (f"simulated {self.kind.upper()} guest ({SIMULATED}): "
                    f"{'; '.join(self.messages)}")
        if self.kind:
            return f"{self.kind} guest: {'; '.join(self.messages + self.interfaces)}"
        seen = "; ".join(self.messages + self.interfaces) or "no CC boot message, device, " \
            "configfs-tsm provider or CPU flag"
        return f"not proven confidential ({seen})"


def judge(kind: str, dmesg: str, present: set[str], tsm_provider: str, cpu_flags: set[str]
          ) -> CCProof:
    """Decide from what the guest showed; pure, for unit tests."""
    messages = tuple(line.strip() for line in dmesg.splitlines()
                     if any(re.search(p, line) for p in KERNEL_MESSAGES[kind]))
    interfaces = tuple(p for p in INTERFACES[kind] if p in present)
    if tsm_provider == TSM_PROVIDERS[kind]:
        interfaces += (f"configfs-tsm provider {tsm_provider}",)
    if CPU_FLAGS[kind] in cpu_flags:
        interfaces += (f"cpu flag {CPU_FLAGS[kind]}",)
    return CCProof(kind if messages and interfaces else None, messages, interfaces)


def judge_simulated(kind: str, dmesg: str, hardware: CCProof) -> CCProof:
    """A simulated guest proves itself by the cc-sim patch's own line and the policy line it
    caused, and by failing the hardware proof: a guest with hardware evidence is not
    simulated, whatever else it printed."""
    lines = [line.strip() for line in dmesg.splitlines()]
    sim = tuple(line for line in lines if re.search(SIMULATION_MESSAGES[kind], line))
    policy = tuple(line for line in lines if re.search(POLICY_MESSAGES[kind], line))
    proven = bool(sim and policy and hardware.kind is None and not hardware.interfaces)
    return CCProof(kind if proven else None, sim + policy, hardware.interfaces, simulated=True)


def cc_simulation_proof(vm: VM, kind: str) -> CCProof:
    if kind not in SIMULATION_MESSAGES:
        return CCProof(None, (), (), simulated=True)
    return judge_simulated(kind, vm.run("dmesg").stdout, cc_proof(vm, kind))


def cc_proof(vm: VM, kind: str) -> CCProof:
    dmesg = vm.run("dmesg").stdout
    # a character device: any file at that path (a stray regular file) proves nothing
    present = {p for p in INTERFACES[kind] if vm.run(f"test -c {p}").ok}
    report = vm.run("d=$(mktemp -d /sys/kernel/config/tsm/report/cocolab.XXXX) && "
                    "cat $d/provider; rmdir $d 2>/dev/null")
    flags = vm.run("grep -m1 '^flags' /proc/cpuinfo").stdout.split()
    return judge(kind, dmesg, present, report.stdout.strip() if report.ok else "", set(flags))


def lane_proof(vm: Guest, kind: str, simulated: bool) -> CCProof:
    """The proof a guest on a confidential lane gives, asked once per VM and kept on it: a
    hardware lane's guest must be the CC guest it claims, a simulated lane's must show the
    simulation took effect (and no hardware evidence)."""
    if vm.cc is None:
        vm.cc = cc_simulation_proof(vm, kind) if simulated else cc_proof(vm, kind)
    return vm.cc
