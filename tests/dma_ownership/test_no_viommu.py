"""Without a vIOMMU there are no IOMMU groups, and vfio-pci refuses the device.

Source: drivers/vfio/group.c vfio_group_find_or_alloc() -> -EINVAL without an iommu_group
(unless vfio.enable_unsafe_noiommu_mode). The counterpart is the same bind on the
intel-iommu machine (test_shared_group.py's `group` fixture does it on every test there).
"""

from __future__ import annotations

import errno

import pytest

from cocolab.guest import Guest

pytestmark = [pytest.mark.topology("shared-group"), pytest.mark.kconfig("VFIO_PCI")]


@pytest.mark.machine("q35")
def test_vfio_pci_probe_fails_without_an_iommu(vm: Guest) -> None:
    a = vm.topology.bdf("nic-a")
    assert vm.pci.iommu_group(a) is None
    vm.dmesg.mark()
    bind = vm.pci.use(a, "vfio-pci")
    assert (bind.ok, bind.errno) == (False, errno.EINVAL), str(bind)
    assert vm.pci.driver_of(a) is None
    # 6.12+: "vfio-pci 0000:..: probe with driver vfio-pci failed with error -22";
    # 6.1: "vfio-pci: probe of 0000:.. failed with error -22"
    assert vm.dmesg.since_mark().grep(rf"{a}.*failed with error -22"), "no probe failure logged"


def test_vfio_pci_binds_with_an_iommu(vm: Guest) -> None:
    a = vm.topology.bdf("nic-a")
    assert vm.pci.iommu_group(a) is not None
    assert vm.pci.use(a, "vfio-pci").ok
    assert vm.pci.driver_of(a) == "vfio-pci"
