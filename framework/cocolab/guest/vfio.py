"""vm.vfio: VFIO group, container and iommufd calls through guests/helpers/cocolab-vfio.c.

Results are ProbeResults: `ok`, and on failure `stage` (open, set-container, set-iommu,
get-device-fd, ...) with `errno`; `extra` carries flags, viable, container_set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cocolab.guest.helper import VFIO_HELPER, HelperSession, helper_argv, helper_session, run_helper
from cocolab.guest.probe import ProbeResult

if TYPE_CHECKING:
    from cocolab.vm import VM



class VFIO:
    def __init__(self, vm: VM):
        self._vm = vm

    def _run(self, *words: str) -> ProbeResult:
        return run_helper(self._vm, helper_argv(VFIO_HELPER, *words))

    def status(self, group: str) -> ProbeResult:
        return self._run("status", group)

    def attach(self, group: str, bdf: str | None = None, iommufd: bool = False) -> ProbeResult:
        """Attach the group to a fresh container (type1v2), get a device fd; then let go."""
        return self._run("attach-iommufd" if iommufd else "attach", group,
                         *([bdf] if bdf else []))

    @contextmanager
    def hold(self, group: str, bdf: str | None = None) -> Iterator[HelperSession]:
        """Keep the group owned by user space (`.first` says how attaching went) until
        `.finish("release")` or the end of the block."""
        argv = helper_argv(VFIO_HELPER, "hold", group, *([bdf] if bdf else []))
        with helper_session(self._vm, argv) as session:
            yield session
            if session.first.ok:
                session.finish("release")
