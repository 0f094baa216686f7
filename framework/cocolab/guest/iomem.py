"""/proc/iomem as a tree: where RAM, ROM and device BARs are, read from the guest itself."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(r"^(\s*)([0-9a-f]+)-([0-9a-f]+) : (.*)$")
PAGE = 4096
ONE_MIB = 1 << 20


@dataclass
class Resource:
    start: int
    end: int
    """Inclusive, as /proc/iomem prints it."""
    name: str
    children: list[Resource] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def walk(self) -> list[Resource]:
        out = [self]
        for child in self.children:
            out += child.walk()
        return out

    @property
    def busy_child(self) -> Resource | None:
        """The claim a driver put under this resource (e.g. 'e1000' under a BAR), if any."""
        return self.children[0] if self.children else None

    def __str__(self) -> str:
        return f"{self.start:08x}-{self.end:08x} : {self.name}"


def parse_iomem(text: str) -> list[Resource]:
    roots: list[Resource] = []
    stack: list[tuple[int, Resource]] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        depth = len(m.group(1))
        res = Resource(int(m.group(2), 16), int(m.group(3), 16), m.group(4).strip())
        while stack and stack[-1][0] >= depth:
            stack.pop()
        (stack[-1][1].children if stack else roots).append(res)
        stack.append((depth, res))
    return roots


class IOMem:
    def __init__(self, text: str):
        self.roots = parse_iomem(text)
        if self.roots and all(r.start == 0 and r.end == 0 for r in self.roots):
            raise ValueError("/proc/iomem shows zero addresses: read it as root")

    def all(self) -> list[Resource]:
        return [r for root in self.roots for r in root.walk()]

    def named(self, name: str) -> list[Resource]:
        return [r for r in self.all() if r.name == name]

    def ram_page_below_1mib(self) -> int:
        """A whole System RAM page below 1 MiB (not page 0: firmware marks it reserved)."""
        for r in self.named("System RAM"):
            page = (r.start + PAGE - 1) // PAGE * PAGE
            if page and page + PAGE - 1 <= min(r.end, ONE_MIB - 1):
                return page
        raise LookupError("no System RAM page below 1 MiB in /proc/iomem")

    def ram_page_above_1mib(self) -> int:
        for r in self.named("System RAM"):
            page = max(r.start, ONE_MIB)
            page = (page + PAGE - 1) // PAGE * PAGE
            if page + PAGE - 1 <= r.end:
                return page
        raise LookupError("no System RAM page at or above 1 MiB in /proc/iomem")

    def low_ram(self) -> Resource:
        """The first System RAM range below 1 MiB."""
        for r in self.named("System RAM"):
            if r.end < ONE_MIB:
                return r
        raise LookupError("no System RAM below 1 MiB in /proc/iomem")

    def system_rom(self) -> Resource:
        found = self.named("System ROM")
        if not found:
            raise LookupError("no 'System ROM' in /proc/iomem")
        return found[0]

    def page0_name(self) -> str:
        for r in self.roots:
            if r.start == 0:
                return r.name
        return ""

    def find(self, start: int) -> Resource | None:
        for r in self.all():
            if r.start == start:
                return r
        return None
