"""Kernel warning reports found in console text, against recorded report formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocolab.guest.kernel_warnings import kernel_warnings

REPORTS = Path(__file__).with_name("kernel-reports")


@pytest.mark.parametrize(("name", "found"), [
    ("warn_on.txt", [("WARN_ON", "WARNING: CPU: 1 PID: 245 at drivers/misc/lkdtm/bugs.c:99 "
                                 "lkdtm_WARNING+0x11/0x20 [lkdtm]")]),
    ("ubsan.txt", [("UBSAN", "UBSAN: array-index-out-of-bounds in "
                             "drivers/misc/lkdtm/bugs.c:456:16")]),
    ("lockdep.txt", [("lockdep", "WARNING: possible circular locking dependency detected")]),
    ("hung_task.txt", [("hung task", "INFO: task kworker/0:1:12 blocked for more than 122 "
                                     "seconds.")]),
    ("rcu_stall.txt", [("RCU stall", "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"),
                       ("RCU stall", "rcu: INFO: rcu_sched self-detected stall on CPU")]),
    ("kasan.txt", [("KASAN", "BUG: KASAN: slab-out-of-bounds in kmalloc_oob_right+0x1d/0x30")]),
    ("clean.txt", []),
])
def test_reports_are_found_by_kind(name: str, found: list[tuple[str, str]]) -> None:
    text = (REPORTS / name).read_text()
    assert [(w.kind, w.line) for w in kernel_warnings(text)] == found


def test_a_report_runs_to_its_end_of_trace_line() -> None:
    (warning,) = kernel_warnings((REPORTS / "warn_on.txt").read_text().replace("\n", "\r\n"))
    assert warning.report.splitlines()[0].endswith("lkdtm_WARNING+0x11/0x20 [lkdtm]")
    assert warning.report.splitlines()[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert "echo done" not in warning.report
    assert str(warning).startswith("WARN_ON: WARNING: CPU: 1 PID: 245 at ")


def test_reports_come_in_console_order() -> None:
    text = "".join((REPORTS / n).read_text() for n in ("hung_task.txt", "warn_on.txt"))
    assert [w.kind for w in kernel_warnings(text)] == ["hung task", "WARN_ON"]


def test_a_report_the_kernel_goes_on_after_is_no_crash() -> None:
    """The console watcher ends a VM on a crash line; a KASAN or KFENCE report (without
    panic_on_warn) or a soft lockup is the kernel-warnings check's: it fails the test it came
    in instead of turning it into a rig failure (measured on the hardening lane: a KASAN
    report made the test an error)."""
    import re

    from cocolab.vm.console import CRASH_PATTERNS
    crash = re.compile(b"|".join(CRASH_PATTERNS))
    for line in (b"BUG: kernel NULL pointer dereference, address: 0000000000000008\r\n",
                 b"Kernel panic - not syncing: Fatal exception\n", b"Oops: 0002 [#1] SMP\n",
                 b"kernel BUG at mm/slub.c:123!\n"):
        assert crash.search(line), line
    for line in (b"BUG: KASAN: slab-out-of-bounds in lkdtm_SLAB_LINEAR_OVERFLOW+0x27/0x5c\n",
                 b"BUG: KFENCE: out-of-bounds read in test_out_of_bounds_read+0x1/0x2\n",
                 b"watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [swapper/0:1]\n"):
        assert not crash.search(line), line
        assert kernel_warnings(line.decode()), line
    # the console is read as it comes: a BUG line is judged once it is whole
    assert not crash.search(b"[   12.5] BUG: K"), "a partial line was taken for a crash"
