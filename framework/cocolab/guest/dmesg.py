"""The guest kernel log, with marks so a test reads only what its own actions caused."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocolab.vm import VM

_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\] ")


@dataclass(frozen=True)
class DmesgLines:
    lines: tuple[str, ...]

    def contains(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def grep(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [line for line in self.lines if rx.search(line)]

    def __str__(self) -> str:
        return "\n".join(self.lines) if self.lines else "(no kernel messages)"


class Dmesg:
    def __init__(self, vm: VM):
        self._vm = vm
        self._mark: str | None = None

    def read(self) -> DmesgLines:
        out = self._vm.run("dmesg", check=True).stdout
        return DmesgLines(tuple(_TIMESTAMP.sub("", line) for line in out.splitlines()))

    def mark(self) -> str:
        """Write a unique line into the kernel log; since_mark() returns what follows it.

        Written at KERN_DEBUG (<7>) so it stays off the serial console.
        """
        mark = f"cocolab-mark-{secrets.token_hex(6)}"
        self._vm.run(f"echo '<7>{mark}' > /dev/kmsg", check=True)
        self._mark = mark
        return mark

    def forget(self) -> None:
        """Drop the mark: each test on a shared VM starts without one (the plugin calls this),
        so since_mark() can never read an earlier test's window."""
        self._mark = None

    def since_mark(self) -> DmesgLines:
        if self._mark is None:
            raise RuntimeError("dmesg.since_mark() called before this test's dmesg.mark()")
        lines = self.read().lines
        for i, line in enumerate(lines):
            if self._mark in line:
                return DmesgLines(lines[i + 1:])
        raise AssertionError(f"dmesg mark {self._mark} is no longer in the kernel log "
                             "(ring buffer wrapped?)")
