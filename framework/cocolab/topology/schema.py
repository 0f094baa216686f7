"""Machines and topologies from qemu-configs/, validated: every error names file, key, choices.

    qemu-configs/machines/NAME.toml    machine type, vIOMMU, the cmdline and modules it implies
    qemu-configs/topologies/NAME.toml  a tree of PCI devices (and USB devices on an xHCI)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocolab.config.validate import (
    check_keys,
    choice,
    read_toml,
    shipped_names,
    shipped_path,
    strings,
)
from cocolab.constants import CC_KINDS
from cocolab.errors import ConfigError, present
from cocolab.kernel.kconfig import REQUIREMENT_SYNTAX, parse_requirement
from cocolab.topology.models import MODELS, Kind, Model

MACHINE_TYPES = ("q35", "pc", "microvm")
VIOMMUS = ("", "intel-iommu", "amd-iommu", "virtio-iommu")
_ID = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_ADDR = re.compile(r"^([0-9a-fA-F]{1,2})(?:\.([0-7]))?$")


@dataclass(frozen=True)
class Machine:
    name: str
    source: str
    type: str = "q35"
    description: str = ""
    options: tuple[str, ...] = ()
    viommu: str = ""
    viommu_options: tuple[str, ...] = ()
    cmdline: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    kconfig: tuple[tuple[str, str | None], ...] = ()
    """What the guest kernel needs to drive this machine (its vIOMMU, its CC guest support), as
    (CONFIG_NAME, wanted) like a test's kconfig marker: a kernel without it skips the test."""
    cc: str = ""
    """'tdx' or 'snp': the machine boots a confidential guest (needs such a host)."""

    @property
    def root_bus(self) -> str:
        return {"q35": "pcie.0", "pc": "pci.0", "microvm": "pcie.0"}[self.type]

    @property
    def root_is_pcie(self) -> bool:
        return self.type in ("q35", "microvm")

    @property
    def groups_at_boot(self) -> bool:
        """Whether every PCI function has its IOMMU group once the guest is up.

        Not with virtio-iommu on x86: it is described by ACPI VIOT and a function joins a group
        only when a driver binds it after virtio_iommu loaded (acpi_dma_configure ->
        viot_iommu_configure); driverless functions never do (seen on 6.12 and 7.2).
        """
        return self.viommu in ("intel-iommu", "amd-iommu")

    @property
    def has_pci(self) -> bool:
        return self.type != "microvm" or "pcie=on" in self.options


@dataclass(frozen=True)
class Device:
    id: str
    model: Model
    bus: str | None
    """The id of the parent device, or None for the machine's root bus (or, for USB, the
    xHCI controller)."""
    slot: int | None
    function: int | None
    multifunction: bool
    props: tuple[tuple[str, Any], ...]

    def prop(self, name: str, default: Any = None) -> Any:
        return dict(self.props).get(name, default)


@dataclass(frozen=True)
class Topology:
    name: str
    source: str
    machine: str | None
    """The machine it is meant for; None: the lane's (a CC lane keeps its CC machine)."""
    description: str
    devices: tuple[Device, ...]

    def device(self, ident: str) -> Device:
        for dev in self.devices:
            if dev.id == ident:
                return dev
        raise KeyError(ident)


