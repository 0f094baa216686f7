"""Virtio devices a confidential guest must refuse, and the plain guest that accepts them.

Source: kernel-behaviors.md §2.3. With CC_ATTR_GUEST_MEM_ENCRYPT, mem_encrypt_setup_arch()
installs virtio_require_restricted_mem_acc(); virtio_features_ok() (drivers/virtio/virtio.c)
then fails the probe with -ENODEV and logs "device must provide VIRTIO_F_VERSION_1" or
"device must provide VIRTIO_F_ACCESS_PLATFORM". QEMU's TDX/SEV machines turn iommu_platform
on by default, so the topology switches it off explicitly. The rule asks cc_platform_has()
only, so a simulated TDX guest (--lane cc-sim-tdx) runs it as a real one does.
"""

from __future__ import annotations

import pytest

from cocolab.guest import Guest
from cocolab.guest.cc import CCProof

pytestmark = pytest.mark.topology("virtio-restricted")

CASES = [("vnet-legacy", "VIRTIO_F_VERSION_1"), ("vnet-noplat", "VIRTIO_F_ACCESS_PLATFORM")]


def virtio_driver(vm: Guest, ident: str) -> str | None:
    bdf = vm.topology.bdf(ident)
    r = vm.run(f"readlink /sys/bus/pci/devices/{bdf}/virtio*/driver")
    return r.stdout.strip().rsplit("/", 1)[-1] if r.ok and r.stdout.strip() else None


@pytest.mark.parametrize("ident, feature", CASES)
def test_a_plain_guest_binds_them(plain_guest: None, vm: Guest, ident: str,
                                  feature: str) -> None:
    """The counterpart: nothing restricts virtio outside a confidential guest."""
    assert virtio_driver(vm, ident) == "virtio_net"
    assert not vm.dmesg.read().contains(f"device must provide {feature}")


@pytest.mark.parametrize("ident, feature", CASES)
def test_a_confidential_guest_refuses_them(cc_guest: CCProof, vm: Guest, ident: str,
                                           feature: str) -> None:
    assert virtio_driver(vm, ident) is None
    assert vm.dmesg.read().contains(f"device must provide {feature}")


def test_a_confidential_guest_binds_a_device_with_access_platform(cc_guest: CCProof,
                                                                   vm: Guest) -> None:
    """The control of the refusals: the same driver binds a modern device that offers
    VIRTIO_F_ACCESS_PLATFORM, so a refusal above is the rule, not a broken driver."""
    assert virtio_driver(vm, "vnet-plat") == "virtio_net"


def test_a_plain_guest_binds_the_control_too(plain_guest: None, vm: Guest) -> None:
    assert virtio_driver(vm, "vnet-plat") == "virtio_net"
