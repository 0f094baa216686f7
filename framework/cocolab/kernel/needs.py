"""What the rig itself needs of a kernel to boot its guest and talk to it.

This is the preflight (Rig.preflight: a kernel that lacks one is refused before any boot, in
one line naming them all) and the head of `cocolab kconfig`'s fragment (kconfig_tool.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from cocolab.kernel.kconfig import Kconfig


@dataclass(frozen=True)
class Need:
    option: str
    """CONFIG_ name without the prefix."""
    why: str
    modular: bool = False
    """=m will do: /init loads it (VIRTIO_NET); otherwise it must be =y."""


RIG_NEEDS: tuple[Need, ...] = (
    Need("BLK_DEV_INITRD", "the guest is an initramfs"),
    Need("BINFMT_ELF", "busybox and dropbear are ELF programs"),
    Need("BINFMT_SCRIPT", "/init is a shell script"),
    Need("DEVTMPFS", "/init mounts devtmpfs on /dev"),
    Need("PROC_FS", "/init reads /proc/cmdline"),
    Need("SYSFS", "every suite reads /sys"),
    Need("TMPFS", "/run and /tmp"),
    Need("UNIX98_PTYS", "dropbear's ptys (cocolab shell)"),
    Need("SERIAL_8250", "the console is ttyS0"),
    Need("SERIAL_8250_CONSOLE", "console=ttyS0: READY, panics and warnings come from it"),
    Need("PCI", "the NIC and every topology are PCI"),
    Need("VIRTIO_PCI", "cocolab's NIC is virtio-net-pci", modular=True),
    Need("VIRTIO_NET", "cocolab's NIC (SSH)", modular=True),
    Need("NET", "SSH to the guest"),
    Need("INET", "SSH over TCP/IP"),
    Need("UNIX", "local sockets in the guest's userland"),
    Need("SECURITYFS", "/sys/kernel/security (the lockdown level)"),
)


def _satisfied(kconfig: Kconfig, need: Need) -> bool:
    value = kconfig.get("CONFIG_" + need.option)
    return value == "y" or (need.modular and value == "m")


def rig_lacks(kconfig: Kconfig) -> list[Need]:
    return [need for need in RIG_NEEDS if not _satisfied(kconfig, need)]
