"""What a confidential guest's kernel decides once cc_platform_has() holds, and what proves
the guest is one.

Sources: arch/x86/coco/core.c (intel_cc_platform_has: GUEST_MEM_ENCRYPT and MEM_ENCRYPT for
CC_VENDOR_INTEL); arch/x86/mm/mem_encrypt.c (force_dma_unencrypted(): every DMA of a
CC_ATTR_GUEST_MEM_ENCRYPT guest goes to shared memory; print_mem_encrypt_feature_info());
arch/x86/kernel/pci-dma.c (pci_swiotlb_detect(): swiotlb is set up in such a guest whatever
its RAM); kernel/dma/direct.c dma_direct_map_phys() (dma_capable() is false for encrypted
RAM when force_dma_unencrypted(), include/linux/dma-direct.h, so the mapping is a swiotlb
slot; 6.12 forces it with SWIOTLB_FORCE instead); kernel/dma/swiotlb.c (debugfs io_tlb_used,
the slots mapped now). guest/cc.py for the proofs.
"""

from __future__ import annotations

import pytest

from cocolab.guest import Guest
from cocolab.guest.cc import CCProof, cc_proof
from cocolab.guest.swiotlb import used_slots


@pytest.mark.kconfig("DEBUG_FS", "SWIOTLB")
def test_a_confidential_guest_bounces_its_dma(cc_guest: CCProof, vm: Guest) -> None:
    """cocolab's own NIC (iommu_platform=on) keeps its receive buffers mapped: in bounce
    buffers, since the hypervisor may only see shared memory (256 slots on 7.3)."""
    assert used_slots(vm) > 0


@pytest.mark.kconfig("DEBUG_FS", "SWIOTLB")
def test_a_plain_guest_does_not(plain_guest: None, vm: Guest) -> None:
    """The counterpart: a plain 1 GiB guest's devices reach all of its memory directly."""
    assert used_slots(vm) == 0


def test_a_simulated_guest_fails_the_hardware_proof(cc_guest: CCProof, vm: Guest) -> None:
    """A cc-sim kernel prints what a real TD prints ('Memory Encryption Features active:
    Intel TDX'): the hardware proof must rest on what only hardware gives, and refuse it."""
    if not cc_guest.simulated:
        pytest.skip(f"this is a hardware {cc_guest.kind} guest: the cc_guest fixture proved it "
                    "with the hardware proof; the simulated half runs on --lane cc-sim-tdx")
    hardware = cc_proof(vm, cc_guest.kind or "")
    assert hardware.kind is None, hardware
    assert hardware.messages, "the simulated kernel should print the TD's own boot line"