def _read(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    if not data:
        raise ConfigError(f"{path}: the file is empty")
    return data


def machine_names() -> list[str]:
    return shipped_names("machines")


def topology_names() -> list[str]:
    return shipped_names("topologies")


def load_machine(name: str) -> Machine:
    path = shipped_path("machines", name, "machine")
    return parse_machine(path.stem, _read(path), str(path))


def parse_machine(name: str, data: dict[str, Any], source: str) -> Machine:
    check_keys(data, {"type": str, "description": str, "options": list, "viommu": str,
                       "viommu_options": list, "cmdline": list, "modules": list, "kconfig": list,
                       "cc": str},
                source)
    reqs = []
    for opt in strings(data, "kconfig", source):
        req = parse_requirement(opt)
        if req is None:
            raise ConfigError(f"{source}: key 'kconfig': {opt!r} is not {REQUIREMENT_SYNTAX}")
        reqs.append(req)
    mtype = choice(data, "type", MACHINE_TYPES, "q35", source)
    viommu = choice(data, "viommu", VIOMMUS, "", source)
    if viommu in ("intel-iommu", "amd-iommu") and mtype != "q35":
        raise ConfigError(f"{source}: key 'viommu': {viommu} needs type q35, not {mtype}")
    cc = choice(data, "cc", CC_KINDS, "", source)
    if cc and mtype != "q35":
        raise ConfigError(f"{source}: key 'cc': a {cc} guest needs type q35, not {mtype}")
    return Machine(
        name=name, source=source, type=mtype, description=data.get("description", ""),
        options=strings(data, "options", source), viommu=viommu,
        viommu_options=strings(data, "viommu_options", source),
        cmdline=strings(data, "cmdline", source), modules=strings(data, "modules", source),
        kconfig=tuple(reqs), cc=cc)


_DEVICE_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": str, "model": str, "bus": str, "addr": str, "multifunction": bool,
    "chassis": int, "slot": int, "shpc": bool, "acs": bool,
    "iommu_platform": bool, "disable-legacy": bool, "disable-modern": bool,
    "packed": bool,  # virtio: packed rings (virtio 1.2 §2.8) offered to the driver
    "spdm": bool,  # nvme: its DOE mailbox's SPDM traffic goes to a cocolab.spdm responder
    "backend": str,  # virtio: served by a cocolab.devices back-end over vhost-user
    "personality": str,  # ...starting in this personality (cocolab.devices.Personality)
}
_PROP_TYPES = {k: v for k, v in _DEVICE_KEYS.items()
               if k not in ("id", "model", "bus", "addr", "multifunction")}


def load_topology(name: str) -> Topology:
    path = shipped_path("topologies", name, "topology")
    return parse_topology(path.stem, _read(path), str(path))


def _parse_device(raw: object, where: str, source: str, seen: set[str]) -> Device:
    """One [[device]] table; `seen` holds the ids of the devices before it."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table ([[device]])")
    check_keys(raw, _DEVICE_KEYS, where)
    ident = raw.get("id")
    if ident is None:
        raise ConfigError(f"{where}: key 'id' is missing")
    where = f"{source}: device {ident!r}"
    if not _ID.match(ident):
        raise ConfigError(f"{where}: key 'id' must be lower-case letters, digits and '-'")
    if ident in seen:
        raise ConfigError(f"{where}: key 'id' repeats an earlier device's id")
    model = _model(raw.get("model"), where)
    props = {k: v for k, v in raw.items() if k in _PROP_TYPES}
    for key in props:
        if key not in model.props:
            valid = ", ".join(sorted(model.props)) or "none"
            raise ConfigError(f"{where}: key {key!r} does not apply to {model.name}; its "
                              f"properties: {valid}")
    _check_backend(props, model, where)
    slot, function = _address(raw.get("addr"), where)
    if model.kind is Kind.PCI_BRIDGE and "chassis" not in props:
        raise ConfigError(f"{where}: a pci-bridge needs key 'chassis' (a number unique "
                          "among bridges and ports)")
    if model.kind in (Kind.ROOT_PORT, Kind.SWITCH_DOWN) and "chassis" not in props:
        raise ConfigError(f"{where}: a {model.name} needs key 'chassis' (with 'slot', "
                          "unique among ports)")
    return Device(ident, model, raw.get("bus"), slot, function,
                  raw.get("multifunction", False), tuple(sorted(props.items())))


def _check_backend(props: dict[str, object], model: Model, where: str) -> None:
    """`backend` names the model's vhost-user back-end; `personality` needs one. Whether a
    personality exists is the rig's to say (cocolab.devices sits above this layer)."""
    backend = props.get("backend")
    if backend is None:
        if "personality" in props:
            raise ConfigError(f"{where}: key 'personality' needs key 'backend' "
                              f"(backend = {model.vhost_user!r})")
        return
    if backend != model.vhost_user:
        raise ConfigError(f"{where}: key 'backend' is {backend!r}; a {model.name} may have "
                          f"backend = {model.vhost_user!r}")
    legacy = sorted(k for k in ("disable-legacy", "disable-modern") if k in props)
    if model.vhost_user_modern_only and legacy:
        raise ConfigError(f"{where}: key {legacy[0]!r}: QEMU's {backend}-pci is modern-only "
                          "(it has no legacy interface to switch); drop the key")


