"""Processes and servers that live beside one VM: a device's backend that QEMU connects to.

A sidecar is started before QEMU (QEMU refuses to start with nothing listening where a
device's backend should be), stopped after QEMU, on the VM's exit stack like every other
resource, and named in the VM's directory (`sidecars.txt`, then its failure bundle). What it
serves is not this package's business: the rig makes sidecars of the SPDM responders and of
the vhost-user device back-ends a topology declares.
"""

from __future__ import annotations

import abc
from pathlib import Path


class Sidecar(abc.ABC):
    """One backend beside a VM, for the device whose QEMU id is `device`."""

    def __init__(self, device: str) -> None:
        self.device = device

    @abc.abstractmethod
    def start(self, workdir: Path, sockdir: Path) -> str:
        """Listen, logging into `workdir`; return where QEMU is to connect, as its argument
        names it: a TCP port on 127.0.0.1, or a unix socket made in `sockdir` (a short
        private directory: socket paths are limited to 108 bytes). Called once, before QEMU
        starts."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop, and release every thread and socket. Safe in any state, more than once."""

    def describe(self) -> str:
        """One line for sidecars.txt: what it is and where its log is."""
        return f"{self.device}: {type(self).__name__}"

    def dead(self) -> str | None:
        """Why the sidecar no longer serves (its thread or process ended), else None."""
        return None

    def errors(self) -> list[str]:
        """What it refused or failed at so far, oldest first (the VM reads the new ones)."""
        return []
