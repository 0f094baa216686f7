"""Virtio devices a test serves itself (cocolab.devices), seen from both sides: the back-end
beside the VM (a sidecar), and the guest's virtio device and driver for it."""

from __future__ import annotations

import posixpath
import shlex
from typing import TYPE_CHECKING

from cocolab.errors import RigBug
from cocolab.sidecars import BackendSidecar

if TYPE_CHECKING:
    from cocolab.guest import Guest

DRIVERS = {"vhost-user-rng": "virtio_rng", "vhost-user-blk": "virtio_blk",
           "vhost-user-net": "virtio_net"}
"""The guest driver of each back-end's device type (its module and its driver name)."""





class ServedDevice:
    """A device a cocolab back-end serves, from both sides: `backend` (what the device saw,
    how it behaves) and the guest's virtio device on the device's PCI function, whose driver
    the test binds when it is ready (none is bound at boot: /init loads no such driver)."""

    def __init__(self, vm: Guest, ident: str) -> None:
        sidecar = vm.sidecars.get(ident)
        if not isinstance(sidecar, BackendSidecar):
            raise RigBug(f"cocolab bug: device {ident!r} has no vhost-user back-end")
        self.vm, self.ident = vm, ident
        self.backend = sidecar.backend
        self.driver = DRIVERS[sidecar.backend_name]
        self.bdf = vm.topology.bdf(ident)

    def virtio_name(self) -> str:
        """The virtio bus device ('virtio3') the PCI function carries."""
        found = self.vm.run(f"cd /sys/bus/pci/devices/{self.bdf} && ls -d virtio*", check=True)
        return found.stdout.split()[0]

    def bound(self) -> str | None:
        link = self.vm.run(f"readlink /sys/bus/virtio/devices/{self.virtio_name()}/driver")
        return posixpath.basename(link.stdout.strip()) if link.ok and link.stdout.strip() \
            else None

    def load_driver(self) -> None:
        """Load the driver with automatic probing off on the virtio bus: it binds nothing
        until bind() names a device. A built-in driver (a kernel built without it as a
        module) is there already, and probed every device at boot."""
        self.vm.run("echo 0 > /sys/bus/virtio/drivers_autoprobe", check=True)
        if self.vm.run(f"test -d /sys/bus/virtio/drivers/{self.driver}").ok:
            return
        self.vm.modprobe(self.driver)

    def bind(self) -> tuple[bool, str]:
        """Bind the driver to this device alone (loading it first). Whether it bound (or
        was bound already), and the shell's error when it did not."""
        self.load_driver()
        if self.bound() == self.driver:
            return True, ""
        result = self.vm.run(f"echo {shlex.quote(self.virtio_name())} > "
                             f"/sys/bus/virtio/drivers/{self.driver}/bind")
        return result.ok, result.stderr.strip()

    def unbind(self) -> None:
        if self.bound():
            self.vm.run(f"echo {shlex.quote(self.virtio_name())} > "
                        f"/sys/bus/virtio/drivers/{self.driver}/unbind", check=True)

    def interface(self) -> str:
        """virtio-net: the network interface's name ('eth1'), once bound."""
        found = self.vm.run(f"ls /sys/bus/virtio/devices/{self.virtio_name()}/net", check=True)
        return found.stdout.split()[0]

    def block_device(self) -> str:
        """virtio-blk: the disk's name in /dev ('vda'), once bound."""
        found = self.vm.run(f"ls /sys/bus/virtio/devices/{self.virtio_name()}/block", check=True)
        return found.stdout.split()[0]
