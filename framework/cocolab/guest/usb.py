"""USB devices as the guest sees them in /sys/bus/usb/devices, and their authorization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cocolab.errors import TopologyError
from cocolab.guest.sysfs import SysfsWrite, write_sysfs

if TYPE_CHECKING:
    from cocolab.vm import VM

SYSFS = "/sys/bus/usb/devices"
_LIST = (f"cd {SYSFS} && for d in *; do echo \"$d|$(cat $d/product 2>/dev/null)|"
         "$(cat $d/authorized 2>/dev/null)|$(cat $d/bConfigurationValue 2>/dev/null)|"
         "$(readlink $d/driver | sed 's,.*/,,')\"; done")


@dataclass(frozen=True)
class UsbEntry:
    """A device (1-2, usb1) or an interface (1-2:1.0) under /sys/bus/usb/devices."""

    name: str
    product: str
    authorized: str
    configuration: str
    driver: str

    @property
    def is_interface(self) -> bool:
        return ":" in self.name


def parse(text: str) -> list[UsbEntry]:
    return [UsbEntry(*line.split("|", 4)) for line in text.splitlines() if line.count("|") == 4]


class USB:
    def __init__(self, vm: VM):
        self._vm = vm

    def entries(self) -> list[UsbEntry]:
        return parse(self._vm.run(_LIST, check=True).stdout)

    def device(self, product: str) -> UsbEntry:
        found = [e for e in self.entries() if e.product == product and not e.is_interface]
        if len(found) != 1:
            raise TopologyError(f"expected one USB device {product!r}, found {found}")
        return found[0]

    def interfaces(self, device: UsbEntry) -> list[UsbEntry]:
        return [e for e in self.entries() if e.name.startswith(device.name + ":")]

    def wait_for(self, products: list[str], seconds: int = 20) -> None:
        """Hubs report ports asynchronously: wait until every product has enumerated."""
        checks = " && ".join(f"grep -qx '{p}' {SYSFS}/*/product" for p in products)
        r = self._vm.run(f"for i in $(seq {seconds * 5}); do {checks} && exit 0; sleep 0.2; "
                         "done; exit 1", timeout=seconds + 10)
        if not r.ok:
            raise TopologyError(f"USB devices {products} did not all enumerate in {seconds}s; "
                                f"the guest has {[e.product for e in self.entries()]}")

    def authorize(self, name: str, value: int) -> SysfsWrite:
        return write_sysfs(self._vm, f"{SYSFS}/{name}/authorized", str(value))

    def hub_attr(self, hub: str, attr: str) -> str:
        return self._vm.run(f"cat {SYSFS}/{hub}/{attr}", check=True).stdout.strip()

    def set_hub_attr(self, hub: str, attr: str, value: int) -> SysfsWrite:
        return write_sysfs(self._vm, f"{SYSFS}/{hub}/{attr}", str(value))
