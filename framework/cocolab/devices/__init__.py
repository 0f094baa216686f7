"""Virtio device back-ends in Python, served to QEMU over vhost-user: the device side a test
reads (what the driver did) and writes (how the device misbehaves).

    RngBackend   vhost-user-rng-pci: entropy the test feeds
    BlkBackend   vhost-user-blk-pci: a medium the test loads, config space included
    NetBackend   virtio-net-pci on -netdev vhost-user: frames the test injects and reads

Written from QEMU's docs/interop/vhost-user.rst and the virtio 1.2 specification.
"""

from cocolab.devices.backend import Backend, Event, Personality, Served
from cocolab.devices.blk import BlkBackend
from cocolab.devices.net import NetBackend
from cocolab.devices.rng import RngBackend

BACKENDS: dict[str, type[Backend]] = {"vhost-user-rng": RngBackend,
                                      "vhost-user-blk": BlkBackend,
                                      "vhost-user-net": NetBackend}
"""A topology's `backend` key, and the class that serves it."""

__all__ = ["BACKENDS", "Backend", "BlkBackend", "Event", "NetBackend", "Personality",
           "RngBackend", "Served"]
