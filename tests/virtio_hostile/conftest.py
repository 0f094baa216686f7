"""Fixtures of the hostile-device suite: one VM per kernel (topology virtio-backends) whose
virtio-rng and virtio-blk devices a cocolab back-end serves; each test binds the driver it
needs, with the back-end in the personality it sets, and leaves the device unbound and good.

A test after which the guest cannot be trusted for the next one (a task stuck on a request
the device will never complete) retires the VM: the next test boots a fresh one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cocolab.devices import Personality
from cocolab.guest import Guest
from cocolab.guest.virtio import ServedDevice
from cocolab.rig import Rig


@pytest.fixture
def hostile_lane(cocolab_rig: Rig) -> None:
    """The hostile devices lack VIRTIO_F_ACCESS_PLATFORM, which a confidential guest (a
    simulated one included) refuses before it starts them: there is nothing to test there.
    Skips, before booting, on such a lane."""
    lane = cocolab_rig.lane
    if lane.cc:
        pytest.skip(f"lane {lane.name} boots {lane.cc_words} guests, which refuse these virtio "
                    "devices (no VIRTIO_F_ACCESS_PLATFORM) before starting them, as "
                    "test_device_side.py shows; run the hostile-device tests on a "
                    "non-confidential lane (--lane default)")


def served(vm: Guest, ident: str) -> Iterator[ServedDevice]:
    device = vm.served(ident)
    device.unbind()
    device.backend.personality = Personality.GOOD
    device.backend.campaign = None
    device.backend.forget()
    yield device
    device.backend.campaign = None
    if vm.retired is None:
        device.backend.personality = Personality.GOOD
        device.unbind()


@pytest.fixture
def rng(vm: Guest) -> Iterator[ServedDevice]:
    """The virtio-rng device, unbound; its entropy is what the test feeds the back-end
    (after quiet_khwrngd, or the kernel's own reader may take it first)."""
    yield from served(vm, "rng")


@pytest.fixture
def disk(vm: Guest) -> Iterator[ServedDevice]:
    """The virtio-blk device, unbound, its medium 16 MiB of zeros."""
    vm.served("disk").backend.load(b"")
    yield from served(vm, "disk")


@pytest.fixture
def nic(vm: Guest) -> Iterator[ServedDevice]:
    """The served virtio-net NIC (topology virtio-net-backend), unbound."""
    yield from served(vm, "nic")
