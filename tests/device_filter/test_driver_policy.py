"""Alan Stern's question (2021): authorize drivers, not devices? Mainline already lets user
space keep drivers away: with /sys/bus/pci/drivers_autoprobe at 0 a newly loaded driver binds
nothing, and driver_override names the only driver a device may take; an explicit bind then
works. The counterpart: with autoprobe on, loading the driver binds the device at once.

Source: drivers/base/bus.c drivers_autoprobe / bus_probe_device, and bind_store, which answers
ENODEV when the driver does not match the device; drivers/pci/pci-driver.c pci_match_device
(driver_override: no driver but the named one matches).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from cocolab.guest import Guest
from cocolab.guest.pci import E1000

pytestmark = [
    pytest.mark.qemu_args("-netdev", "user,id=policy-nic,restrict=on",
                          "-device", "e1000,netdev=policy-nic,mac=52:54:00:00:00:05"),
    pytest.mark.kconfig("E1000=m"),
]


@pytest.fixture
def nic(vm: Guest) -> Iterator[str]:
    """The e1000 function, with no e1000 driver loaded; autoprobe back on afterwards."""
    (bdf,) = vm.pci.find(*E1000)
    assert vm.pci.driver_of(bdf) is None, "e1000 must not be loaded at boot for this test"
    yield bdf
    vm.run("! grep -q '^e1000 ' /proc/modules || rmmod e1000", check=True)
    assert vm.write_sysfs("/sys/bus/pci/drivers_autoprobe", "1").ok
    assert vm.pci.driver_override(bdf, None).ok


def test_loading_a_driver_binds_its_devices_by_default(vm: Guest, nic: str) -> None:
    vm.modprobe("e1000")
    assert vm.pci.driver_of(nic) == "e1000"


def test_without_autoprobe_the_device_waits_for_an_explicit_bind(vm: Guest, nic: str) -> None:
    assert vm.write_sysfs("/sys/bus/pci/drivers_autoprobe", "0").ok
    assert vm.pci.driver_override(nic, "e1000").ok
    vm.modprobe("e1000")
    assert vm.pci.driver_of(nic) is None, "autoprobe off, yet the driver took the device"
    assert vm.pci.bind(nic, "e1000").ok
    assert vm.pci.driver_of(nic) == "e1000"


def test_driver_override_refuses_any_other_driver(vm: Guest, nic: str) -> None:
    vm.modprobe("e1000", "pci_stub")
    assert vm.pci.unbind(nic).ok
    assert vm.pci.driver_override(nic, "pci-stub").ok
    refused = vm.pci.bind(nic, "e1000")
    assert not refused.ok, "driver_override names pci-stub, yet e1000 bound"
    assert refused.errno == errno.ENODEV, refused  # bind_store: the driver does not match
    assert vm.pci.bind(nic, "pci-stub").ok
    assert vm.pci.driver_of(nic) == "pci-stub"
    vm.pci.unbind(nic)
