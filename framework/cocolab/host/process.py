"""Starting QEMU so that it never outlives us."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the process that started QEMU dies, even by
    # SIGKILL, the kernel sends QEMU SIGKILL. A new session keeps a terminal's Ctrl-C (which
    # pytest handles and turns into a clean teardown) from reaching QEMU directly.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def start_qemu(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start QEMU with stdout/stderr to `log`, in its own session, tied to our life."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)


def kill_qemu(proc: subprocess.Popen[bytes], grace: float = 3.0) -> int | None:
    """SIGTERM, then SIGKILL after `grace` seconds; by PID only. Returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
