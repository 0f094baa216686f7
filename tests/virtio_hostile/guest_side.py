"""What the hostile-device tests do inside the guest: read the hwrng, and run a command that
the device may never answer in the background, then look at the task it left.

Beside the tests rather than in conftest.py: more than one conftest.py is imported as
`conftest`, so `from conftest import` names whichever pytest loaded last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from cocolab.guest import Guest
from cocolab.guest.virtio import ServedDevice
from cocolab.pytest_plugin.markers import FINDING

HUNG_TASK_TIMEOUT_S = 2
"""Set in the guest while a test may leave a task waiting on the device: khungtaskd reports a
task blocked uninterruptibly for this long (two checks apart), so "no hung task" holds within
the test, not 120 s (Debian's default) after it. (A block reader is never reported:
blk_io_schedule() wakes it every timeout / 2 on purpose; test_blk.py asserts its state.)"""


HUNG_TASK_SYSCTL = "/proc/sys/kernel/hung_task_timeout_secs"

ENTROPY = b"cocolab-entropy!"
"""The 16 byte values a test that must spot a foreign byte feeds the rng (never random ones):
any other byte the guest reads did not come from the device."""


def record_dos(vm: Guest, request: pytest.FixtureRequest, what: str) -> None:
    """A task the device left waiting: a denial of service, which the threat model allows.
    Recorded on the passing test (its `finding`), said beside its result, and the guest is
    not reused."""
    request.node.user_properties.append((FINDING, "dos"))
    request.node.add_report_section("call", "denial of service", what)
    vm.retire(f"a task waits on the device: {what}", planned=True)


def quiet_khwrngd(vm: Guest) -> None:
    """Stop the kernel's own reader of the hwrng (khwrngd runs while rng_quality is above 0,
    drivers/char/hw_random/core.c): from here on only the test's reads take bytes."""
    vm.run("echo 0 > /sys/class/misc/hw_random/rng_quality", check=True)


def reads_32_bytes_on_register(vm: Guest) -> bool:
    """Whether the guest's hwrng core reads 32 bytes, non-blocking, from a device as it
    registers: add_early_randomness() in 6.1's drivers/char/hw_random/core.c, which 6.12's
    has no more. Asked of /proc/kallsyms once the core is loaded (6.1 builds it in)."""
    return vm.run("grep -qw add_early_randomness /proc/kallsyms").returncode == 0


def read_hwrng(vm: Guest, count: int, kill_after: float = 5.0) -> tuple[bytes, str]:
    """`count` bytes from /dev/hwrng (SIGKILL after `kill_after` s), and what the shell said."""
    quiet_khwrngd(vm)
    r = vm.run(f"timeout -s KILL {kill_after:g} head -c {count} /dev/hwrng > /tmp/hwrng; "
               "echo status=$?; od -An -tx1 -v /tmp/hwrng", timeout=kill_after + 30)
    status, _, dump = r.stdout.partition("\n")
    return bytes.fromhex(dump.replace("\n", " ").replace(" ", "")), status


@dataclass(frozen=True)
class Blocked:
    """A guest command started in the background, looked at `after` seconds later (before
    the SIGKILL), then again a second after it."""

    waiting: str
    """Its process state letter before the SIGKILL (S or D: still waiting; '' if it had
    already ended, for whatever reason)."""
    state: str
    """Its process state letter after the SIGKILL (D: uninterruptible; '' once it has ended)."""
    output: str
    """What it printed, and 'status=N' once it ended (137: SIGKILL ended it)."""

    @property
    def killed(self) -> bool:
        """It was still waiting when SIGKILL came, and SIGKILL ended it."""
        return self.waiting in ("S", "D") and self.state == "" and "status=137" in self.output


def run_in_background(vm: Guest, command: str, after: float) -> Blocked:
    """Start `command` (one process) detached, so that a task the device never answers does
    not hold the SSH session; SIGKILL it after `after` seconds and look at it a second later."""
    # a kernel without DETECT_HUNG_TASK has no khungtaskd, and nothing to set
    vm.run(f"if [ -e {HUNG_TASK_SYSCTL} ]; then echo {HUNG_TASK_TIMEOUT_S} > {HUNG_TASK_SYSCTL}; "
           "fi", check=True)
    vm.run(f"( {command} & echo $! > /tmp/bg.pid; wait $!; echo status=$? ) "
           "> /tmp/bg.out 2>&1 </dev/null &", check=True)
    time.sleep(after)
    state = "sed -n 's/^State:\\s*\\(.\\).*/\\1/p' /proc/$(cat /tmp/bg.pid)/status 2>/dev/null"
    waiting = vm.run(state).stdout.strip()
    vm.run("kill -KILL $(cat /tmp/bg.pid) 2>/dev/null; sleep 1")
    return Blocked(waiting, vm.run(state).stdout.strip(), vm.run("cat /tmp/bg.out").stdout)


def bind_in_background(vm: Guest, device: ServedDevice, after: float = 5.0) -> Blocked | None:
    """Bind the device's driver as `device.bind()` does, but in the background: a probe that
    waits on a request the device never answers blocks its writer in the kernel, which no
    SSH command should wait out. None if it bound or was refused in time; else the writer,
    still waiting after `after` seconds."""
    device.load_driver()
    if device.bound() == device.driver:
        return None
    bind = f"/sys/bus/virtio/drivers/{device.driver}/bind"
    blocked = run_in_background(vm, f"sh -c 'echo {device.virtio_name()} > {bind}'", after)
    return blocked if blocked.waiting else None
