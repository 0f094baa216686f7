"""Two NICs behind one pci-bridge share an IOMMU group: VFIO on one against drivers on the other.

Topology shared-group: {br0, nic-a, nic-b} in one group (qemu-configs/README.md), q35 with
intel-iommu,intremap=on. nic-a goes to vfio-pci; nic-b's driver decides.
"""

from __future__ import annotations

import errno

import pytest

from cocolab.assertions import assert_allowed, assert_denied
from cocolab.guest import Guest

pytestmark = [pytest.mark.topology("shared-group"),
              pytest.mark.kconfig("VFIO", "VFIO_PCI", "VFIO_IOMMU_TYPE1", "PCI_STUB")]


@pytest.fixture
def group(vm: Guest) -> str:
    """nic-a on vfio-pci; the group's number."""
    a = vm.topology.bdf("nic-a")
    assert vm.pci.use(a, "vfio-pci").ok
    number = vm.pci.iommu_group(a)
    assert number is not None and number == vm.pci.iommu_group(vm.topology.bdf("nic-b"))
    return number


def test_a_kernel_dma_driver_makes_the_group_not_viable(vm: Guest, group: str) -> None:
    assert vm.pci.driver_of(vm.topology.bdf("nic-b")) == "e1000"
    status = vm.vfio.status(group)
    assert_allowed(status)
    assert status.extra["viable"] is False
    assert_denied(vm.vfio.attach(group, vm.topology.bdf("nic-a")), errno.EPERM,
                  stage="set-container")


def test_pci_stub_keeps_the_group_viable(vm: Guest, group: str) -> None:
    """The counterpart: the same group with nic-b on pci-stub (driver_managed_dma)."""
    assert vm.pci.use(vm.topology.bdf("nic-b"), "pci-stub").ok
    assert vm.vfio.status(group).extra["viable"] is True
    attached = vm.vfio.attach(group, vm.topology.bdf("nic-a"))
    assert_allowed(attached)
    assert attached.extra["flags_after"] == 3  # VIABLE | CONTAINER_SET
    assert attached.extra["device"] == vm.topology.bdf("nic-a")


@pytest.fixture
def owned(vm: Guest, group: str):
    """The group held by user space (container set, device fd open), nic-b left driverless."""
    b = vm.topology.bdf("nic-b")
    assert vm.pci.use(b, "pci-stub").ok
    with vm.vfio.hold(group, vm.topology.bdf("nic-a")) as held:
        assert_allowed(held.first)
        assert vm.pci.unbind(b).ok and vm.pci.driver_override(b, None).ok
        yield held


def test_an_owned_group_refuses_a_kernel_dma_driver_silently(vm: Guest, owned) -> None:
    b = vm.topology.bdf("nic-b")
    vm.dmesg.mark()
    bind = vm.pci.bind(b, "e1000")
    assert (bind.ok, bind.errno) == (False, errno.EBUSY), str(bind)
    assert vm.pci.driver_of(b) is None
    # the refusal comes from dma_configure, before the driver's probe: nothing is logged
    assert vm.dmesg.since_mark().grep(b) == []


def test_an_owned_group_rejects_drivers_probe(vm: Guest, owned) -> None:
    b = vm.topology.bdf("nic-b")
    probe = vm.pci.drivers_probe(b)
    assert (probe.ok, probe.errno) == (False, errno.EINVAL), str(probe)
    assert vm.pci.driver_of(b) is None


def test_an_owned_group_accepts_pci_stub(vm: Guest, owned) -> None:
    b = vm.topology.bdf("nic-b")
    assert vm.pci.driver_override(b, "pci-stub").ok
    assert vm.pci.bind(b, "pci-stub").ok
    assert vm.pci.driver_of(b) == "pci-stub"


def test_an_owned_group_cannot_be_opened_twice(vm: Guest, owned, group: str) -> None:
    assert_denied(vm.vfio.status(group), errno.EBUSY, stage="open")


def test_after_release_the_kernel_driver_binds_again(vm: Guest, owned, group: str) -> None:
    """The counterpart of the EBUSY and of the second open."""
    assert_allowed(owned.finish("release"))
    assert_allowed(vm.vfio.status(group))
    b = vm.topology.bdf("nic-b")
    assert vm.pci.bind(b, "e1000").ok
    assert vm.pci.driver_of(b) == "e1000"


@pytest.mark.kconfig("IOMMUFD")
def test_iommufd_as_container_then_device_fd_is_refused(vm: Guest, group: str) -> None:
    """With iommufd as the container, SET_CONTAINER succeeds even with e1000 on nic-b, and the
    ownership check moves to the device: GET_DEVICE_FD fails EPERM (iommufd_device_bind)."""
    result = vm.vfio.attach(group, vm.topology.bdf("nic-a"), iommufd=True)
    assert_denied(result, errno.EPERM, stage="get-device-fd")
