"""QEMU never outlives the test run that started it, even when that run is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import alive, descendants, is_live_qemu

from cocolab.deadline import Deadline

TWO_VMS = """
import pytest

def test_first(vm): pass

@pytest.mark.cmdline("cocolab.second=1")
def test_second(vm): pass
"""


@pytest.mark.parametrize("source, qemus", [("def test_boot(vm): pass\n", 1), (TWO_VMS, 2)],
                         ids=["one-vm", "one-booting-ahead"])
def test_sigkill_of_pytest_mid_boot_takes_qemu_down(tmp_path: Path, source: str,
                                                   qemus: int) -> None:
    """With two VMs, the second boots ahead (pool.py) on another thread while the first
    boots: both QEMUs must die with the pytest that started them."""
    (tmp_path / "test_inner.py").write_text(source)
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-snapshots",
         "--boot-ahead", "1", "--results", str(tmp_path / "results"),
         str(tmp_path / "test_inner.py")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = Deadline(60)
        qemu: list[int] = []
        while len(qemu) < qemus and not deadline.expired() and inner.poll() is None:
            qemu = [p for p in descendants(inner.pid) if is_live_qemu(p)]
            time.sleep(0.05)  # poll interval
        assert len(qemu) == qemus, f"the inner pytest started {len(qemu)} QEMU, not {qemus}"
        os.kill(inner.pid, signal.SIGKILL)
        inner.wait()
        deadline = Deadline(10)
        while any(alive(p) for p in qemu) and not deadline.expired():
            time.sleep(0.05)
        assert not any(alive(p) for p in qemu), f"QEMU {qemu} outlived its SIGKILLed pytest"
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
