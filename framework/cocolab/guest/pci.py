"""PCI devices as the guest kernel sees them in sysfs: find, resources, drivers, binding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cocolab.errors import RestoreError
from cocolab.guest.sysfs import SysfsWrite, read_attributes, write_sysfs

if TYPE_CHECKING:
    from cocolab.vm import VM

SYSFS = "/sys/bus/pci/devices"
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
IORESOURCE_MEM_64 = 0x100000


@dataclass(frozen=True)
class Bar:
    index: int
    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def is_mem(self) -> bool:
        return bool(self.flags & IORESOURCE_MEM)


class PCI:
    def __init__(self, vm: VM):
        self._vm = vm

    def devices(self) -> dict[str, tuple[int, int]]:
        """{BDF: (vendor, device)} for every PCI function."""
        found = read_attributes(self._vm, SYSFS, ("vendor", "device"))
        return {bdf: (int(a["vendor"], 16), int(a["device"], 16)) for bdf, a in found.items()}

    def find(self, vendor: int, device: int) -> list[str]:
        return sorted(b for b, ids in self.devices().items() if ids == (vendor, device))

    def bars(self, bdf: str) -> list[Bar]:
        text = self._vm.run(f"cat {SYSFS}/{bdf}/resource", check=True).stdout
        bars = []
        for i, line in enumerate(text.splitlines()[:6]):
            start, end, flags = (int(x, 16) for x in line.split())
            if start or end:
                bars.append(Bar(i, start, end, flags))
        return bars

    def driver_of(self, bdf: str) -> str | None:
        r = self._vm.run(f"readlink {SYSFS}/{bdf}/driver")
        return r.stdout.strip().rsplit("/", 1)[-1] if r.ok else None

    def unbind(self, bdf: str) -> SysfsWrite:
        driver = self.driver_of(bdf)
        if driver is None:
            return SysfsWrite(f"{SYSFS}/{bdf}/driver/unbind", True)
        return write_sysfs(self._vm, f"/sys/bus/pci/drivers/{driver}/unbind", bdf)

    def bind(self, bdf: str, driver: str) -> SysfsWrite:
        return write_sysfs(self._vm, f"/sys/bus/pci/drivers/{driver}/bind", bdf)

    def driver_override(self, bdf: str, driver: str | None) -> SysfsWrite:
        """Set (or with None clear) which driver alone may bind the device."""
        return write_sysfs(self._vm, f"{SYSFS}/{bdf}/driver_override", driver or "")

    def drivers_probe(self, bdf: str) -> SysfsWrite:
        """Ask the PCI core to find a driver for the device (/sys/bus/pci/drivers_probe)."""
        return write_sysfs(self._vm, "/sys/bus/pci/drivers_probe", bdf)

    def use(self, bdf: str, driver: str) -> SysfsWrite:
        """Move the device to `driver`: unbind, override, bind. Returns the bind's outcome."""
        if self.driver_of(bdf) == driver:
            return SysfsWrite(f"/sys/bus/pci/drivers/{driver}/bind", True)
        unbound = self.unbind(bdf)
        if not unbound.ok:
            return unbound
        self.driver_override(bdf, driver)
        return self.bind(bdf, driver)

    def drivers(self, bdfs: list[str]) -> dict[str, str | None]:
        """{BDF: bound driver or None}: a snapshot for restore()."""
        return {bdf: self.driver_of(bdf) for bdf in bdfs}

    def restore(self, drivers: dict[str, str | None]) -> None:
        """Put each device back on the driver it had (a snapshot from drivers()), checking
        every step; a device that cannot be put back raises RestoreError and retires the VM,
        so the next test does not inherit the mess."""
        for bdf, driver in drivers.items():
            if self.driver_of(bdf) == driver:
                continue
            steps = [("unbind", self.unbind(bdf)), ("clear override", self.driver_override(bdf,
                                                                                     None))]
            if driver is not None:
                steps += [("override", self.driver_override(bdf, driver)),
                          ("bind", self.bind(bdf, driver)),
                          ("clear override", self.driver_override(bdf, None))]
            now = self.driver_of(bdf)
            if now != driver:
                failed = "; ".join(f"{name}: {w}" for name, w in steps if not w.ok) or \
                    "every write succeeded"
                why = f"could not put {bdf} back on {driver or 'no driver'} (now {now}): {failed}"
                self._vm.retire(why)
                raise RestoreError(why)

    def iommu_group(self, bdf: str) -> str | None:
        r = self._vm.run(f"readlink {SYSFS}/{bdf}/iommu_group")
        return r.stdout.strip().rsplit("/", 1)[-1] if r.ok else None


@dataclass(frozen=True)
class PciBar:
    """One BAR of one function, with the driver claim /proc/iomem shows under it (if any)."""

    bdf: str
    bar: Bar
    claimed_by: str | None

    @property
    def sysfs_resource(self) -> str:
        return f"{SYSFS}/{self.bdf}/resource{self.bar.index}"


EDU = (0x1234, 0x11E8)
"""QEMU's educational device; no Linux driver binds it."""
EDU_ID = bytes.fromhex("ed000001")
"""edu register 0x00 (identification, 0x010000ed) as little-endian bytes."""
E1000 = (0x8086, 0x100E)
