"""What Linux will see, computed from the declaration alone: addresses, BDFs, IOMMU groups.

Bus numbers follow Linux's (and SeaBIOS's) depth-first scan: on each bus, functions in
(slot, function) order; each bridge met takes the next bus number and is scanned at once.
Groups follow drivers/iommu/iommu.c pci_device_group():
  1. a device behind a conventional PCI bridge or a PCIe-to-PCI bridge aliases to that bridge
     and joins its group;
  2. otherwise, walking up, the first port whose path to the root is not fully ACS-isolated
     (pci_acs_path_enabled) hands the device its own group;
  3. otherwise functions of one multifunction slot without ACS share a group;
  4. otherwise the device is alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cocolab.errors import ConfigError, present
from cocolab.topology.models import Kind
from cocolab.topology.schema import Device, Machine, Topology

ROOT_FIRST_SLOT = 0x08
"""Auto addresses on the root bus start here: the low slots stay free for the machine's own
devices and cocolab's SSH NIC, which QEMU places in the first free slot."""


@dataclass(frozen=True)
class Placed:
    device: Device
    bus_id: str | None
    slot: int
    function: int
    bus: int
    secondary: int | None = None

    @property
    def bdf(self) -> str:
        return f"0000:{self.bus:02x}:{self.slot:02x}.{self.function}"

    @property
    def addr(self) -> str:
        return f"{self.slot:02x}.{self.function}"

    def ids(self, under_port: bool) -> tuple[int, int, int]:
        """(vendor, device, class) as the guest's sysfs shows them."""
        m = self.device.model
        device = m.device
        if m.modern_device:
            # virtio-pci: legacy is off by default below a PCIe port (virtio_pci_realize)
            legacy = not under_port and not (m.vhost_user_modern_only
                                             and self.device.prop("backend"))
            if self.device.prop("disable-legacy") is not None:
                legacy = not self.device.prop("disable-legacy")
            if not legacy:
                device = m.modern_device
        return m.vendor, device, m.klass


@dataclass(frozen=True)
class ExpectedView:
    topology: Topology
    machine: Machine
    placed: dict[str, Placed]
    """PCI functions by device id (USB devices are not PCI functions)."""
    groups: tuple[frozenset[str], ...] | None
    """IOMMU groups as sets of device ids; None when the machine's guest forms none at boot
    (no vIOMMU, or virtio-iommu: see Machine.groups_at_boot)."""
    parents: dict[str, str | None] = field(default_factory=dict)

    def under_port(self, ident: str) -> bool:
        parent = self.parents.get(ident)
        return parent is not None and self.topology.device(parent).model.kind in (
            Kind.ROOT_PORT, Kind.SWITCH_DOWN)

    def expected_ids(self, ident: str) -> tuple[int, int, int]:
        return self.placed[ident].ids(self.under_port(ident))



ROOT_SLOTS_TAKEN: dict[str, dict[int, str]] = {
    "q35": {0x00: "the host bridge (00.0)", 0x1F: "the ICH9 LPC, SATA and SMBus functions"},
    "pc": {0x00: "the host bridge (00.0)", 0x01: "the PIIX3 ISA, IDE, USB and ACPI functions"},
}
"""Root-bus slots a machine fills itself, even with -nodefaults (hw/i386/pc_q35.c,
pc_piix.c)."""


def _check_machine(topo: Topology, machine: Machine) -> None:
    for dev in topo.devices:
        where = f"{topo.source}: device {dev.id!r}"
        kind = dev.model.kind
        if not machine.has_pci and kind is not Kind.USB_DEVICE:
            raise ConfigError(f"{where}: machine {machine.name} ({machine.type}) has no PCI "
                              "bus; add options = [\"pcie=on\"] to the machine")
        on_root = dev.bus is None and dev.slot is not None
        owner = ROOT_SLOTS_TAKEN.get(machine.type, {}).get(dev.slot or 0) if on_root else None
        if owner is not None:
            raise ConfigError(f"{where}: key 'addr' {dev.slot:02x}.{dev.function} is taken: "
                              f"{owner} on {machine.type}; choose another slot (or leave "
                              "'addr' out)")
        pcie_only = kind in (Kind.ROOT_PORT, Kind.PCIE_PCI_BRIDGE)
        if pcie_only and dev.bus is None and not machine.root_is_pcie:
            raise ConfigError(f"{where}: a {dev.model.name} needs a PCIe root bus; machine "
                              f"{machine.name} is {machine.type} (conventional PCI): use q35")


