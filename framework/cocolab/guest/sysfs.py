"""Reading sysfs attributes in one command, and writing them with the kernel's exact errno (one
write(2) by cocolab-probe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cocolab.guest.helper import PROBE, errname, helper_argv, run_helper

if TYPE_CHECKING:
    from cocolab.vm import VM


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


def read_attributes(vm: VM, root: str, names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """{entry: {name: value}} for every entry under `root` (a sysfs directory of devices)
    that has any of the attributes `names`: one grep for all of them, where a `$(cat ...)` per
    entry would cost a fork and an exec each (30 ms apiece under TCG)."""
    globs = " ".join(f"*/{name}" for name in names)
    text = vm.run(f"cd {root} && grep -s . {globs}; [ $? -le 1 ]", check=True).stdout
    return parse_attributes(text)


def parse_attributes(text: str) -> dict[str, dict[str, str]]:
    """grep's `ENTRY/NAME:VALUE` lines, by entry (an entry, such as a BDF, may hold ':')."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        entry, _, rest = line.partition("/")
        name, sep, value = rest.partition(":")
        if sep:
            out.setdefault(entry, {})[name] = value.strip()
    return out
