"""vm.vfio: VFIO group, container and iommufd calls through guests/helpers/cocolab-vfio.c.

Results are ProbeResults: `ok`, and on failure `stage` (open, set-container, set-iommu,
get-device-fd, ...) with `errno`; `extra` carries flags, viable, container_set.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cocolab.errors import GuestCommandError
from cocolab.guest.probe import ProbeResult

if TYPE_CHECKING:
    from cocolab.vm import VM

HELPER = "/bin/cocolab-vfio"


class HeldGroup:
    """A group kept attached to a container (and a device fd open) by a helper in the guest."""

    def __init__(self, channel: Any, out: Any, attached: ProbeResult):
        self._channel = channel
        self._out = out
        self.attached = attached
        self.released: ProbeResult | None = None

    def release(self) -> ProbeResult:
        if self.released is None:
            self._channel.sendall(b"release\n")
            line = self._out.readline()
            if not line:
                raise GuestCommandError("cocolab-vfio hold ended without reporting its release")
            self.released = ProbeResult.parse(line)
            # the helper has exited: close now, a finished channel left open makes dropbear
            # refuse the next ones
            self._channel.close()
        return self.released


class VFIO:
    def __init__(self, vm: VM):
        self._vm = vm

    def _argv(self, *words: str) -> str:
        return " ".join(shlex.quote(w) for w in (HELPER, *words))

    def _run(self, *words: str) -> ProbeResult:
        r = self._vm.run(self._argv(*words))
        if r.returncode != 0 or not r.stdout.strip():
            raise GuestCommandError(f"cocolab-vfio {' '.join(words)} did not report: {r}")
        return ProbeResult.parse(r.stdout.strip().splitlines()[-1])

    def status(self, group: str) -> ProbeResult:
        return self._run("status", group)

    def attach(self, group: str, bdf: str | None = None, iommufd: bool = False) -> ProbeResult:
        """Attach the group to a fresh container (type1v2), get a device fd; then let go."""
        return self._run("attach-iommufd" if iommufd else "attach", group,
                         *([bdf] if bdf else []))

    def bind_iommufd(self, cdev: str) -> ProbeResult:
        return self._run("bind-iommufd", cdev)

    @contextmanager
    def hold(self, group: str, bdf: str | None = None) -> Iterator[HeldGroup]:
        """Keep the group owned by user space for the duration of the block."""
        chan = self._vm.ssh.open_session(timeout=30)
        try:
            chan.exec_command(self._argv("hold", group, *([bdf] if bdf else [])))
            out = chan.makefile("r")
            line = out.readline()
            if not line:
                raise GuestCommandError(f"cocolab-vfio hold {group} did not report")
            held = HeldGroup(chan, out, ProbeResult.parse(line))
            yield held
            if held.attached.ok:
                held.release()
        finally:
            chan.close()
