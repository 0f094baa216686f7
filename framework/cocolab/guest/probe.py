"""vm.probe(): exact device-file syscalls in the guest, through guests/helpers/cocolab-probe.c."""

from __future__ import annotations

import errno as errno_mod
import json
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cocolab.errors import GuestCommandError

if TYPE_CHECKING:
    from cocolab.vm import VM

HELPER = "/bin/cocolab-probe"


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


class Probe:
    def __init__(self, vm: VM):
        self._vm = vm

    def argv(self, op: str, *args: object) -> str:
        words = [HELPER, op] + [hex(a) if isinstance(a, int) else str(a) for a in args]
        return " ".join(shlex.quote(w) for w in words)

    @contextmanager
    def hold(self, path: str, offset: int, length: int) -> Iterator[Held]:
        """Map and read, keep the mapping; `.again()` reads through it after the test acted."""
        chan = self._vm.ssh.open_session(timeout=30)
        try:
            chan.exec_command(self.argv("hold", path, offset, length))
            out = chan.makefile("r")
            line = out.readline()
            if not line:
                raise GuestCommandError(f"cocolab-probe hold {path} did not report")
            yield Held(chan, out, ProbeResult.parse(line))
        finally:
            chan.close()

    def __call__(self, op: str, *args: object) -> ProbeResult:
        result = self._vm.run(self.argv(op, *args))
        if result.returncode != 0 or not result.stdout.strip():
            raise GuestCommandError(f"cocolab-probe {op} did not report: {result}")
        return ProbeResult.parse(result.stdout.strip().splitlines()[0])


class Held:
    """A mapping the helper keeps open in the guest while the test changes something."""

    def __init__(self, channel: Any, out: Any, first: ProbeResult):
        self._channel = channel
        self._out = out
        self.first = first

    def again(self) -> ProbeResult:
        """Load through the same mapping once more and report what happened."""
        self._channel.sendall(b"again\n")
        line = self._out.readline()
        self._channel.close()  # the helper exits after this report; see HeldGroup.release
        if not line:
            raise GuestCommandError("cocolab-probe hold ended without a second report")
        return ProbeResult.parse(line)

