"""Running the guest helpers (guests/helpers/*.c): one JSON report per call, or a session that
keeps the helper alive while the test changes something, then asks it for its last report."""

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


class HelperSession:
    """A helper that reported once and now waits for a line on stdin before its last report."""

    def __init__(self, channel: Any, out: Any, first: ProbeResult, argv: str):
        self._channel = channel
        self._out = out
        self._argv = argv
        self.first = first
        self.last: ProbeResult | None = None

    def finish(self, line: str) -> ProbeResult:
        """Send `line`, read the helper's last report (once; later calls return it again)."""
        if self.last is None:
            self._channel.sendall(line.encode() + b"\n")
            report = self._out.readline()
            # The helper exits after this report. Close at once: dropbear refuses new channels
            # while a finished one is left open.
            self._channel.close()
            if not report:
                raise GuestCommandError(f"{self._argv} ended without its last report")
            self.last = ProbeResult.parse(report)
        return self.last


@contextmanager
def helper_session(vm: VM, argv: str) -> Iterator[HelperSession]:
    chan = vm.ssh.open_session(timeout=30)
    try:
        chan.exec_command(argv)
        out = chan.makefile("r")
        line = out.readline()
        if not line:
            raise GuestCommandError(f"{argv} did not report")
        yield HelperSession(chan, out, ProbeResult.parse(line), argv)
    finally:
        chan.close()
