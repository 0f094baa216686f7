"""/dev/port and port I/O on an unlocked kernel: root may use them.

Source: drivers/char/mem.c read_port() (inb() per byte below 65536); arch/x86/kernel/ioport.c
ksys_ioperm()/SYSCALL iopl (CAP_SYS_RAWIO, then security_locked_down(LOCKDOWN_IOPORT)).
Their locked-down counterparts are in test_lockdown.py.
"""

from __future__ import annotations

import pytest

from cocolab.assertions import assert_allowed
from cocolab.guest import Guest

pytestmark = pytest.mark.usefixtures("plain_dev_mem")


@pytest.mark.kconfig("DEVPORT")
def test_dev_port_is_readable_by_root(vm: Guest) -> None:
    result = vm.probe("read", "/dev/port", 0x80, 1)
    assert_allowed(result)
    assert result.count == 1


@pytest.mark.kconfig("X86_IOPL_IOPERM")  # without it both are ENOSYS (arch/x86/kernel/ioport.c)
def test_ioperm_and_iopl_are_allowed_for_root(vm: Guest) -> None:
    assert_allowed(vm.probe("ioperm", 0x80, 1))
    assert_allowed(vm.probe("iopl", 3))
