"""The serial console: drained into a log without pause, driven with pexpect.

QEMU's serial chardev connects to a unix socket cocolab listens on. One pexpect SocketSpawn owns
the socket; its logfile_read copies every byte to console.log. A drain thread keeps reading
whenever no caller is expecting (a full socket buffer would stall the guest's UART and with it
the guest) and watches for crash lines. Callers take the console in turn: `expect()` and `run()`
hold it for their duration.
"""

from __future__ import annotations

import logging
import re
import secrets
import shlex
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pexpect
from pexpect.socket_pexpect import SocketSpawn

from cocolab.deadline import Deadline
from cocolab.errors import GuestCommandError, GuestCrashed, RigBug

LOG = logging.getLogger(__name__)

CRASH_PATTERNS: tuple[bytes, ...] = (
    rb"Kernel panic - not syncing",
    # not the reports a kernel goes on after (KASAN and KFENCE without panic_on_warn, a soft
    # lockup): those are the kernel-warnings check's, which fails the test they came in. The
    # whole line, so that "BUG: K" read before "ASAN:" arrives is no crash.
    rb"\bBUG: (?!KASAN: |KFENCE: |soft lockup)[^\r\n]*\r?\n",
    rb"\bOops: [^\r\n]*",
    rb"general protection fault[^\r\n]*",
    rb"kernel BUG at [^\r\n]*",
)
"""Lines after which the guest kernel cannot be trusted; any of them ends the VM's usefulness."""

class _LoggedSocketSpawn(SocketSpawn):  # type: ignore[misc]
    """SocketSpawn whose reads reach logfile_read (pexpect 4.9's SocketSpawn skips it)."""

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> bytes:
        data: bytes = super().read_nonblocking(size, timeout)
        self._log(data, "read")
        return data


LIVENESS_S = 0.25
"""How often a wait on the console asks whether the VM still runs."""

CRASH_REPORT_S = 3.0
"""How long to keep reading after a crash line for the rest of the kernel's report."""

_PRINTK = re.compile(r"^\s*\[\s*\d+\.\d+\] .*$\n?", re.M)
_KEEP_BUFFER = 64 * 1024


@dataclass(frozen=True)
class ConsoleResult:
    command: str
    returncode: int
    output: str
    """stdout and stderr as the terminal showed them, CRLF folded, kernel printk lines removed."""