def _assign_addresses(topo: Topology) -> dict[str, tuple[int, int]]:
    taken: dict[str | None, set[int]] = {}
    for dev in topo.devices:
        if dev.slot is not None:
            taken.setdefault(dev.bus, set()).add(dev.slot)
    out: dict[str, tuple[int, int]] = {}
    for dev in topo.devices:
        if dev.model.kind is Kind.USB_DEVICE:
            continue
        if dev.slot is not None:
            out[dev.id] = (dev.slot, present(dev.function, f"the function of {dev.id}"))
            continue
        parent_kind = topo.device(dev.bus).model.kind if dev.bus else None
        if parent_kind is not None and parent_kind.is_port:
            slot = 0
            if slot in taken.setdefault(dev.bus, set()):
                raise ConfigError(f"{topo.source}: device {dev.id!r}: the port {dev.bus!r} "
                                  "already has a device in its only slot")
        else:
            # a switch's internal bus starts at slot 0; a PCI bridge's at 1
            first = (ROOT_FIRST_SLOT if dev.bus is None else
                     0 if parent_kind is Kind.SWITCH_UP else 1)
            used = taken.setdefault(dev.bus, set())
            slot = next((s for s in range(first, 32) if s not in used), -1)
            if slot < 0:
                raise ConfigError(f"{topo.source}: device {dev.id!r}: no free slot left on "
                                  f"bus {dev.bus or 'root'}")
        taken[dev.bus].add(slot)
        out[dev.id] = (slot, 0)
    return out


def expected_view(topo: Topology, machine: Machine) -> ExpectedView:
    _check_machine(topo, machine)
    addrs = _assign_addresses(topo)
    children: dict[str | None, list[Device]] = {}
    for dev in topo.devices:
        if dev.model.kind is not Kind.USB_DEVICE:
            children.setdefault(dev.bus, []).append(dev)
    placed: dict[str, Placed] = {}
    order: list[str] = []
    next_bus = 1

    def scan(bus_id: str | None, bus_number: int) -> None:
        nonlocal next_bus
        for dev in sorted(children.get(bus_id, []), key=lambda d: addrs[d.id]):
            slot, fn = addrs[dev.id]
            secondary = None
            if dev.model.kind.is_bridge:
                secondary = next_bus
                next_bus += 1
            placed[dev.id] = Placed(dev, bus_id, slot, fn, bus_number, secondary)
            order.append(dev.id)
            if secondary is not None:
                scan(dev.id, secondary)

    scan(None, 0)
    parents = {d.id: d.bus for d in topo.devices}
    groups = _groups(topo, placed, order) if machine.groups_at_boot else None
    return ExpectedView(topo, machine, placed, groups, parents)


def _has_acs(dev: Device) -> bool:
    if dev.model.kind is Kind.ROOT_PORT:
        return bool(dev.prop("acs", True))
    if dev.bus is None and dev.model.express and dev.model.vendor == 0x8086:
        # Intel root-complex integrated endpoints count as isolated although QEMU's expose no
        # ACS capability: drivers/pci/quirks.c pci_quirk_rciep_acs (3247bd10a450). Measured:
        # two e1000e functions of one slot on q35's root bus get two groups.
        return True
    return dev.model.acs


def _acs_path(topo: Topology, ident: str) -> bool:
    """pci_acs_path_enabled(port, NULL): every downstream-facing port up to the root has ACS
    (a single-function upstream switch port needs none)."""
    cur: str | None = ident
    while cur is not None:
        dev = topo.device(cur)
        if dev.model.kind in (Kind.ROOT_PORT, Kind.SWITCH_DOWN) and not _has_acs(dev):
            return False
        cur = dev.bus
    return True


def _groups(topo: Topology, placed: dict[str, Placed], order: list[str]
            ) -> tuple[frozenset[str], ...]:
    group: dict[str, int] = {}
    slot_mates: dict[tuple[str | None, int], list[str]] = {}
    for ident in order:
        p = placed[ident]
        slot_mates.setdefault((p.bus_id, p.slot), []).append(ident)
    fresh = iter(range(10_000))
    for ident in order:
        dev = topo.device(ident)
        found: int | None = None
        up = dev.bus
        while up is not None:  # 1. DMA alias to a conventional / PCIe-to-PCI bridge
            if topo.device(up).model.kind.aliases_children:
                found = group[up]
                break
            up = topo.device(up).bus
        if found is None and dev.bus is not None and not _acs_path(topo, dev.bus):
            found = group[dev.bus]  # 2. the parent port does not isolate it
        if found is None and not _has_acs(dev):  # 3. multifunction slot mates
            p = placed[ident]
            mates = slot_mates[(p.bus_id, p.slot)]
            if len(mates) > 1:
                found = next((group[m] for m in mates if m in group
                              and not _has_acs(topo.device(m))), None)
        group[ident] = found if found is not None else next(fresh)
    by_number: dict[int, set[str]] = {}
    for ident, number in group.items():
        by_number.setdefault(number, set()).add(ident)
    return tuple(frozenset(g) for _, g in sorted(by_number.items()))
