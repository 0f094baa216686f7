"""The out-of-tree PCI device filter (intel/tdx guest-filter kernels): `authorized` per device.

Runs only where the kernel exposes /sys/bus/pci/devices/*/authorized; the rules themselves are
in cocolab.guest.authorization and unit-tested against fake sysfs trees
(tests/unit/test_authorization.py), so they are exercised even without such a kernel.
"""

from __future__ import annotations

import errno

import pytest

from cocolab.guest import Guest
from cocolab.guest import authorization as auth


@pytest.fixture
def devices(vm: Guest) -> list[auth.PciAuth]:
    found = auth.parse(vm.run(auth.READ, check=True).stdout)
    if not auth.has_authorization(found):
        pytest.skip(auth.NO_AUTHORIZATION)
    return found


def test_authorization_follows_the_allow_list(vm: Guest, devices: list[auth.PciAuth]) -> None:
    cmdline = vm.run("cat /proc/cmdline", check=True).stdout
    assert auth.violations(devices, auth.allow_list(cmdline)) == []


def test_an_unauthorized_device_cannot_be_bound_until_authorized(
        vm: Guest, devices: list[auth.PciAuth]) -> None:
    blocked = [d for d in devices if d.authorized == 0]
    if not blocked:
        pytest.skip("every PCI device of this guest is authorized; add one off the allow list")
    dev = blocked[0]
    bind = vm.pci.bind(dev.bdf, "pci-stub")
    assert (bind.ok, bind.errno) == (False, errno.ENODEV), str(bind)
    assert vm.write_sysfs(f"/sys/bus/pci/devices/{dev.bdf}/authorized", "1").ok
    assert vm.pci.driver_override(dev.bdf, "pci-stub").ok
    assert vm.pci.bind(dev.bdf, "pci-stub").ok