class Console:
    def __init__(self, sock: socket.socket, log_path: Path,
                 alive: Callable[[], None] = lambda: None):
        """`alive()` raises when the VM behind the console stopped (see VM.check_alive)."""
        self._sock = sock
        self._alive = alive
        self.log_path = log_path
        self._log: BinaryIO = log_path.open("ab", buffering=0)
        self._spawn = _LoggedSocketSpawn(sock, timeout=1)
        self._spawn.logfile_read = self._log
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._holder: int | None = None
        self._stop = threading.Event()
        self.crash_line: str | None = None
        self.last_match = ""
        """What expect() matched last (its first group, if the pattern has one)."""
        self.eof = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="cocolab-console", daemon=True)
        self._thread.start()

    # --- draining -------------------------------------------------------------------------

    def _drain(self) -> None:
        while not self._stop.is_set() and not self.eof.is_set():
            if self._wanted.is_set():
                self._stop.wait(0.01)  # a caller is taking the console: let it
                continue
            with self._lock:
                try:
                    index = self._spawn.expect(list(CRASH_PATTERNS), timeout=0.1)
                    self._note_crash(index)
                except pexpect.TIMEOUT:
                    if len(self._spawn.buffer) > _KEEP_BUFFER:
                        self._spawn.buffer = self._spawn.buffer[-_KEEP_BUFFER:]
                except (pexpect.EOF, OSError):
                    self.eof.set()

    def _note_crash(self, index: int) -> None:
        match = self._spawn.after if isinstance(self._spawn.after, bytes) else b""
        line = match.decode(errors="replace").strip()
        if self.crash_line is None:
            self.crash_line = line or CRASH_PATTERNS[index].decode()
            LOG.warning("guest crash on console: %s", self.crash_line)
            self._read_rest_of_report()

    def _read_rest_of_report(self) -> None:
        """Let the kernel finish printing its report (registers, call trace) into the log, so
        the failure bundle has it all; bounded, since a wedged guest may print nothing more."""
        try:
            self._spawn.expect([rb"---\[ end (trace|Kernel panic)[^\r\n]*"], timeout=CRASH_REPORT_S)
        except (pexpect.TIMEOUT, pexpect.EOF, OSError):
            pass

    @contextmanager
    def _held(self) -> Iterator[_LoggedSocketSpawn]:
        self._wanted.set()
        try:
            with self._lock:
                self._holder = threading.get_ident()
                try:
                    yield self._spawn
                finally:
                    self._holder = None
        finally:
            self._wanted.clear()

    def settle(self, timeout: float) -> None:
        """Read the console to its end (QEMU exited), so a crash line among the last bytes is
        seen. From inside an expect() (a liveness check) the caller reads; else the drain."""
        if self._holder != threading.get_ident():
            self.eof.wait(timeout)
            return
        deadline = Deadline(timeout)
        try:
            while not deadline.expired():
                index = self._spawn.expect([pexpect.EOF, *CRASH_PATTERNS],
                                           timeout=deadline.remaining())
                if index == 0:
                    self.eof.set()
                    return
                self._note_crash(index - 1)
        except (pexpect.TIMEOUT, OSError):
            pass

    # --- driving --------------------------------------------------------------------------

    def expect(self, patterns: Sequence[bytes], deadline: Deadline) -> int:
        """Wait for one of `patterns`; return its index.

        A crash line raises GuestCrashed; EOF (QEMU gone) and the deadline raise
        pexpect.EOF / pexpect.TIMEOUT for the caller to turn into its own error.
        """
        with self._held() as spawn:
            self._raise_if_crashed()
            index = self._expect(spawn, patterns, deadline)
            match = spawn.match
            groups = match.groups() if match is not None and hasattr(match, "groups") else ()
            self.last_match = (groups[0].decode(errors="replace") if groups
                               else spawn.after.decode(errors="replace")
                               if isinstance(spawn.after, bytes) else "")
            return index

    def _expect(self, spawn: _LoggedSocketSpawn, patterns: Sequence[bytes],
                deadline: Deadline) -> int:
        """spawn.expect in slices of LIVENESS_S, asking `alive()` between them (a stopped VM
        is silent, and no reason to wait out the deadline); crash lines raise GuestCrashed."""
        all_patterns = [*patterns, *CRASH_PATTERNS]
        while True:
            try:
                index: int = spawn.expect(
                    all_patterns, timeout=max(min(deadline.remaining(), LIVENESS_S), 0.01))
                break
            except pexpect.TIMEOUT:
                if deadline.expired():
                    raise
                self._alive()
        if index >= len(patterns):
            self._note_crash(index - len(patterns))
            raise GuestCrashed(f"guest crashed: {self.crash_line}",
                               crash_line=self.crash_line or "", console_tail=self.tail())
        return index

    def run(self, command: str, timeout: float = 30.0) -> ConsoleResult:
        """Run `command` in the console shell; its exit status is read from a framed marker.

        The markers carry a fresh nonce and are assembled by printf in the guest, so the
        terminal's echo of the command line never matches them.
        """
        nonce = secrets.token_hex(6)
        begin, end = f"@@CLB-{nonce}", f"@@CLE-{nonce}"
        line = (f"printf '\\n%s-%s\\n' @@CLB {nonce}; sh -c {shlex.quote(command)}; "
                f"printf '\\n%s-%s %d\\n' @@CLE {nonce} $?\n")
        deadline = Deadline(timeout)
        with self._held() as spawn:
            self._raise_if_crashed()
            spawn.buffer = b""
            spawn.send(line.encode())
            try:
                self._expect(spawn, [begin.encode() + rb"\r?\n"], deadline)
                self._expect(spawn, [end.encode() + rb" (\d+)\r?\n"], deadline)
            except pexpect.TIMEOUT as exc:
                raise GuestCommandError(f"console command timed out after {timeout}s: {command}",
                                        console_tail=self.tail()) from exc
            except pexpect.EOF as exc:
                raise GuestCommandError(f"console closed while running: {command}",
                                        console_tail=self.tail()) from exc
            match = spawn.match
            if match is None or isinstance(match, type):
                raise RigBug(f"cocolab bug: the console marker matched nothing: {command}")
            rc = int(match.group(1))
            raw = spawn.before.decode(errors="replace") if isinstance(spawn.before, bytes) else ""
        output = _PRINTK.sub("", raw.replace("\r\n", "\n"))
        return ConsoleResult(command, rc, output.removesuffix("\n"))

    def _raise_if_crashed(self) -> None:
        # the drain thread may have seen the crash before this caller took the console
        if self.crash_line is not None:
            raise GuestCrashed(f"guest crashed: {self.crash_line}", crash_line=self.crash_line,
                               console_tail=self.tail())

    # --- reading the log ------------------------------------------------------------------

    def tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the console log."""
        try:
            data = self.log_path.read_bytes()[-16384:]
        except OSError:
            return ""
        text = data.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self._sock.close()
        finally:
            self._log.close()
