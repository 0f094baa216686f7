"""-device arguments for a machine's vIOMMU and a topology. Pure, like argv.py."""

from __future__ import annotations

from cocolab.qemu.argv import VHOST_USER, BackendSpec, sidecar_placeholder, spdm_placeholder
from cocolab.topology import ExpectedView, Machine
from cocolab.topology.models import Kind


def _onoff(value: object) -> str:
    return "on" if value else "off"


def viommu_args(machine: Machine) -> list[str]:
    if not machine.viommu:
        return []
    model = "virtio-iommu-pci" if machine.viommu == "virtio-iommu" else machine.viommu
    # first among -device options: QEMU wants the vIOMMU before the PCI devices it translates
    return ["-device", ",".join([model, *machine.viommu_options])]


def _props(view: ExpectedView, ident: str) -> list[str]:
    dev = view.topology.device(ident)
    out = []
    for key, value in dev.props:
        if key == "chassis":
            out.append(f"chassis_nr={value}" if dev.model.kind is Kind.PCI_BRIDGE
                       else f"chassis={value}")
        elif key == "spdm":
            if value:  # the responder's port is known only at launch (see spdm_placeholder)
                out.append(f"spdm_port={spdm_placeholder(ident)}")
        elif key in ("backend", "personality"):
            continue  # the back-end's, not QEMU's (see backend_specs)
        elif key == "acs":
            out.append(f"disable-acs={_onoff(not value)}")
        elif isinstance(value, bool):
            out.append(f"{key}={_onoff(value)}")
        else:
            out.append(f"{key}={value}")
    return out


def served_mac(index: int) -> str:
    """The MAC of the topology's device number `index` (from 0): 52:54:00:cc:00:NN."""
    return f"52:54:00:cc:00:{index + 1:02x}"


def topology_args(view: ExpectedView) -> list[str]:
    """Backends first (netdevs, block nodes), then devices in declaration order."""
    machine = view.machine
    backends: list[str] = []
    devices: list[str] = []
    for index, dev in enumerate(view.topology.devices):
        backend = dev.prop("backend")
        opts = [dev.model.qemu_device(backend), f"id={dev.id}"]
        if dev.model.kind is Kind.USB_DEVICE:
            opts.append(f"bus={dev.bus}.0")
        else:
            placed = view.placed[dev.id]
            opts += [f"bus={dev.bus or machine.root_bus}", f"addr={placed.addr}"]
            if dev.multifunction:
                opts.append("multifunction=on")
        opts += _props(view, dev.id)
        if backend:
            # QEMU connects to the back-end's socket at start-up (client mode, no reconnect)
            backends += ["-chardev", f"socket,id={dev.id}-vu,"
                                     f"path={sidecar_placeholder(VHOST_USER, dev.id)}"]
            if dev.model.nic:  # QEMU's own NIC, its data path on the back-end's netdev
                backends += ["-netdev", f"vhost-user,id={dev.id}-net,chardev={dev.id}-vu"]
                opts += [f"netdev={dev.id}-net", f"mac={served_mac(index)}"]
            else:
                opts.append(f"chardev={dev.id}-vu")
        elif dev.model.nic:
            backends += ["-netdev", f"user,id={dev.id}-net,restrict=on"]
            opts += [f"netdev={dev.id}-net", f"mac={served_mac(index)}"]
        if dev.model.drive and not backend:
            backends += ["-blockdev", f"driver=null-co,node-name={dev.id}-blk,size=67108864"]
            opts.append(f"drive={dev.id}-blk")
            if dev.model.name == "nvme":
                opts.append(f"serial=cocolab-{dev.id}")
        devices += ["-device", ",".join(opts)]
    return backends + devices


def backend_specs(view: ExpectedView) -> tuple[BackendSpec, ...]:
    """The topology's devices served by a cocolab back-end, in declaration order."""
    return tuple(BackendSpec(dev.id, dev.prop("backend"), dev.prop("personality", "good"))
                 for dev in view.topology.devices if dev.prop("backend"))
