"""Sidecars: the host-side servers a VM needs beside QEMU, which its argv points at and which
QEMU connects to at start-up: an SPDM responder per NVMe with `spdm_port` (cocolab.spdm),
a vhost-user back-end per served virtio device (cocolab.devices).

A layer of its own, between vm/ (which starts and stops any `Sidecar`, knowing nothing of
what it serves) and guest/ (which talks to a booted guest and reaches these objects through
`vm.spdm` and `vm.devices`). Each runs in the test's own process, on a thread of its own: a
test reads what it saw and sets its personality at any time through the object itself, with
no protocol in between; a back-end bounds every allocation by the guest memory it maps and
ends a bad request or connection, never itself (devices/), so a hostile guest cannot take
the test process down with it.
"""

from __future__ import annotations

from pathlib import Path

from cocolab.devices import BACKENDS, Backend
from cocolab.errors import RigBug
from cocolab.spdm import Responder
from cocolab.vm.sidecar import Sidecar


class ResponderSidecar(Sidecar):
    """The SPDM responder of one nvme with `spdm_port` (QEMU 9.1+ refuses to start with
    nothing listening there), logging its decoded messages to spdm-DEVICE.log."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self._responder: Responder | None = None

    def start(self, workdir: Path, sockdir: Path) -> str:
        self._responder = Responder(workdir / f"spdm-{self.device}.log")
        return str(self._responder.port)

    @property
    def responder(self) -> Responder:
        if self._responder is None:
            raise RigBug(f"cocolab bug: the SPDM responder of {self.device} is not started")
        return self._responder

    def close(self) -> None:
        if self._responder is not None:
            self._responder.close()

    def describe(self) -> str:
        return f"{self.device}: SPDM responder (cocolab.spdm), messages in spdm-{self.device}.log"


class BackendSidecar(Sidecar):
    """The back-end of one device: a socket in the VM's socket directory, its events logged
    to vhost-user-DEVICE.log in the VM's directory."""

    def __init__(self, device: str, backend: str, personality: str = "good") -> None:
        super().__init__(device)
        if backend not in BACKENDS:
            raise RigBug(f"cocolab bug: no back-end {backend!r} (have {', '.join(BACKENDS)})")
        self.backend_name, self.personality = backend, personality
        self._backend: Backend | None = None

    def start(self, workdir: Path, sockdir: Path) -> str:
        path = sockdir / f"vu-{self.device}.sock"
        self._backend = BACKENDS[self.backend_name](
            path, workdir / f"vhost-user-{self.device}.log", self.personality)
        return str(path)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RigBug(f"cocolab bug: the back-end of {self.device} is not started")
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def describe(self) -> str:
        return (f"{self.device}: {self.backend_name} back-end (cocolab.devices, started "
                f"{self.personality}), events in vhost-user-{self.device}.log")

    def dead(self) -> str | None:
        if self._backend is None or self._backend.alive:
            return None
        last = self._backend.errors[-1] if self._backend.errors else "no error recorded"
        return f"the {self.backend_name} back-end of {self.device} died: {last}"

    def errors(self) -> list[str]:
        return list(self._backend.errors) if self._backend is not None else []
