"""The in-guest API: what tests ask a booted guest, built on vm.VM's run(), put() and QMP.

`vm/` knows processes, sockets and the lifecycle; this package knows Linux: `Guest` is a VM
with the guest's PCI functions, dmesg, device-file probes, VFIO, USB, sysfs writes and the
declared topology, each a module here, each reached as an attribute (`vm.pci`, `vm.dmesg`).
What it copies into a guest on demand (module files, the CMA requester) the rig supplies
(`Supplies`); this package builds nothing on the host.
"""

from __future__ import annotations

import io
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cocolab.devices import Backend
from cocolab.errors import VMStateError
from cocolab.guest.dmesg import Dmesg
from cocolab.guest.iomem import IOMem
from cocolab.guest.kselftest import GuestSelftests
from cocolab.guest.pci import PCI
from cocolab.guest.probe import Probe
from cocolab.guest.sysfs import SysfsWrite, write_sysfs
from cocolab.guest.topology import GuestTopology
from cocolab.guest.usb import USB
from cocolab.guest.vfio import VFIO
from cocolab.kernel.modules import module_closure, module_index
from cocolab.sidecars import BackendSidecar, ResponderSidecar
from cocolab.spdm import Responder
from cocolab.vm import VM

if TYPE_CHECKING:
    from cocolab.guest.cc import CCProof
    from cocolab.guest.virtio import ServedDevice


@dataclass(frozen=True)
class ModuleStore:
    """The kernel's modules, decompressed on the host (`root`/lib/modules/RELEASE), and the
    files of it (relative to lib/modules/RELEASE) the guest's image already carries."""

    root: Path
    carried: frozenset[str]


def _nothing() -> None:
    return None


def _no_requester() -> Path:
    raise VMStateError("this VM was made without the CMA requester (Supplies.cma_requester)")


@dataclass(frozen=True)
class Supplies:
    """What the rig hands a guest to copy in when a test needs it, each made on first use."""

    modules: Callable[[], ModuleStore | None] = field(default=_nothing)
    """The VM's module store; None for a kernel without module support."""
    cma_requester: Callable[[], Path] = field(default=_no_requester)
    """The static in-guest SPDM requester (guests/cma/cocolab-doe.c), built on the host."""


class Guest(VM):
    """A VM, and what its Linux guest offers a test. Use as a context manager."""

    def __init__(self, *args: Any, supplies: Supplies = Supplies(), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.supplies = supplies
        self.cc: CCProof | None = None
        """On a confidential lane, the guest's proof (guest/cc.py `lane_proof`), asked once."""

    @property
    def spdm(self) -> dict[str, Responder]:
        """The SPDM responder of each device declared with `spdm = true`, by device id:
        a sidecar, started before QEMU (which refuses to start without one)."""
        return {device: sidecar.responder for device, sidecar in self.sidecars.items()
                if isinstance(sidecar, ResponderSidecar)}

    @property
    def devices(self) -> dict[str, Backend]:
        """The vhost-user back-end of each device declared with a `backend`, by device id:
        a sidecar, started before QEMU (which connects to it at start-up)."""
        return {device: sidecar.backend for device, sidecar in self.sidecars.items()
                if isinstance(sidecar, BackendSidecar)}

    def served(self, ident: str) -> ServedDevice:
        """Device `ident` (declared with a `backend`) from both sides: its back-end, and the
        guest's virtio device and driver for it."""
        from cocolab.guest.virtio import ServedDevice
        return ServedDevice(self, ident)

    def modprobe(self, *names: str) -> None:
        """Load kernel modules now, as /init loads a `modules` marker's: on a kernel built
        without module support (no /proc/modules) they are built in or absent, and there is
        nothing to load (a test then finds out which from the devices it waits for). The
        image carries only the module files /init loads; the others are copied in first."""
        self._copy_in_modules(names)
        loads = " && ".join(f"modprobe {shlex.quote(name)}" for name in names)
        self.run(f"[ ! -e /proc/modules ] || {{ {loads}; }}", check=True)

    def has_module(self, name: str) -> bool:
        """Whether modprobe(name) has a module file to load: the kernel built `name` as a
        module and guests/modules.txt (or a `modules` marker) names it."""
        store = self._module_store
        if store is None:
            return False
        by_name, _ = module_index(store.root / "lib/modules" / self.kernel.release)
        return name.replace("-", "_") in by_name

    def _copy_in_modules(self, names: tuple[str, ...]) -> None:
        store = self._module_store
        if store is None:
            return
        release = self.kernel.release
        tree = store.root / "lib/modules" / release
        need = [rel for rel in module_closure(tree, list(names)) if rel not in self._in_guest]
        if not need:
            return
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for rel in need:
                tar.add(tree / rel, arcname=f"lib/modules/{release}/{rel}", recursive=False)
        self.run("tar -x -f - -C /", stdin=archive.getvalue(), check=True)
        self._in_guest.update(need)

    @cached_property
    def _module_store(self) -> ModuleStore | None:
        """The image's module store, looked up once (its key stats every module)."""
        return self.supplies.modules()

    @cached_property
    def _in_guest(self) -> set[str]:
        """Module files the guest has (relative to lib/modules/RELEASE): those the image
        carries, and those copied in since."""
        store = self._module_store
        return set(store.carried) if store is not None else set()

    @cached_property
    def kernel_release(self) -> str:
        return self.run("uname -r", check=True).stdout.strip()

    @cached_property
    def dmesg(self) -> Dmesg:
        return Dmesg(self)

    @cached_property
    def kselftest(self) -> GuestSelftests:
        """The kernel's selftests in this guest: vm.kselftest.install(...), run_case(...)."""
        return GuestSelftests(self)

    @cached_property
    def probe(self) -> Probe:
        """vm.probe(op, *args): one cocolab-probe call in the guest, as a ProbeResult."""
        return Probe(self)

    @cached_property
    def topology(self) -> GuestTopology:
        """The declared topology, checkable against the guest: vm.topology.verify()."""
        if self.expected is None:
            raise VMStateError(f"{self.name} was not booted from a topology "
                               "(@pytest.mark.topology)")
        return GuestTopology(self, self.expected)

    @cached_property
    def pci(self) -> PCI:
        return PCI(self)

    @cached_property
    def vfio(self) -> VFIO:
        return VFIO(self)

    @cached_property
    def usb(self) -> USB:
        return USB(self)

    def write_sysfs(self, path: str, value: str) -> SysfsWrite:
        """`echo value > path` in one write(2), with the kernel's errno if it refuses."""
        return write_sysfs(self, path, value)

    def iomem(self) -> IOMem:
        """/proc/iomem of the guest, read now (as root, so with real addresses)."""
        return IOMem(self.run("cat /proc/iomem", check=True).stdout)


__all__ = ["Guest", "ModuleStore", "Supplies"]
