"""bench/soak.py's accounting: what counts as a rig error, from JUnit XML (no QEMU)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="2" failures="2" skipped="1" tests="6">
<testcase classname="t" name="ok"/>
<testcase classname="t" name="kernel"><failure message="AssertionError: expected EPERM, the
 kernel allowed it">...</failure></testcase>
<testcase classname="t" name="ssh"><failure message="cocolab.errors.GuestCommandError: SSH
 failed running 'true'">...</failure></testcase>
<testcase classname="t" name="boot"><error message="failed on setup with
 &quot;cocolab.errors.BootError: guest not READY after 120s&quot;">...</error></testcase>
<testcase classname="t" name="dependent"><error message="failed on setup with &quot;Failed:
 cocolab: RIG FAILURE: its VM (default VM) failed to boot in t::boot&quot;">...</error>
</testcase>
<testcase classname="t" name="skip"><skipped message="needs CONFIG_X"/></testcase>
</testsuite></testsuites>
"""


def test_kernel_failures_and_rig_errors_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    record = soak.SuiteRun(1, "debian:trixie", "devmem")
    soak.parse_junit(path, record)
    assert (record.passed, record.failed, record.errors, record.skipped) == (1, 1, 3, 1)
    assert record.rig_errors == {"GuestCommandError": 1, "BootError": 1,
                                 "a shared VM that failed to boot": 1}
    assert record.problems[0].startswith("t::kernel: AssertionError: expected EPERM, the")
    assert [p.split(":")[2] for p in record.problems] == ["kernel", "ssh", "boot", "dependent"]


def test_the_table_sums_every_run() -> None:
    runs = [soak.SuiteRun(1, "debian:sid", "devmem", passed=40, skipped=3, wall_s=41.0),
            soak.SuiteRun(2, "debian:sid", "devmem", passed=39, errors=1, wall_s=44.5,
                          rig_errors={"GuestCommandError": 1})]
    last = soak.table(runs).splitlines()[-1]
    assert last == ("2 suite runs: 79 passed, 0 failed, 1 errors, 3 skipped; rig errors: "
                    "{'GuestCommandError': 1}; leftover QEMU: 0")


def test_a_live_child_is_left_over_and_a_zombie_is_reaped_not_counted() -> None:
    import subprocess
    import time
    live = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    try:
        stat = Path(f"/proc/{dead.pid}/stat")
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":
            time.sleep(0.01)
        found = soak.leftovers()
        assert f"{live.pid} sleep" in found
        assert not any(line.startswith(f"{dead.pid} ") for line in found)
        assert not stat.exists()  # reaped
    finally:
        live.kill()
        live.wait()
