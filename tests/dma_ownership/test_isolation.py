"""Where groups are separate, ownership of one does not touch the other; where functions of
one slot share a group, the shared-group rules hold for them too."""

from __future__ import annotations

import errno

import pytest

from cocolab.assertions import assert_allowed, assert_denied
from cocolab.guest import Guest

pytestmark = [pytest.mark.kconfig("VFIO_PCI", "VFIO_IOMMU_TYPE1", "PCI_STUB")]


@pytest.mark.topology("root-ports-acs")
def test_root_ports_with_acs_keep_groups_independent(vm: Guest) -> None:
    nic1, nic2 = vm.topology.bdf("nic1"), vm.topology.bdf("nic2")
    assert vm.pci.iommu_group(nic1) != vm.pci.iommu_group(nic2)
    assert vm.pci.use(nic1, "vfio-pci").ok
    group = vm.pci.iommu_group(nic1)
    assert group is not None
    assert vm.pci.driver_of(nic2) == "e1000e"
    with vm.vfio.hold(group, nic1) as held:
        assert_allowed(held.first)  # e1000e on nic2 is no obstacle
        assert vm.pci.unbind(nic2).ok
        assert vm.pci.bind(nic2, "e1000e").ok  # and nic2 binds while nic1's group is owned


@pytest.mark.topology("root-ports-acs")
def test_an_acs_less_port_shares_its_group_but_pcieport_is_exempt(vm: Guest) -> None:
    """rp3 has ACS off, so {rp3, nic3} is one group; pcieport is driver_managed_dma, so the
    group is still viable with nic3 on vfio-pci."""
    nic3, rp3 = vm.topology.bdf("nic3"), vm.topology.bdf("rp3")
    assert vm.pci.iommu_group(nic3) == vm.pci.iommu_group(rp3)
    assert vm.pci.driver_of(rp3) == "pcieport"
    assert vm.pci.use(nic3, "vfio-pci").ok
    group = vm.pci.iommu_group(nic3)
    assert group is not None
    assert_allowed(vm.vfio.attach(group, nic3))


@pytest.mark.topology("multifunction")
def test_functions_of_one_slot_follow_the_shared_group_rules(vm: Guest) -> None:
    fn0, fn1 = vm.topology.bdf("fn0"), vm.topology.bdf("fn1")
    assert vm.pci.use(fn1, "e1000e").ok
    assert vm.pci.use(fn0, "vfio-pci").ok
    group = vm.pci.iommu_group(fn0)
    assert group is not None and group == vm.pci.iommu_group(fn1)
    assert vm.vfio.status(group).extra["viable"] is False
    assert_denied(vm.vfio.attach(group, fn0), errno.EPERM, stage="set-container")
    # counterpart: fn1 on pci-stub
    assert vm.pci.use(fn1, "pci-stub").ok
    assert_allowed(vm.vfio.attach(group, fn0))
