"""The accelerator's proof boot: the real kernel, a one-program initramfs, a few seconds.

See cocolab.host.accel for why and how the verdict is used. The boot ends at the first sign
either way: the /init's line on the console, QEMU exiting, QEMU stopping the guest (seen on
QMP at once; a KVM internal error leaves QEMU alive with the guest paused), or the deadline.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cocolab.deadline import Deadline
from cocolab.errors import MonitorError
from cocolab.host.accel import ProofBoot
from cocolab.host.process import accept_while_running, kill_qemu, qemu_said, start_qemu
from cocolab.monitor import Monitor
from cocolab.qemu.argv import VMConfig, proof_argv

PROOF_TOKEN = b"cocolab-proof: userspace reached"
"""What guests/proof/init.c prints; no kernel message contains it."""
KVM_DEADLINE_S = 8.0
"""A working KVM boots a distribution kernel to userspace in about 1 s."""
TCG_DEADLINE_S = 60.0


def _watch(accel: str, proc: subprocess.Popen[bytes], monitor: Monitor | None, console: Path,
           log: Path, deadline: Deadline) -> ProofBoot:
    """Wait for the proof's token on the console, QEMU's exit, a stop or the deadline."""
    def failed(why: str) -> ProofBoot:
        said = qemu_said(log.read_text(errors="replace"))
        return ProofBoot(accel, False, deadline.elapsed(), f"{why}: {said}" if said else why)

    while True:
        if console.exists() and PROOF_TOKEN in console.read_bytes():
            return ProofBoot(accel, True, deadline.elapsed())
        rc = proc.poll()
        if rc is not None:
            if console.exists() and PROOF_TOKEN in console.read_bytes():
                continue
            return failed(f"QEMU exited with status {rc}")
        if monitor is not None and monitor.stopped is not None:
            return failed(f"QEMU stopped the guest ({monitor.stopped.status})")
        if deadline.expired():
            return failed(f"no userspace within {deadline.seconds:g}s ({_last_line(console)})")
        if monitor is not None:
            monitor.changed.wait(0.05)
        else:
            time.sleep(0.05)


def proof_boot(qemu: str, kernel: Path, initrd: Path, accel: str,
               deadline_s: float | None = None, like: VMConfig | None = None) -> ProofBoot:
    """Boot `kernel` with the proof initramfs under `accel`; stop at the first sign of failure:
    QEMU exiting, QEMU stopping the guest (QMP), or the deadline. `like`: take machine, RAM
    and CPUs from that VM (bench/run.py's floor), not the proof's small defaults."""
    deadline = Deadline(deadline_s or (KVM_DEADLINE_S if accel == "kvm" else TCG_DEADLINE_S))
    config = VMConfig(qemu=qemu, kernel=kernel, initrd=initrd, accel=accel, memory_mib=256,
                      cpus=1, modules=())
    if like is not None:
        config = dataclasses.replace(config, machine=like.machine,
                                     machine_options=like.machine_options,
                                     memory_mib=like.memory_mib, cpus=like.cpus)
    return _boot(config, deadline)[0]


def console_boot(qemu: str, kernel: Path, initrd: Path, accel: str, cmdline: tuple[str, ...],
                 deadline_s: float) -> tuple[ProofBoot, str]:
    """What `kernel` prints on its console from power-on to the proof's /init, booted with
    `cmdline`: a kernel's own report at boot (KUnit's list of its tests), read without a
    guest image or SSH. The boot's verdict too: a console cut short says why."""
    config = VMConfig(qemu=qemu, kernel=kernel, initrd=initrd, accel=accel, memory_mib=512,
                      cpus=1, modules=(), cmdline=cmdline)
    return _boot(config, Deadline(deadline_s))


def _boot(config: VMConfig, deadline: Deadline) -> tuple[ProofBoot, str]:
    accel = config.accel
    with tempfile.TemporaryDirectory(prefix="cocolab-proof-", dir="/tmp") as tmp:
        console, log, qmp_path = Path(tmp, "console.log"), Path(tmp, "qemu.log"), Path(tmp, "qmp")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(qmp_path))
        listener.listen(1)
        proc = start_qemu(proof_argv(config, qmp_path, console), log)
        monitor: Monitor | None = None
        try:
            conn = accept_while_running(listener, proc, deadline)
            if conn is not None:
                monitor = Monitor(conn, f"proof-{accel}")
                monitor.start(timeout=max(deadline.remaining(), 0.5))
            verdict = _watch(accel, proc, monitor, console, log, deadline)
        except MonitorError as exc:
            # QEMU that dies while starting breaks the handshake first: say why it died
            rc = _exit_status(proc, 1.0)
            why = f"QEMU exited with status {rc}" if rc is not None else f"QMP: {exc}"
            said = qemu_said(log.read_text(errors="replace"))
            verdict = ProofBoot(accel, False, deadline.elapsed(),
                                f"{why}: {said}" if said else why)
        finally:
            if monitor is not None:
                monitor.close()
            kill_qemu(proc, grace=1.0)
            listener.close()
        return verdict, console.read_text(errors="replace") if console.exists() else ""


def _last_line(console: Path) -> str:
    lines = console.read_text(errors="replace").split("\n") if console.exists() else []
    lines = [line.strip() for line in lines if line.strip()]
    return f"the kernel's last console line: {lines[-1][:160]}" if lines else \
        "no console output at all"


def _exit_status(proc: subprocess.Popen[bytes], wait: float) -> int | None:
    try:
        return proc.wait(wait)
    except subprocess.TimeoutExpired:
        return None
