"""The lockdown LSM closes /dev/mem, /dev/port, PCI config writes and port I/O.

Source: security/lockdown/lockdown.c (lockdown_is_locked_down(): pr_notice_ratelimited
"Lockdown: %s: %s is restricted; see man kernel_lockdown.7"; LOCKDOWN_DEV_MEM, _PCI_ACCESS and
_IOPORT lie below LOCKDOWN_INTEGRITY_MAX, so both levels block them); drivers/char/mem.c
open_port(); drivers/pci/pci-sysfs.c pci_write_config(); kernel-behaviors.md §1.3.
Each test runs on three boots: unlocked (the counterpart: access allowed, nothing logged),
lockdown=integrity and lockdown=confidentiality.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

import pytest

from cocolab.assertions import assert_allowed, assert_denied, assert_logged, assert_not_logged
from cocolab.guest import Guest
from cocolab.guest.pci import PciBar
from cocolab.guest.probe import ProbeResult

pytestmark = pytest.mark.kconfig("SECURITY_LOCKDOWN_LSM")

LEVELS = ("none", "integrity", "confidentiality")
level = pytest.mark.parametrize("level", [
    pytest.param("none", id="unlocked"),
    pytest.param("integrity", marks=pytest.mark.cmdline("lockdown=integrity")),
    pytest.param("confidentiality", marks=pytest.mark.cmdline("lockdown=confidentiality")),
])
RATELIMIT_INTERVAL_S = 5  # DEFAULT_RATELIMIT_INTERVAL, include/linux/ratelimit_types.h


@pytest.fixture
def lockdown_active(vm: Guest, level: str) -> str:
    """The level securityfs shows. On the unlocked boot an inactive LSM is a skip; on a
    `lockdown=` boot it is the kernel's failure: the command line asked for lockdown and the
    kernel did not give it (security/lockdown/lockdown.c lockdown_param())."""
    r = vm.run("cat /sys/kernel/security/lockdown")
    if not r.ok:
        why = ("the lockdown LSM is built in but not active (no /sys/kernel/security/"
               "lockdown): add 'lockdown' to CONFIG_LSM or boot with lsm=...,lockdown")
        if level == "none":
            pytest.skip(why)
        pytest.fail(f"booted with lockdown={level}, but {why}", pytrace=False)
    return r.stdout.strip()


def _expect(vm: Guest, level: str, action: Callable[[], ProbeResult], errno_: int, stage: str,
            reason: str) -> None:
    """Unlocked: `action` is allowed and nothing is logged. Locked: it fails `errno_` at `stage`
    and the kernel logs the lockdown notice.

    The notice is pr_notice_ratelimited() with one ratelimit state for every reason (lib/
    ratelimit.c; burst 10 per 5 s), so a burst of lockdown notices at boot (tracefs under
    confidentiality) can swallow ours. Then the same action is tried again once the 5 s window
    has passed, when the kernel must print it.
    """
    __tracebackhide__ = True
    vm.dmesg.mark()
    result = action()
    lines = vm.dmesg.since_mark()
    if level == "none":
        assert_allowed(result)
        assert_not_logged(lines, "Lockdown:")
        return
    assert_denied(result, errno_, stage=stage)
    notice = f"Lockdown: cocolab-probe: {reason} is restricted; see man kernel_lockdown.7"
    if lines.contains(notice):
        return
    time.sleep(RATELIMIT_INTERVAL_S + 0.5)
    vm.dmesg.mark()
    assert_denied(action(), errno_, stage=stage)
    assert_logged(vm.dmesg.since_mark(), notice)


@level
def test_securityfs_shows_the_level(vm: Guest, lockdown_active: str, level: str) -> None:
    expected = " ".join(f"[{x}]" if x == level else x for x in LEVELS)
    assert lockdown_active == expected


@level
@pytest.mark.kconfig("DEVMEM")
def test_dev_mem_open(vm: Guest, lockdown_active: str, level: str,
                      request: pytest.FixtureRequest) -> None:
    if level == "none":  # the unlocked counterpart needs /dev/mem open, as a plain guest has it
        request.getfixturevalue("plain_dev_mem")
    _expect(vm, level, lambda: vm.probe("open", "/dev/mem"), errno.EPERM, "open",
            "/dev/mem,kmem,port")


@level
@pytest.mark.kconfig("DEVPORT")
def test_dev_port_open(vm: Guest, lockdown_active: str, level: str,
                       request: pytest.FixtureRequest) -> None:
    """Locked, in a confidential guest with the CC rule too: open_port() asks lockdown before
    the CC rule, so the notice still comes (seen with the v5 patch on cc-sim-tdx)."""
    if level == "none":
        request.getfixturevalue("plain_dev_mem")
    _expect(vm, level, lambda: vm.probe("open", "/dev/port"), errno.EPERM, "open",
            "/dev/mem,kmem,port")


@level
def test_pci_config_write(vm: Guest, lockdown_active: str, level: str, idle_bar: PciBar) -> None:
    # Write back the byte already there (Interrupt Line, 0x3c): harmless when it is allowed.
    config = f"/sys/bus/pci/devices/{idle_bar.bdf}/config"
    current = vm.probe("read", config, 0x3C, 1)
    assert_allowed(current)
    _expect(vm, level, lambda: vm.probe("write", config, 0x3C, current.hex), errno.EPERM,
            "write", "direct PCI access")


@level
def test_pci_sysfs_resource_mmap(vm: Guest, lockdown_active: str, level: str,
                                 idle_bar: PciBar) -> None:
    _expect(vm, level, lambda: vm.probe("mmap", idle_bar.sysfs_resource, 0, 16), errno.EPERM,
            "mmap", "direct PCI access")


@level
@pytest.mark.kconfig("X86_IOPL_IOPERM")  # without it: ENOSYS before any lockdown check
def test_ioperm(vm: Guest, lockdown_active: str, level: str) -> None:
    _expect(vm, level, lambda: vm.probe("ioperm", 0x80, 1), errno.EPERM, "ioperm",
            "raw io port access")


@level
@pytest.mark.kconfig("X86_IOPL_IOPERM")
def test_iopl(vm: Guest, lockdown_active: str, level: str) -> None:
    _expect(vm, level, lambda: vm.probe("iopl", 3), errno.EPERM, "iopl",
            "raw io port access")
