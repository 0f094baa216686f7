"""PCI device authorization (the out-of-tree TDX guest device filter) as data, and its rules.

Only intel/tdx guest-filter kernels have /sys/bus/pci/devices/*/authorized (kernel-behaviors.md
§2.2); mainline has none. The rules checked here, from arch/x86/coco/tdx/filter.c:
  - allow-listed devices (virtio net/blk/console/9p, transitional and modern IDs, plus any
    `authorize_allow_devs=pci:VVVV:DDDD,...` on the cmdline) read authorized=1, others 0;
  - an unauthorized device has no driver.
Pure functions over parsed lines, so they are tested without such a kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TDX_ALLOWED = frozenset((0x1AF4, d) for d in (0x1000, 0x1001, 0x1003, 0x1009,
                                               0x1041, 0x1042, 0x1043, 0x1049))
READ = ("cd /sys/bus/pci/devices && for d in *; do echo \"$d $(cat $d/vendor) $(cat $d/device)"
        " $(cat $d/authorized 2>/dev/null || echo -) $(readlink $d/driver | sed 's,.*/,,')\"; "
        "done")
NO_AUTHORIZATION = ("kernel has no PCI device authorization (/sys/bus/pci/devices/*/authorized "
                    "absent); use a kernel carrying the TDX guest device filter")


@dataclass(frozen=True)
class PciAuth:
    bdf: str
    ids: tuple[int, int]
    authorized: int | None
    """None when the kernel has no `authorized` attribute."""
    driver: str | None


def parse(text: str) -> list[PciAuth]:
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 4:
            continue
        auth = None if words[3] == "-" else int(words[3])
        out.append(PciAuth(words[0], (int(words[1], 16), int(words[2], 16)), auth,
                           words[4] if len(words) > 4 else None))
    return out


def read_tree(root: Path) -> list[PciAuth]:
    """The same data from a sysfs tree on disk (for tests with a fake tree)."""
    lines = []
    for dev in sorted((root / "sys/bus/pci/devices").iterdir()):
        auth = dev / "authorized"
        driver = dev / "driver"
        lines.append(" ".join([
            dev.name, (dev / "vendor").read_text().strip(), (dev / "device").read_text().strip(),
            auth.read_text().strip() if auth.exists() else "-",
            driver.resolve().name if driver.is_symlink() else ""]))
    return parse("\n".join(lines))


def has_authorization(devices: list[PciAuth]) -> bool:
    return any(d.authorized is not None for d in devices)


def allow_list(cmdline: str) -> frozenset[tuple[int, int]]:
    """The filter's allow list: the built-in one plus authorize_allow_devs=pci:VVVV:DDDD,..."""
    extra: set[tuple[int, int]] = set()
    for m in re.finditer(r"\bauthorize_allow_devs=(\S+)", cmdline):
        for part in m.group(1).split(";"):
            if part.startswith("pci:"):
                for pair in part[4:].split(","):
                    vendor, _, device = pair.partition(":")
                    extra.add((int(vendor, 16), int(device, 16)))
    return TDX_ALLOWED | extra


def violations(devices: list[PciAuth], allowed: frozenset[tuple[int, int]]) -> list[str]:
    """Every device whose authorization or binding breaks the filter's rules."""
    out = []
    for d in devices:
        if d.authorized is None:
            continue
        want = 1 if d.ids in allowed else 0
        label = f"{d.bdf} ({d.ids[0]:04x}:{d.ids[1]:04x})"
        if d.authorized != want:
            out.append(f"{label}: authorized={d.authorized}, the allow list says {want}")
        if d.authorized == 0 and d.driver:
            out.append(f"{label}: unauthorized but bound to {d.driver}")
    return out
