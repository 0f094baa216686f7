"""CONFIG_STRICT_DEVMEM on x86: what /dev/mem lets root read, write and map.

Source: arch/x86/mm/init.c devmem_is_allowed() (RAM below 1 MiB -> 2 "show zeros", other low
1 MiB -> 1 "allowed", RAM above -> 0 "denied"; the low-1MiB bypass of iomem_is_exclusive()),
drivers/char/mem.c read_mem()/write_mem()/mmap_mem(); kernel-behaviors.md §1.1.
Every test here runs on the default boot.
"""

from __future__ import annotations

import errno

import pytest

from cocolab.assertions import (
    assert_allowed,
    assert_denied,
    assert_real_data,
    assert_zero_filled,
)
from cocolab.guest import Guest
from cocolab.guest.iomem import ONE_MIB, PAGE, IOMem
from cocolab.guest.pci import EDU_ID, PciBar

pytestmark = [pytest.mark.kconfig("DEVMEM", "STRICT_DEVMEM"),
              pytest.mark.usefixtures("plain_dev_mem")]


def test_low_ram_reads_as_zeros(vm: Guest, iomem: IOMem) -> None:
    page = iomem.ram_page_below_1mib()
    assert_zero_filled(vm.probe("read", "/dev/mem", page, PAGE))


def test_page0_and_system_rom_read_real_bytes(vm: Guest, iomem: IOMem) -> None:
    # Counterpart of the zeros above: the same read() path returns real contents where
    # devmem_is_allowed() says 1. Page 0 (interrupt vector table) is firmware-reserved.
    assert iomem.page0_name() == "Reserved", "page 0 is expected outside System RAM"
    assert_real_data(vm.probe("read", "/dev/mem", 0, PAGE))
    rom = iomem.system_rom()
    assert_real_data(vm.probe("read", "/dev/mem", rom.start, rom.size))


def test_ram_above_1mib_read_is_denied(vm: Guest, iomem: IOMem) -> None:
    page = iomem.ram_page_above_1mib()
    assert page >= ONE_MIB
    assert_denied(vm.probe("read", "/dev/mem", page, PAGE), errno.EPERM, stage="read")


def test_ram_above_1mib_mmap_is_denied(vm: Guest, iomem: IOMem) -> None:
    page = iomem.ram_page_above_1mib()
    assert_denied(vm.probe("mmap", "/dev/mem", page, PAGE), errno.EPERM, stage="mmap")


def test_mmap_of_low_1mib_maps_real_ram(vm: Guest, iomem: IOMem) -> None:
    """The hole Dan Williams' v5 cites: mmap_mem() treats 'show zeros' (2) as allowed, so a
    mapping of the first MiB shows the RAM that read() zero-fills."""
    low = iomem.low_ram()
    start = (low.start + PAGE - 1) // PAGE * PAGE
    length = (low.end + 1 - start) // PAGE * PAGE
    read = vm.probe("read", "/dev/mem", start, length)
    assert_zero_filled(read)
    mapped = vm.probe("mmap", "/dev/mem", start, length)
    assert_real_data(mapped)
    assert_allowed(vm.probe("mmap", "/dev/mem", 0, ONE_MIB))


def test_pwrite_to_low_ram_is_silently_discarded(vm: Guest, iomem: IOMem) -> None:
    """write_mem() skips pages page_is_allowed() calls 'show zeros' yet reports the full
    count (drivers/char/mem.c). The mapping that reads the page back must first be shown to
    see a write to that very page (the control: a store through the mapping reads back), or
    an unchanged page would prove nothing."""
    page = iomem.ram_page_below_1mib()
    before = vm.probe("mmap", "/dev/mem", page, 16)
    assert_allowed(before)
    original = int.from_bytes(before.data[:4], "little")
    control = vm.probe("poke", "/dev/mem", page, original ^ 0xA5A5A5A5)
    restored = vm.probe("poke", "/dev/mem", page, original)
    assert_allowed(control)
    assert control.extra["readback"] == original ^ 0xA5A5A5A5, \
        f"the mapping does not see stores to {page:#x}: nothing below can be judged"
    assert_allowed(restored)
    pattern = bytes(b ^ 0xFF for b in before.data)  # differs from the page in every byte
    wrote = vm.probe("write", "/dev/mem", page, pattern.hex())
    assert_allowed(wrote)
    assert wrote.count == len(pattern), "write_mem() reports the whole count as written"
    after = vm.probe("mmap", "/dev/mem", page, len(pattern))
    assert_allowed(after)
    assert after.data == before.data, "the write reached RAM: write_mem() did not discard it"


def test_idle_bar_can_be_mapped(vm: Guest, idle_bar: PciBar) -> None:
    result = vm.probe("mmap", "/dev/mem", idle_bar.bar.start, 16)
    assert_allowed(result)
    assert result.data[:4] == EDU_ID, f"the mapping did not reach the edu device: {result}"


def test_mmap_writes_reach_an_idle_bar(vm: Guest, idle_bar: PciBar) -> None:
    # Counterpart of the discarded pwrite: where a write is allowed, the helper's write lands.
    # edu register 0x04 returns the bitwise inverse of the last value written to it.
    result = vm.probe("poke", "/dev/mem", idle_bar.bar.start + 4, 0x12345678)
    assert_allowed(result)
    assert result.extra["readback"] == (~0x12345678) & 0xFFFFFFFF


def test_read_of_a_bar_above_high_memory_is_efault(vm: Guest, idle_bar: PciBar) -> None:
    """read() checks valid_phys_addr_range() (arch/x86/mm/mmap.c): with 1 GiB of guest RAM the
    32-bit PCI hole lies above high_memory, so read() of a BAR fails EFAULT although mmap()
    of the same BAR works (test_idle_bar_can_be_mapped)."""
    assert_denied(vm.probe("read", "/dev/mem", idle_bar.bar.start, 16), errno.EFAULT,
                  stage="read")
