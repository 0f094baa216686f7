"""Starting QEMU so that it never outlives us."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from cocolab.deadline import Deadline
from cocolab.errors import HostError


def _setpriv() -> str:
    path = shutil.which("setpriv")
    if path is None:
        raise HostError("setpriv is not on PATH (it ties QEMU's life to cocolab's): "
                        "apt-get install util-linux")
    return path


def start_qemu(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start QEMU with stdout/stderr to `log`, in its own session, tied to our life.

    `setpriv --pdeathsig KILL` execs QEMU with PR_SET_PDEATHSIG set: when the process that
    started it dies, even by SIGKILL, the kernel kills QEMU. It runs no Python between fork and
    exec (a preexec_fn may deadlock while other threads hold locks). The death signal follows
    the *thread* that called this, so start QEMU from a thread that outlives it (pytest's main
    thread does). The new session keeps a
    terminal's Ctrl-C, which pytest turns into a clean teardown, from reaching QEMU directly.
    """
    with log.open("ab") as out:
        return subprocess.Popen([_setpriv(), "--pdeathsig", "KILL", "--", *argv],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


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


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, D, T for stopped, Z, ...); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'
    return stat.rpartition(")")[2].split()[0]


def qemu_said(output: str) -> str:
    """QEMU's own account of a failure, in one line: the first line it printed, and for a KVM
    internal error also the reason line below its register dump ("emulation failure")."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if first.startswith("KVM internal error"):
        for line in lines[1:16]:
            if line.replace(" ", "").isalpha() and line[0].islower():
                return f"{first} ... {line}"
    return first


def accept_while_running(listener: socket.socket, proc: subprocess.Popen[bytes],
                         deadline: Deadline) -> socket.socket | None:
    """Accept QEMU's connection to a socket cocolab listens on; None if QEMU exited first or
    the deadline passed (the caller says which)."""
    listener.settimeout(0.1)
    while proc.poll() is None and not deadline.expired():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.setblocking(True)
        return conn
    return None


def qmp_args(socket: Path) -> list[str]:
    """QEMU's QMP monitor on a unix socket cocolab listens on (QEMU connects to it)."""
    return ["-chardev", f"socket,id=qmp0,path={socket}", "-mon", "chardev=qmp0,mode=control"]
