"""Running the guest helpers (guests/helpers/*.c): one JSON report per call, or a session that
keeps the helper alive while the test changes something, then asks it for its last report."""

from __future__ import annotations

import errno as errno_mod
import json
import select
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paramiko

from cocolab.deadline import Deadline
from cocolab.errors import GuestCommandError

if TYPE_CHECKING:
    from cocolab.vm import VM

PROBE = "/bin/cocolab-probe"
"""/dev/mem, /dev/port, sysfs resources, port I/O and sysfs writes (guests/helpers/)."""
VFIO_HELPER = "/bin/cocolab-vfio"
"""VFIO groups, containers and iommufd (guests/helpers/)."""


@dataclass(frozen=True)
class ProbeResult:
    """What the kernel answered. `ok` False means a call failed (see stage/errno) or a load
    faulted (see signal)."""

    op: str
    ok: bool
    path: str | None = None
    offset: int | None = None
    length: int | None = None
    stage: str | None = None
    errno: int | None = None
    errname: str | None = None
    signal: str | None = None
    count: int | None = None
    nonzero: int | None = None
    hex: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, line: str) -> ProbeResult:
        data = json.loads(line)
        known = {k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__}
        return cls(**known, extra=data)

    @property
    def data(self) -> bytes:
        """The first (up to 64) bytes transferred."""
        return bytes.fromhex(self.hex)

    def __str__(self) -> str:
        where = f" {self.path}" if self.path else ""
        if self.offset is not None:
            where += f" @ {self.offset:#x}+{self.length:#x}"
        if self.signal:
            return f"{self.op}{where}: {self.signal} on {self.stage}"
        if not self.ok:
            return f"{self.op}{where}: {self.stage} failed {self.errname} ({self.errno})"
        got = f", {self.count} bytes, {self.nonzero} non-zero" if self.count is not None else ""
        return f"{self.op}{where}: ok{got}{', ' + self.hex[:32] if self.hex else ''}"


def errname(number: int) -> str:
    return errno_mod.errorcode.get(number, str(number))


def helper_argv(helper: str, *words: object) -> str:
    """The shell command line; integers are written in hex (the helpers take any base)."""
    texts = [hex(w) if isinstance(w, int) else str(w) for w in words]
    return " ".join(shlex.quote(w) for w in (helper, *texts))


def run_helper(vm: VM, argv: str) -> ProbeResult:
    """Run a helper to completion; its (single) JSON report."""
    result = vm.run(argv)
    if result.returncode != 0 or not result.stdout.strip():
        raise GuestCommandError(f"{argv} did not report: {result}")
    return ProbeResult.parse(result.stdout.strip().splitlines()[-1])


HELPER_TIMEOUT_S = 60.0
"""How long a held helper may take to report: each report is one syscall or a few."""


class HelperSession:
    """A helper that reported once and now waits for a line on stdin before its last report.

    Every read has a deadline and asks the VM whether it still runs while it waits, so a
    guest that stops answering is a GuestCommandError (or GuestStopped) within the deadline,
    never a hang.
    """

    def __init__(self, vm: VM, channel: paramiko.Channel, argv: str, timeout: float):
        self._vm = vm
        self._channel = channel
        self._argv = argv
        self._timeout = timeout
        self._buffer = b""
        self.first = ProbeResult.parse(self._readline("its first report"))
        self.last: ProbeResult | None = None

    def _readline(self, what: str) -> str:
        deadline = Deadline(self._timeout)
        while b"\n" not in self._buffer:
            self._vm.check_alive()
            if self._channel.recv_ready():
                self._buffer += self._channel.recv(65536)
                continue
            if self._channel.exit_status_ready() or self._channel.closed:
                status = self._channel.recv_exit_status() if self._channel.exit_status_ready() \
                    else None
                raise GuestCommandError(f"{self._argv} ended (exit status {status}) before "
                                        f"{what}; it printed {self._buffer[-500:]!r}")
            if deadline.expired():
                raise GuestCommandError(f"{self._argv} gave no {what} within "
                                        f"{self._timeout:g}s (the guest is alive but the "
                                        "helper is stuck)")
            select.select([self._channel], [], [], 0.2)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def finish(self, line: str) -> ProbeResult:
        """Send `line`, read the helper's last report (once; later calls return it again)."""
        if self.last is None:
            try:
                with _ssh_errors(self._vm, self._argv):
                    self._channel.sendall(line.encode() + b"\n")
                    self.last = ProbeResult.parse(self._readline("its last report"))
            finally:
                # The helper exits after this report. Close at once: dropbear refuses new
                # channels while a finished one is left open.
                self._channel.close()
        return self.last


@contextmanager
def helper_session(vm: VM, argv: str,
                   timeout: float = HELPER_TIMEOUT_S) -> Iterator[HelperSession]:
    with _ssh_errors(vm, argv):
        chan = vm.ssh.start(argv, timeout=min(timeout, 10.0), alive=vm.check_alive)
    try:
        with _ssh_errors(vm, argv):
            session = HelperSession(vm, chan, argv, timeout)
        yield session
    finally:
        chan.close()


@contextmanager
def _ssh_errors(vm: VM, argv: str) -> Iterator[None]:
    """A transport failure while talking to a held helper is the rig's: GuestCommandError."""
    try:
        yield
    except (OSError, paramiko.SSHException, EOFError) as exc:
        vm.check_alive()
        raise GuestCommandError(f"SSH failed while {argv} was held: {exc}") from exc
