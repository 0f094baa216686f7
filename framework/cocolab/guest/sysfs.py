"""Writing sysfs attributes with the kernel's exact errno (one write(2) by cocolab-probe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cocolab.guest.helper import errname, helper_argv, run_helper

if TYPE_CHECKING:
    from cocolab.vm import VM

PROBE = "/bin/cocolab-probe"


@dataclass(frozen=True)
class SysfsWrite:
    """The outcome of writing a sysfs attribute: ok, or the errno the kernel returned."""

    path: str
    ok: bool
    errno: int | None = None

    @property
    def errname(self) -> str | None:
        return errname(self.errno) if self.errno is not None else None

    def __str__(self) -> str:
        return f"write {self.path}: " + ("ok" if self.ok else f"{self.errname}")


def write_sysfs(vm: VM, path: str, value: str) -> SysfsWrite:
    """Write `value` and a newline, as `echo value > path` would, in one write(2)."""
    data = (value + "\n").encode().hex()
    result = run_helper(vm, helper_argv(PROBE, "write", path, 0, data))
    return SysfsWrite(path, result.ok, result.errno)
