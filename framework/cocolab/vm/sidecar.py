"""Processes and servers that live beside one VM: a device's backend that QEMU connects to.

A sidecar is started before QEMU (QEMU refuses to start with nothing listening where a
device's backend should be), stopped after QEMU, on the VM's exit stack like every other
resource, and named in the VM's directory (`sidecars.txt`, then its failure bundle). What it
serves is not this package's business: the rig makes the SPDM responders sidecars today, a
test's own device backends tomorrow.
"""

from __future__ import annotations

import abc
from pathlib import Path


class Sidecar(abc.ABC):
    """One backend beside a VM, for the device whose QEMU id is `device`."""

    def __init__(self, device: str) -> None:
        self.device = device

    @abc.abstractmethod
    def start(self, workdir: Path) -> int:
        """Listen (on 127.0.0.1 only), logging into `workdir`; return the TCP port QEMU is
        to connect to. Called once, before QEMU starts."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop, and release every thread and socket. Safe in any state, more than once."""

    def describe(self) -> str:
        """One line for sidecars.txt: what it is and where its log is."""
        return f"{self.device}: {type(self).__name__}"
