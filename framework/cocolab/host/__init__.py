"""What this host offers: the QEMU binary and what it supports, and which accelerator works."""

from cocolab.host.accel import AccelChoice, choose_accel
from cocolab.host.qemu import QemuInfo, find_qemu, probe_qemu

__all__ = ["AccelChoice", "QemuInfo", "choose_accel", "find_qemu", "probe_qemu"]
