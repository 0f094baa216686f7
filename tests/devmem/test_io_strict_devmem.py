"""CONFIG_IO_STRICT_DEVMEM: a BAR a driver has claimed is off limits, unless iomem=relaxed.

Source: kernel/resource.c iomem_is_exclusive() (busy && IO_STRICT_DEVMEM, unless
strict_iomem_checks is cleared by iomem=relaxed), revoke_iomem() from __request_region();
drivers/pci/pci-sysfs.c pci_mmap_resource(); kernel-behaviors.md §1.1.
Each test runs twice: on the default boot (expects the restriction) and with iomem=relaxed
(expects access), so each is the other's counterpart.
"""

from __future__ import annotations

import errno

import pytest

from cocolab.assertions import assert_allowed, assert_denied, assert_faults, assert_real_data
from cocolab.guest import Guest
from cocolab.guest.pci import PciBar

pytestmark = [pytest.mark.kconfig("DEVMEM", "STRICT_DEVMEM", "IO_STRICT_DEVMEM"),
              pytest.mark.usefixtures("plain_dev_mem")]

iomem_policy = pytest.mark.parametrize("relaxed", [
    pytest.param(False, id="strict"),
    pytest.param(True, id="relaxed", marks=pytest.mark.cmdline("iomem=relaxed")),
])


@iomem_policy
def test_claimed_bar_mmap(vm: Guest, claimed_bar: PciBar, relaxed: bool) -> None:
    result = vm.probe("mmap", "/dev/mem", claimed_bar.bar.start, 16)
    if relaxed:
        assert_real_data(result)
    else:
        assert_denied(result, errno.EPERM, stage="mmap")


@iomem_policy
def test_claimed_bar_sysfs_resource_mmap(vm: Guest, claimed_bar: PciBar, relaxed: bool) -> None:
    result = vm.probe("mmap", claimed_bar.sysfs_resource, 0, 16)
    if relaxed:
        assert_real_data(result)
    else:
        assert_denied(result, errno.EINVAL, stage="mmap")


@iomem_policy
def test_idle_bar_sysfs_resource_mmap_is_allowed(vm: Guest, idle_bar: PciBar,
                                                 relaxed: bool) -> None:
    # The counterpart of the EINVAL above: the same sysfs path maps a BAR nobody claimed.
    assert_allowed(vm.probe("mmap", idle_bar.sysfs_resource, 0, 16))


@iomem_policy
def test_mapping_is_revoked_when_a_driver_claims_the_bar(vm: Guest, claimed_bar: PciBar,
                                                         relaxed: bool) -> None:
    """Map the e1000 BAR while no driver holds it, then bind e1000: under IO_STRICT_DEVMEM the
    kernel zaps the mapping (revoke_iomem) and the next load raises SIGBUS; with
    iomem=relaxed the mapping survives."""
    bdf, driver = claimed_bar.bdf, claimed_bar.claimed_by
    assert driver is not None
    unbound = vm.pci.unbind(bdf)
    assert unbound.ok, f"could not unbind {bdf} from {driver}: {unbound}"
    try:
        with vm.probe.hold("/dev/mem", claimed_bar.bar.start, 16) as held:
            assert_real_data(held.first)
            bound = vm.pci.bind(bdf, driver)
            assert bound.ok, f"could not bind {bdf} to {driver} again: {bound}"
            after = held.finish("again")
    finally:
        if vm.pci.driver_of(bdf) != driver:
            vm.pci.bind(bdf, driver)
    if relaxed:
        assert_real_data(after)
    else:
        assert_faults(after, "SIGBUS")
