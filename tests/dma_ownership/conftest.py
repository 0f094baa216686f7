"""DMA ownership suite: shared fixtures.

Rules (kernel-behaviors.md §3; Lu Baolu's "Fix BUG_ON in vfio_iommu_group_notifier()" series,
mainline v5.19): a kernel driver's probe calls iommu_device_use_default_domain() from
pci_dma_configure() unless the driver sets driver_managed_dma (vfio-pci, pci-stub, pcieport),
and fails -EBUSY while user space owns the group; user space cannot claim a group
(iommu_group_claim_dma_owner) while a kernel DMA driver is bound in it (-EPERM).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cocolab.guest import Guest

HERE = Path(__file__).parent
MODULES = pytest.mark.modules("e1000", "e1000e", "vfio_pci", "vfio_iommu_type1", "pci_stub")
KCONFIG = pytest.mark.kconfig("E1000", "E1000E", "VFIO_PCI", "VFIO_IOMMU_TYPE1", "PCI_STUB")
"""What those modules need of the kernel: a kernel without one skips the suite naming it
(on a MODULES=n build a module name proves nothing, and e1000e's bind failed ENOENT)."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # every guest of this suite loads the NIC drivers, VFIO and pci-stub at boot; added
    # before the cocolab plugin keys VMs by their markers
    for item in items:
        if item.path.is_relative_to(HERE) and "vm" in getattr(item, "fixturenames", ()):
            item.add_marker(MODULES)
            item.add_marker(KCONFIG)


@pytest.fixture(autouse=True)
def restore_drivers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests move devices between drivers. When the VM has a snapshot, the next test gets a
    restore of it (the guest as booted, whatever this test left); without one, every declared
    device is put back on its driver so the VM can be shared, or the VM retired if that
    fails."""
    if "vm" not in request.fixturenames:
        yield
        return
    vm: Guest = request.getfixturevalue("vm")
    if vm.expected is None:
        yield
        return
    if vm.snapshot is not None:
        yield
        vm.retire("tests/dma_ownership moves devices between drivers: the next test gets a "
                  "restore", planned=True)
        return
    before = vm.pci.drivers([p.bdf for p in vm.expected.placed.values()])
    yield
    vm.pci.restore(before)  # checked: a failed restore retires the VM (RestoreError)
