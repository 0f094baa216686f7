"""vm.topology: compare what the guest kernel enumerated with what the topology declared.

A mismatch is a TopologyError (the rig is wrong, not the kernel): a test that runs on the
wrong topology passes or fails for the wrong reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cocolab.errors import TopologyError
from cocolab.guest.sysfs import parse_attributes
from cocolab.topology import ExpectedView

if TYPE_CHECKING:
    from cocolab.vm import VM

READ_VIEW = (
    "cd /sys/bus/pci/devices && grep -s . */vendor */device */class; "
    "for g in /sys/kernel/iommu_groups/*; do [ -d \"$g\" ] || continue; "
    "for d in $g/devices/*; do echo group ${g##*/} ${d##*/}; done; done"
)
"""Every function's IDs and class (one grep: `BDF/vendor:0x8086`), then `group N BDF` per
IOMMU group member (shell builtins only)."""


@dataclass(frozen=True)
class GuestPCI:
    functions: dict[str, tuple[int, int, int]]
    """BDF -> (vendor, device, class)."""
    groups: dict[str, str]
    """BDF -> IOMMU group number (empty without an active IOMMU)."""

    @classmethod
    def parse(cls, text: str) -> GuestPCI:
        groups = {}
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["group"] and len(words) == 3:
                groups[words[2]] = words[1]
        functions = {bdf: (int(a["vendor"], 16), int(a["device"], 16), int(a["class"], 16))
                     for bdf, a in parse_attributes(text).items()
                     if {"vendor", "device", "class"} <= a.keys()}
        return cls(functions, groups)


def _ids(ids: tuple[int, int, int]) -> str:
    return f"{ids[0]:04x}:{ids[1]:04x} class {ids[2]:06x}"


def _fmt(groups: list[set[str]]) -> str:
    return " ".join("{" + ", ".join(sorted(g)) + "}" for g in
                    sorted(groups, key=lambda g: sorted(g))) or "(none)"


def compare(view: ExpectedView, guest: GuestPCI) -> list[str]:
    """Readable differences; empty when the guest matches the declaration."""
    diffs = []
    for ident, placed in view.placed.items():
        want = view.expected_ids(ident)
        got = guest.functions.get(placed.bdf)
        what = f"{ident} ({placed.device.model.name} {_ids(want)})"
        if got is None:
            diffs.append(f"device {what}: expected at {placed.bdf}, the guest has nothing there")
        elif got != want:
            diffs.append(f"device {what}: expected at {placed.bdf}, the guest has {_ids(got)}")
    if diffs or view.groups is None:
        if (view.groups is None and not view.machine.viommu
                and any(p.bdf in guest.groups for p in view.placed.values())):
            diffs.append("IOMMU groups: the machine declares no vIOMMU, but the guest formed "
                         "groups")
        return diffs
    bdf_to_id = {p.bdf: i for i, p in view.placed.items()}
    actual: dict[str, set[str]] = {}
    for bdf, ident in bdf_to_id.items():
        number = guest.groups.get(bdf)
        if number is None:
            diffs.append(f"device {ident} ({bdf}) is in no IOMMU group (is the vIOMMU on?)")
            continue
        actual.setdefault(number, set()).add(ident)
    expected = [set(g) for g in view.groups]
    if not diffs and sorted(map(sorted, expected)) != sorted(map(sorted, actual.values())):
        diffs.append("IOMMU groups (declared devices only):\n"
                     f"    expected: {_fmt(expected)}\n"
                     f"    guest:    {_fmt(list(actual.values()))}")
    return diffs


class GuestTopology:
    def __init__(self, vm: VM, view: ExpectedView):
        self._vm = vm
        self.view = view

    def read(self) -> GuestPCI:
        return GuestPCI.parse(self._vm.run(READ_VIEW, check=True).stdout)

    def verify(self) -> None:
        diffs = compare(self.view, self.read())
        if diffs:
            t = self.view.topology
            raise TopologyError(
                f"topology {t.name} ({t.source}) on machine {self.view.machine.name} does not "
                "match the guest:\n  " + "\n  ".join(diffs))

    def bdf(self, ident: str) -> str:
        """The guest BDF of the declared device `ident`."""
        return self.view.placed[ident].bdf