def _model(name: object, where: str) -> Model:
    if name is None:
        raise ConfigError(f"{where}: key 'model' is missing; choose one of "
                          f"{', '.join(sorted(MODELS))}")
    if name not in MODELS:
        raise ConfigError(f"{where}: key 'model' is {name!r}; choose one of "
                          f"{', '.join(sorted(MODELS))}")
    return MODELS[str(name)]


def _address(addr: str | None, where: str) -> tuple[int | None, int | None]:
    """(slot, function) of an 'addr' key, or (None, None) without one."""
    if addr is None:
        return None, None
    m = _ADDR.match(addr)
    if not m or int(m.group(1), 16) > 31:
        raise ConfigError(f"{where}: key 'addr' is {addr!r}; write SLOT or SLOT.FUNCTION in "
                          "hex, slot 00-1f, function 0-7 (e.g. '05.1')")
    return int(m.group(1), 16), int(m.group(2) or 0)


def parse_topology(name: str, data: dict[str, Any], source: str) -> Topology:
    check_keys(data, {"description": str, "machine": str, "device": list}, source)
    devices: list[Device] = []
    seen: set[str] = set()  # the ids so far, kept as it grows (not rebuilt per device)
    for i, raw in enumerate(data.get("device", [])):
        devices.append(_parse_device(raw, f"{source}: device[{i}]", source, seen))
        seen.add(devices[-1].id)
    if not devices:
        raise ConfigError(f"{source}: no [[device]] entries; a topology declares at least one "
                          "device (see qemu-configs/topologies/flat.toml)")
    machine = data.get("machine")
    if machine is not None and not Path(machine).suffix == ".toml" \
            and machine not in machine_names():
        raise ConfigError(f"{source}: key 'machine' is {machine!r}; choose one of "
                          f"{', '.join(machine_names())}")
    topo = Topology(name, source, machine, data.get("description", ""), tuple(devices))
    _check_chains(topo)
    _check_tree(topo)
    return topo


MAX_BUS_DEPTH = 49
"""Bridges nested below the root: QEMU 7.2 refuses the 50th ("Path too long for VMState")."""
MAX_BUSES = 255
"""Bus numbers are 8 bits: the root bus 0 and at most 255 below it."""


def _check_chains(topo: Topology) -> None:
    """Every 'bus' chain ends at the root: no empty name, no loop, no deeper than QEMU goes,
    and no more buses than bus numbers."""
    by_id = {d.id: d for d in topo.devices}
    for dev in topo.devices:
        where = f"{topo.source}: device {dev.id!r}"
        if dev.bus == "":
            raise ConfigError(f"{where}: key 'bus' is empty; leave it out for the root bus")
        chain = [dev.id]
        parent = by_id.get(dev.bus) if dev.bus else None
        # a walk is at most MAX_BUS_DEPTH + 1 long: past that the chain is refused anyway
        while parent is not None and len(chain) <= MAX_BUS_DEPTH + 1:
            if parent.id in chain:
                loop = " -> ".join([*chain[chain.index(parent.id):], parent.id])
                raise ConfigError(f"{where}: key 'bus' makes a loop ({loop}); every chain of "
                                  "'bus' keys must end at the root bus")
            chain.append(parent.id)
            parent = by_id.get(parent.bus) if parent.bus else None
        if len(chain) - 1 > MAX_BUS_DEPTH:
            raise ConfigError(f"{where}: sits {len(chain) - 1} bridges deep; QEMU nests at most "
                              f"{MAX_BUS_DEPTH}")
    buses = sum(1 for d in topo.devices if d.model.kind.is_bridge)
    if buses > MAX_BUSES:
        raise ConfigError(f"{topo.source}: {buses} bridges and ports make {buses} buses; bus "
                          f"numbers allow at most {MAX_BUSES} below the root")


