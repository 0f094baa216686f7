"""Smoke tests of the rig itself: boot, SSH, serial, dmesg, VM sharing, crash reporting."""

from __future__ import annotations

import pytest

from cocolab.errors import GuestCrashed
from cocolab.guest import Guest


def test_boots_the_requested_kernel(vm: Guest, cocolab_rig) -> None:
    assert vm.kernel_release == cocolab_rig.kernel.release
    cmdline = vm.run("cat /proc/cmdline", check=True).stdout
    assert "panic=-1" in cmdline.split()


def test_ssh_run_reports_exit_status_stdout_and_stderr(vm: Guest) -> None:
    r = vm.run("echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")


def test_ssh_run_passes_stdin(vm: Guest) -> None:
    r = vm.run("tr a-z A-Z", stdin=b"kernel\n")
    assert r.stdout == "KERNEL\n"


def test_serial_console_run_reports_exact_exit_status(vm: Guest) -> None:
    r = vm.console.run("echo $((6 * 7)); exit 3")
    assert r.returncode == 3
    assert r.output.strip() == "42"
    assert vm.console.run("true").returncode == 0


def test_dmesg_since_mark_sees_only_new_lines(vm: Guest) -> None:
    vm.run("echo '<6>cocolab-smoke-before' > /dev/kmsg", check=True)
    vm.dmesg.mark()
    vm.run("echo '<6>cocolab-smoke-after' > /dev/kmsg", check=True)
    new = vm.dmesg.since_mark()
    assert new.contains("cocolab-smoke-after")
    assert not new.contains("cocolab-smoke-before")


@pytest.mark.fresh_vm
def test_guest_panic_is_reported_as_a_crash(vm: Guest) -> None:
    with pytest.raises(GuestCrashed) as info:
        vm.run("echo c > /proc/sysrq-trigger", timeout=60)
    assert "Kernel panic" in info.value.crash_line or "sysrq" in info.value.console_tail
    with pytest.raises(GuestCrashed):
        vm.check_alive()

