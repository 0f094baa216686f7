"""The QEMU device models a topology may use, and what Linux will see of each.

IDs and classes are those QEMU gives the models (hw/pci-bridge/*, hw/net/*, hw/misc/edu.c,
hw/virtio/virtio-pci.c); `acs` is whether the model exposes an ACS capability, which decides
IOMMU grouping (Linux drivers/iommu/iommu.c pci_device_group()).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Kind(enum.Enum):
    ENDPOINT = "endpoint"
    PCI_BRIDGE = "pci-bridge"            # conventional PCI-to-PCI: children alias to it
    PCIE_PCI_BRIDGE = "pcie-pci-bridge"  # PCIe-to-PCI: children alias to it too
    ROOT_PORT = "root-port"
    SWITCH_UP = "switch-upstream"
    SWITCH_DOWN = "switch-downstream"
    USB_HOST = "usb-host"
    USB_DEVICE = "usb-device"

    @property
    def is_bridge(self) -> bool:
        return self in (Kind.PCI_BRIDGE, Kind.PCIE_PCI_BRIDGE, Kind.ROOT_PORT, Kind.SWITCH_UP,
                        Kind.SWITCH_DOWN)

    @property
    def aliases_children(self) -> bool:
        return self in (Kind.PCI_BRIDGE, Kind.PCIE_PCI_BRIDGE)

    @property
    def is_port(self) -> bool:
        """A downstream-facing PCIe port: its secondary bus is a link, one device (slot 0)."""
        return self in (Kind.ROOT_PORT, Kind.SWITCH_DOWN)


@dataclass(frozen=True)
class Model:
    name: str
    kind: Kind
    vendor: int = 0
    device: int = 0
    klass: int = 0
    """PCI class code as sysfs prints it (0x060400)."""
    acs: bool = False
    props: frozenset[str] = field(default_factory=frozenset)
    """Extra properties a topology may set on it (beyond id, bus, addr, multifunction)."""
    nic: bool = False
    drive: bool = False
    modern_device: int = 0
    """virtio: the device ID when the legacy interface is off (1040 + type)."""
    express: bool = False
    """Has a PCIe capability: on q35's root bus it is a root-complex integrated endpoint."""
    vhost_user: str = ""
    """virtio: the `backend` it may have instead of QEMU's own device model: a cocolab
    back-end (cocolab.devices) behind QEMU's vhost-user-NAME-pci."""
    vhost_user_modern_only: bool = False
    """That vhost-user-NAME-pci has no legacy interface (no disable-legacy property)."""

    def qemu_device(self, backend: str | None) -> str:
        """The -device QEMU gets for this model with `backend` (None: QEMU's own model; a
        NIC stays QEMU's own, its netdev is the back-end)."""
        return f"{backend}-pci" if backend and not self.nic else self.name


_VIRTIO_PROPS = frozenset({"iommu_platform", "disable-legacy", "disable-modern", "packed"})
_BACKEND_PROPS = frozenset({"backend", "personality"})

MODELS: dict[str, Model] = {m.name: m for m in (
    Model("pci-bridge", Kind.PCI_BRIDGE, 0x1B36, 0x0001, 0x060400,
          props=frozenset({"chassis", "shpc"})),
    Model("pcie-pci-bridge", Kind.PCIE_PCI_BRIDGE, 0x1B36, 0x000E, 0x060400),
    Model("pcie-root-port", Kind.ROOT_PORT, 0x1B36, 0x000C, 0x060400, acs=True,
          props=frozenset({"chassis", "slot", "acs"})),
    Model("x3130-upstream", Kind.SWITCH_UP, 0x104C, 0x8232, 0x060400),
    Model("xio3130-downstream", Kind.SWITCH_DOWN, 0x104C, 0x8233, 0x060400,
          props=frozenset({"chassis", "slot"})),
    Model("e1000", Kind.ENDPOINT, 0x8086, 0x100E, 0x020000, nic=True),
    Model("e1000e", Kind.ENDPOINT, 0x8086, 0x10D3, 0x020000, nic=True, express=True),
    Model("igb", Kind.ENDPOINT, 0x8086, 0x10C9, 0x020000, nic=True, express=True),
    Model("nvme", Kind.ENDPOINT, 0x1B36, 0x0010, 0x010802, drive=True, express=True,
          props=frozenset({"spdm"})),
    Model("edu", Kind.ENDPOINT, 0x1234, 0x11E8, 0x00FF00),
    Model("pci-testdev", Kind.ENDPOINT, 0x1B36, 0x0005, 0x00FF00),
    Model("virtio-net-pci", Kind.ENDPOINT, 0x1AF4, 0x1000, 0x020000, nic=True,
          props=_VIRTIO_PROPS | _BACKEND_PROPS, modern_device=0x1041,
          vhost_user="vhost-user-net"),
    Model("virtio-blk-pci", Kind.ENDPOINT, 0x1AF4, 0x1001, 0x010000, drive=True,
          props=_VIRTIO_PROPS | _BACKEND_PROPS, modern_device=0x1042,
          vhost_user="vhost-user-blk"),
    Model("virtio-rng-pci", Kind.ENDPOINT, 0x1AF4, 0x1005, 0x00FF00,
          props=_VIRTIO_PROPS | _BACKEND_PROPS, modern_device=0x1044,
          vhost_user="vhost-user-rng", vhost_user_modern_only=True),
    Model("qemu-xhci", Kind.USB_HOST, 0x1B36, 0x000D, 0x0C0330),
    Model("usb-kbd", Kind.USB_DEVICE),
    Model("usb-tablet", Kind.USB_DEVICE),
    Model("usb-storage", Kind.USB_DEVICE, drive=True),
)}