def _check_tree(topo: Topology) -> None:
    by_id = {d.id: d for d in topo.devices}
    ports: set[tuple[int, int]] = set()
    for dev in topo.devices:
        where = f"{topo.source}: device {dev.id!r}"
        parent = by_id.get(dev.bus) if dev.bus else None
        if dev.bus and parent is None:
            buses = [d.id for d in topo.devices
                     if d.model.kind.is_bridge or d.model.kind is Kind.USB_HOST]
            others = f"one of {', '.join(buses)}" if buses else "none (no bridge, port or xHCI)"
            raise ConfigError(f"{where}: key 'bus' is {dev.bus!r}, which is no device here; "
                              f"leave 'bus' out for the root bus, or name a bus device: "
                              f"{others}")
        kind = dev.model.kind
        if kind is Kind.USB_DEVICE:
            if parent is None or parent.model.kind is not Kind.USB_HOST:
                raise ConfigError(f"{where}: key 'bus' must name a qemu-xhci controller for a "
                                  f"USB device ({dev.model.name})")
            continue
        if parent is not None and not parent.model.kind.is_bridge:
            raise ConfigError(f"{where}: key 'bus' is {dev.bus!r}, a {parent.model.name}, "
                              "which has no bus for devices")
        pkind = parent.model.kind if parent else None
        if kind is Kind.ROOT_PORT and parent is not None:
            raise ConfigError(f"{where}: a pcie-root-port goes on the root bus (no 'bus' key)")
        if kind is Kind.SWITCH_UP and pkind not in (Kind.ROOT_PORT, Kind.SWITCH_DOWN):
            raise ConfigError(f"{where}: key 'bus' of an x3130-upstream must name a "
                              "pcie-root-port or xio3130-downstream")
        if kind is Kind.SWITCH_DOWN and pkind is not Kind.SWITCH_UP:
            raise ConfigError(f"{where}: key 'bus' of an xio3130-downstream must name an "
                              "x3130-upstream")
        if pkind is Kind.SWITCH_UP and kind is not Kind.SWITCH_DOWN:
            raise ConfigError(f"{where}: only xio3130-downstream ports go below an "
                              "x3130-upstream")
        if kind is Kind.PCIE_PCI_BRIDGE and pkind in (Kind.PCI_BRIDGE, Kind.PCIE_PCI_BRIDGE):
            raise ConfigError(f"{where}: a pcie-pci-bridge needs a PCIe bus, not a bridge's "
                              "conventional bus")
        if pkind is not None and pkind.is_port and dev.slot not in (None, 0):
            raise ConfigError(f"{where}: key 'addr': below a PCIe port the only slot is 00")
        if kind in (Kind.ROOT_PORT, Kind.SWITCH_DOWN):
            key = (dev.prop("chassis"), dev.prop("slot", 0))
            if key in ports:
                raise ConfigError(f"{where}: keys 'chassis'/'slot' {key} repeat another port's")
            ports.add(key)
    _check_functions(topo)


def _check_functions(topo: Topology) -> None:
    slots: dict[tuple[str | None, int], dict[int, Device]] = {}
    for dev in topo.devices:
        if dev.slot is None or dev.model.kind is Kind.USB_DEVICE:
            continue
        fns = slots.setdefault((dev.bus, dev.slot), {})
        function = present(dev.function, f"the function of {dev.id} (set with its slot)")
        if function in fns:
            other = fns[function].id
            raise ConfigError(f"{topo.source}: device {dev.id!r}: key 'addr' "
                              f"{dev.slot:02x}.{function} is already {other!r}'s")
        fns[function] = dev
    for (_, slot), fns in slots.items():
        if len(fns) > 1:
            if 0 not in fns:
                first = min(fns.values(), key=lambda d: d.function or 0)
                raise ConfigError(f"{topo.source}: device {first.id!r}: slot {slot:02x} has "
                                  "functions but no function 0")
            if not fns[0].multifunction:
                raise ConfigError(f"{topo.source}: device {fns[0].id!r}: slot {slot:02x} has "
                                  "several functions; set multifunction = true on function 0")
