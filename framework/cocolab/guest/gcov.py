"""Coverage counters of a guest kernel built with CONFIG_GCOV_KERNEL: the .gcda files its
debugfs holds (Documentation/dev-tools/gcov.rst: /sys/kernel/debug/gcov mirrors the build
directory, one .gcda per profiled object, read while the kernel runs), copied to the host.
Base64 over SSH: the SSH facade reads text."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocolab.vm import VM

GCOV_DEBUGFS = "/sys/kernel/debug/gcov"
_MOUNT = "mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug"


def read_gcda(vm: VM) -> dict[str, bytes]:
    """Every .gcda the guest's kernel keeps, by its path below GCOV_DEBUGFS."""
    out = vm.run(f"{_MOUNT}; cd {GCOV_DEBUGFS} && for f in $(find . -name '*.gcda'); do "
                 "echo \"== $f\"; base64 \"$f\"; done", timeout=120, check=True).stdout
    files: dict[str, bytes] = {}
    name, lines = "", list[str]()
    for line in [*out.splitlines(), "== "]:
        if line.startswith("== "):
            if name:
                try:
                    files[name] = base64.b64decode("".join(lines), validate=True)
                except binascii.Error as exc:
                    raise ValueError(f"{name}: not base64 from the guest: {exc}") from None
            name, lines = line[3:].removeprefix("./"), []
        else:
            lines.append(line.strip())
    return files


def save_gcda(vm: VM, dest: Path) -> int:
    """The guest's .gcda files under `dest`, as the guest lays them out; how many."""
    files = read_gcda(vm)
    for name, data in files.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return len(files)


def reset(vm: VM) -> None:
    """Zero every counter (gcov.rst: write to the reset file)."""
    vm.run(f"{_MOUNT}; echo 1 > {GCOV_DEBUGFS}/reset", check=True)
