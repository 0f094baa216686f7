"""vm.probe(): exact device-file syscalls in the guest, through guests/helpers/cocolab-probe.c."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cocolab.guest.helper import (
    PROBE,
    HelperSession,
    ProbeResult,
    errname,
    helper_argv,
    helper_session,
    run_helper,
)

if TYPE_CHECKING:
    from cocolab.vm import VM

__all__ = ["PROBE", "Probe", "ProbeResult", "errname"]



class Probe:
    """vm.probe(op, *args): one cocolab-probe call; vm.probe.hold(...): a mapping kept open."""

    def __init__(self, vm: VM):
        self._vm = vm

    def argv(self, op: str, *args: object) -> str:
        return helper_argv(PROBE, op, *args)

    def __call__(self, op: str, *args: object) -> ProbeResult:
        return run_helper(self._vm, self.argv(op, *args))

    @contextmanager
    def hold(self, path: str, offset: int, length: int) -> Iterator[HelperSession]:
        """Map and read (`.first`), keep the mapping; `.finish("again")` reads through it once
        more after the test acted, and lets the helper exit."""
        with helper_session(self._vm, self.argv("hold", path, offset, length)) as session:
            yield session

