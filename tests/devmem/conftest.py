"""The machine every /dev/mem test runs on, and fixtures that find addresses in the guest.

Devices added to the default q35 VM:
  edu    QEMU's educational device (1234:11e8). No Linux driver claims it, so its 1 MiB BAR0 is
         an idle BAR; register 0 reads 0x010000ed, which proves a mapping reached the device.
  e1000  an Intel 82540EM NIC (8086:100e) whose driver is loaded at boot and claims BAR0
         ('e1000' busy under the BAR in /proc/iomem): the claimed BAR.
Every address is read from the booted guest (/proc/iomem, sysfs); none is hard-coded.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from cocolab.errors import TopologyError
from cocolab.guest import Guest
from cocolab.guest.iomem import IOMem
from cocolab.guest.pci import E1000, EDU, PciBar

HERE = Path(__file__).parent

DEVMEM_MACHINE = (
    pytest.mark.qemu_args(
        "-device", "edu",
        "-netdev", "user,id=devmem-nic,restrict=on",
        "-device", "e1000,netdev=devmem-nic,mac=52:54:00:00:00:02",
    ),
    pytest.mark.modules("e1000"),
)


@pytest.fixture
def plain_dev_mem(vm: Guest, cocolab_rig) -> None:
    """The test needs /dev/mem and /dev/port open, as root has them in a plain guest. A
    confidential guest whose kernel has the CC rule refuses both at open with EPERM
    (test_confidential_guest.py asserts that): there the test skips, saying so. On a CC
    lane whose kernel lacks the rule, the test runs."""
    if not cocolab_rig.lane.cc:
        return
    for path in ("/dev/mem", "/dev/port"):
        opened = vm.probe("open", path)
        if not opened.ok and opened.errno == errno.EPERM:
            pytest.skip(f"{path} is closed in this {cocolab_rig.lane.cc_words} guest (open: "
                        "EPERM, the CC rule; test_confidential_guest.py asserts it): this "
                        "test is about a plain guest's /dev/mem and runs on --lane default")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # before the cocolab plugin keys VMs by their markers
    for item in items:
        if item.path.is_relative_to(HERE) and "vm" in getattr(item, "fixturenames", ()):
            for mark in DEVMEM_MACHINE:
                item.add_marker(mark)
            if "claimed_bar" in item.fixturenames:  # the claim is the e1000 driver's
                item.add_marker(pytest.mark.kconfig("E1000"))


@pytest.fixture
def iomem(vm: Guest) -> IOMem:
    return vm.iomem()


def _bar0(vm: Guest, ids: tuple[int, int], name: str) -> PciBar:
    found = vm.pci.find(*ids)
    if len(found) != 1:
        raise TopologyError(f"expected one {name} ({ids[0]:04x}:{ids[1]:04x}) in the guest, "
                            f"found {found}")
    bdf = found[0]
    bar = next((b for b in vm.pci.bars(bdf) if b.index == 0 and b.is_mem), None)
    if bar is None:
        raise TopologyError(f"{name} {bdf} has no memory BAR0")
    res = vm.iomem().find(bar.start)
    claim = res.busy_child.name if res and res.busy_child else None
    return PciBar(bdf, bar, claim)


@pytest.fixture
def idle_bar(vm: Guest) -> PciBar:
    """edu's BAR0: no driver has claimed it."""
    bar = _bar0(vm, EDU, "edu")
    if bar.claimed_by is not None:
        raise TopologyError(f"edu BAR0 should be idle but /proc/iomem shows {bar.claimed_by!r}")
    return bar


@pytest.fixture
def claimed_bar(vm: Guest) -> PciBar:
    """e1000's BAR0, claimed by the e1000 driver."""
    bar = _bar0(vm, E1000, "e1000")
    if bar.claimed_by != "e1000":
        raise TopologyError(f"e1000 BAR0 should be claimed by the e1000 driver, /proc/iomem "
                            f"shows {bar.claimed_by!r} (driver: {vm.pci.driver_of(bar.bdf)})")
    return bar
