"""The device's side of device filtering: what the back-end saw of a driver that was, or
was not, allowed to use it. A device kept from its driver must never be started: no
features acked, no memory table, no ring, no kick.

Sources: drivers/virtio/virtio.c virtio_dev_probe() calls virtio_features_ok() before
FEATURES_OK and DRIVER_OK, and with restricted memory access (a confidential guest, or the
simulated one: cc_platform_has()) it fails with "device must provide
VIRTIO_F_ACCESS_PLATFORM" and -ENODEV (kernel-behaviors.md §2.3); QEMU starts a vhost-user
device (SET_FEATURES, SET_MEM_TABLE, SET_VRING_*) only on DRIVER_OK
(hw/block/vhost-user-blk.c vhost_user_blk_set_status()). drivers/base/bus.c: with
drivers_autoprobe 0 a loaded driver binds nothing until told.
"""

from __future__ import annotations

import time

import pytest

from cocolab.devices.protocol import F_ACCESS_PLATFORM
from cocolab.guest import Guest
from cocolab.guest.cc import CCProof
from cocolab.guest.virtio import ServedDevice

pytestmark = pytest.mark.topology("virtio-backends-platform")

START = ("SET_FEATURES", "SET_MEM_TABLE", "SET_VRING_ADDR", "SET_VRING_KICK")
"""The messages QEMU sends a back-end when the driver starts the device, in this order."""
SETTLE_S = 1.0
"""How long an absence is waited for: QEMU sends the start messages while the guest's
DRIVER_OK write is still in flight, so they are in the socket before bind returns."""


def started(device: ServedDevice) -> bool:
    """The back-end saw the whole start and a kick (waited for, briefly)."""
    return device.backend.wait(lambda: all(m in device.backend.messages() for m in START)
                               and device.backend.kicks > 0, timeout=5.0)


def guest_acked(vm: Guest, device: ServedDevice, bit: int) -> bool:
    """Whether the guest's driver accepted feature `bit` (sysfs 'features': one character
    per bit, bit 0 first; drivers/virtio/virtio.c features_show())."""
    bits = vm.run(f"cat /sys/bus/virtio/devices/{device.virtio_name()}/features",
                  check=True).stdout.strip()
    return bits[bit] == "1"


def never_started(device: ServedDevice) -> list[str]:
    """The start messages the back-end saw (none, for a device kept from its driver)."""
    time.sleep(SETTLE_S)
    return [m for m in device.backend.messages() if m in START]


@pytest.mark.parametrize("ident, platform", [("disk-plat", True), ("disk-noplat", False)])
def test_a_plain_guest_starts_both(plain_guest: None, vm: Guest, ident: str,
                                   platform: bool) -> None:
    device = vm.served(ident)
    device.unbind()
    device.backend.forget()
    assert device.bind() == (True, "")
    assert started(device), f"not started: {device.backend.messages()}"
    assert guest_acked(vm, device, F_ACCESS_PLATFORM) is platform
    # QEMU strips it from what the back-end is told when no vIOMMU translates the device
    # (hw/virtio/vhost.c vhost_dev_set_features(): !vhost_dev_has_iommu())
    assert not device.backend.acked(F_ACCESS_PLATFORM)


def test_without_autoprobe_a_loaded_driver_leaves_the_device_unstarted(
        plain_guest: None, vm: Guest) -> None:
    """The counterpart of test_a_plain_guest_starts_both: loading the driver is not using
    the device, the explicit bind is."""
    device = vm.served("disk-noplat")
    device.unbind()
    device.backend.forget()
    device.load_driver()
    assert device.bound() is None
    assert never_started(device) == []
    assert device.bind() == (True, "")
    assert started(device)


def test_a_function_kept_from_virtio_pci_never_reaches_a_virtio_driver(
        plain_guest: None, vm: Guest) -> None:
    """driver_override (drivers/pci/pci-driver.c pci_match_device) as device filtering: the
    PCI function goes to pci-stub, no virtio device exists for virtio_blk to take, and the
    device is never started. The counterpart is test_a_plain_guest_starts_both."""
    device = vm.served("disk-noplat")
    device.unbind()
    vm.modprobe("pci_stub")
    assert vm.pci.unbind(device.bdf).ok  # virtio_pci lets go (and resets the device)
    try:
        assert vm.pci.driver_override(device.bdf, "pci-stub").ok
        device.backend.forget()
        assert vm.pci.bind(device.bdf, "pci-stub").ok
        device.load_driver()
        assert vm.pci.driver_of(device.bdf) == "pci-stub"
        assert not vm.run(f"ls -d /sys/bus/pci/devices/{device.bdf}/virtio*").ok
        assert never_started(device) == []
    finally:
        vm.pci.unbind(device.bdf)
        vm.pci.driver_override(device.bdf, None)
        assert vm.pci.bind(device.bdf, "virtio-pci").ok


def since_the_kernel(messages: list[str]) -> list[str]:
    """The messages after the guest kernel took the device over. Firmware may drive a
    virtio-blk before the kernel (SeaBIOS does: its boot disk support starts every one),
    and the kernel's first act, virtio_pci's reset, stops it (GET_VRING_BASE)."""
    return messages[messages.index("GET_VRING_BASE") + 1:] if "GET_VRING_BASE" in messages \
        else messages


def test_a_confidential_guest_never_starts_a_device_without_access_platform(
        cc_guest: CCProof, vm: Guest) -> None:
    device = vm.served("disk-noplat")
    before = len(device.backend.events)
    bound, error = device.bind()  # a built-in driver refused it at boot: this is a retry
    assert not bound and "No such device" in error, (bound, error)
    assert vm.dmesg.read().contains("device must provide VIRTIO_F_ACCESS_PLATFORM")
    time.sleep(SETTLE_S)
    started_after = [m for m in since_the_kernel(device.backend.messages()) if m in START]
    assert started_after == [], "the device was started after the kernel took it over"
    assert not [e for e in device.backend.events[before:] if e.kind in ("kick", "request")]


def test_a_confidential_guest_starts_the_device_with_access_platform(
        cc_guest: CCProof, vm: Guest) -> None:
    """The control: the same driver, the same guest, a device that offers the feature."""
    device = vm.served("disk-plat")
    assert device.bind() == (True, "")
    assert guest_acked(vm, device, F_ACCESS_PLATFORM)
    assert device.backend.started
    vm.run(f"dd if=/dev/{device.block_device()} of=/dev/null bs=4096 count=1 iflag=direct",
           check=True)
    assert device.backend.requests, "the device served no request"
