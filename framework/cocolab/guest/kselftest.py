"""Selftests in a booted guest: an install (kernel/selftests.py) copied in once per guest,
then one case, or one program, run and read back as KTAP.

A harness program's case runs alone (`PROGRAM -r CASE`: the harness's own runner, its own
per-test timeout), so a kernel warning during it is that case's; any other program runs whole
under run_kselftest.sh, the kselftest runner. Either way the guest's `timeout` ends it
(SIGKILL) after `timeout_s`, and the SSH command waits a little longer: a selftest that hangs
is the selftest's (or the kernel's) result, never a lost connection.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocolab.vm import VM
    from cocolab.vm.ssh import CommandResult

GUEST_DIR = "/opt/kselftest"
_SSH_SLACK_S = 30.0
_KILLED = (124, 137)
"""busybox timeout's status for a program it killed (SIGKILL: 137; SIGTERM: 124 or 143)."""


@dataclass(frozen=True)
class SelftestRun:
    command: str
    """What ran in the guest (inside its timeout)."""
    returncode: int
    output: str
    """stdout and stderr, interleaved as the program wrote them: KTAP and its log."""
    timed_out: bool

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


class GuestSelftests:
    """`vm.kselftest`: run what an install holds, once it is in the guest."""

    def __init__(self, vm: VM):
        self._vm = vm
        self._installed: set[str] = set()

    def install(self, digest: str, tarball: Callable[[], bytes]) -> str:
        """The install's directory in the guest, copied in (once: `tarball()` is called only
        then) as `digest` names it."""
        where = f"{GUEST_DIR}/{digest}"
        if digest not in self._installed:
            quoted = shlex.quote(where)
            self._vm.run(f"test -f {quoted}/.done || {{ rm -rf {quoted} && mkdir -p {quoted} "
                         f"&& tar -x -C {quoted} && touch {quoted}/.done; }}",
                         timeout=120.0, stdin=tarball(), check=True)
            self._installed.add(digest)
        return where

    def run_case(self, where: str, target: str, program: str, case: str,
                 timeout_s: float) -> SelftestRun:
        """One harness case: `cd TARGET && PROGRAM -r CASE`."""
        command = (f"cd {shlex.quote(f'{where}/{target}')} && "
                   f"./{shlex.quote(program)} -r {shlex.quote(case)}")
        return self._run(command, timeout_s)

    def run_program(self, where: str, target: str, program: str,
                    timeout_s: float) -> SelftestRun:
        """A program whole, under the kselftest runner (its timeout overridden: the guest's
        own kill comes later, at `timeout_s`)."""
        command = (f"cd {shlex.quote(where)} && ./run_kselftest.sh -o {int(timeout_s)} "
                   f"-t {shlex.quote(f'{target}:{program}')}")
        return self._run(command, timeout_s + 5)

    def _run(self, command: str, timeout_s: float) -> SelftestRun:
        wrapped = f"timeout -s KILL {int(timeout_s)} sh -c {shlex.quote(command)} 2>&1"
        result: CommandResult = self._vm.run(wrapped, timeout=timeout_s + _SSH_SLACK_S)
        return SelftestRun(command, result.returncode, result.stdout,
                           result.returncode in _KILLED)
