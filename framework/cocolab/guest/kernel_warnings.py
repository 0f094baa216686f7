"""Kernel reports that mean the kernel misbehaved without crashing: WARN_ON, UBSAN, KASAN,
lockdep, hung tasks, RCU stalls. A test during which the guest printed one must not pass
silently (the console watcher already ends the VM on a panic, Oops or BUG).

Pure text in, reports out: fed the console slice of one test (console=ttyS0 at the default
loglevel 7 carries every one of these, printed at KERN_WARNING or KERN_ERR).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PRINTK = r"(?:\[\s*\d+\.\d+\]\s*)?"
REPORT_STARTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(r"^" + _PRINTK + pattern, re.M)) for kind, pattern in (
        # lockdep and suspicious-RCU reports are "WARNING:" lines of their own kind
        ("lockdep", r"WARNING: (?:possible (?:circular|recursive) locking|inconsistent lock "
                    r"state|suspicious RCU usage|bad unlock balance|lock held when returning)"
                    r"[^\r\n]*"),
        ("WARN_ON", r"WARNING: CPU: \d+ PID: \d+ at [^\r\n]+"),
        ("UBSAN", r"UBSAN: [^\r\n]+"),
        ("KASAN", r"(?:BUG|WARNING): KASAN: [^\r\n]+"),
        ("KFENCE", r"BUG: KFENCE: [^\r\n]+"),
        ("hung task", r"INFO: task [^\r\n]+ blocked for more than \d+ seconds\.?"),
        ("RCU stall", r"rcu: INFO: \S+ (?:self-)?detected stalls? [^\r\n]*"),
        ("soft lockup", r"watchdog: BUG: soft lockup[^\r\n]*"),
    ))
"""(kind, the report's first line). A report runs to its '---[ end trace' line."""

_END = re.compile(r"---\[ end trace[^\r\n]*")
_REPORT_LINES = 80


@dataclass(frozen=True)
class KernelWarning:
    kind: str
    line: str
    """The report's first line, without its printk timestamp."""
    report: str
    """The whole report as printed (up to its end-of-trace line, at most 80 lines)."""

    def __str__(self) -> str:
        return f"{self.kind}: {self.line}"


def kernel_warnings(text: str) -> list[KernelWarning]:
    """Every report in `text`, in order; a lockdep WARNING is reported once, as lockdep."""
    text = text.replace("\r\n", "\n")
    found: dict[int, KernelWarning] = {}
    for kind, start in REPORT_STARTS:
        for m in start.finditer(text):
            if m.start() in found:
                continue
            line = re.sub(r"^" + _PRINTK, "", m.group(0)).strip()
            found[m.start()] = KernelWarning(kind, line, _report(text, m.start()))
    return [found[pos] for pos in sorted(found)]


def _report(text: str, start: int) -> str:
    lines = text[start:].split("\n")[:_REPORT_LINES]
    for i, line in enumerate(lines):
        if _END.search(line):
            return "\n".join(lines[:i + 1])
    return "\n".join(lines[:20])
