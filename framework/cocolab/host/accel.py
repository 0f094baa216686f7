"""Choose the accelerator by booting the lane's real kernel under it, never by the mere
presence of /dev/kvm, and never by a toy.

A /dev/kvm can exist and still be unusable. Under a nested PVM hypervisor QEMU has aborted
with `-cpu host` ("failed to set MSR 0x10a"), crawled, and (2026-12-01) run a 16-instruction
real-mode canary perfectly, then stopped every real kernel in its decompressor with
"KVM internal error. Suberror: 1 ... emulation failure". So the proof is the real thing: the
kernel the tests will boot, with a tiny initramfs whose /init (guests/proof/init.c) says so
on the serial port and powers off (cocolab.vm.proof). Reaching it under KVM within a few
seconds proves KVM. A KVM slower than KVM_SURELY_FASTER_S is raced against TCG
and the faster wins (a crawling KVM has been seen on this kind of host).

Verdicts are cached per host boot, QEMU binary and kernel image (one KVM may run one kernel
and fail another), written atomically. What the user can fix without a reboot (/dev/kvm
missing or not accessible) is checked afresh each run and never cached. A real boot that
KVM stops later anyway retires KVM in the cache (`retire_kvm`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from cocolab.constants import ACCELS
from cocolab.errors import AccelError, ConfigError, said
from cocolab.paths import cache_dir, write_atomic

LOG = logging.getLogger(__name__)

PROOF_VERSION = 1
"""Bump when the proof changes what it proves: every cached verdict is then taken again."""
KVM_SURELY_FASTER_S = 2.0
"""No TCG boot of a real kernel reaches userspace this fast (3 s and more here)."""


@dataclass(frozen=True)
class ProofBoot:
    """One boot of the real kernel to its first userspace instruction, or how it failed."""

    accel: str
    reached: bool
    seconds: float
    detail: str = ""
    """Why it did not reach userspace: QEMU's own line where it printed one."""

    def __str__(self) -> str:
        under = self.accel.upper()
        if self.reached:
            return f"the kernel reached userspace under {under} in {self.seconds:.1f}s"
        return f"booting the kernel under {under} failed after {self.seconds:.1f}s: {self.detail}"


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str


Prove = Callable[[str], ProofBoot]
"""Boots the proof under an accelerator ('kvm' or 'tcg'): cocolab.vm.proof.proof_boot."""


def kvm_access_problem(dev: Path = Path("/dev/kvm")) -> str | None:
    """What keeps this user from /dev/kvm, if anything. Fixable without a reboot: not cached."""
    if not dev.exists():
        return f"{dev} does not exist (no KVM module loaded, or not a KVM host)"
    if not os.access(dev, os.R_OK | os.W_OK):
        return f"{dev} is not readable and writable by this user (add it to group kvm)"
    return None


def decide(kvm: ProofBoot, tcg: ProofBoot | None) -> AccelChoice:
    """The verdict of `auto` from its proof boots (pure)."""
    if not kvm.reached:
        return AccelChoice("tcg", f"KVM refused: {kvm}")
    if tcg is not None and tcg.reached and tcg.seconds < kvm.seconds:
        return AccelChoice("tcg", f"KVM is slower than TCG here: {kvm}, {tcg}")
    return AccelChoice("kvm", str(kvm))


def needs_tcg_race(kvm: ProofBoot) -> bool:
    return kvm.reached and kvm.seconds > KVM_SURELY_FASTER_S


def boot_id() -> str:
    """This host boot's id: what a verdict measured on the host is cached under."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def verdict_path(qemu: str, kernel: Path) -> Path:
    """Where the verdict for this host boot, QEMU binary and kernel image lives."""
    parts = [str(PROOF_VERSION), socket.gethostname(), boot_id()]
    for path in (Path(qemu), kernel):
        st = path.stat()
        parts += [str(path), str(st.st_size), str(st.st_mtime_ns)]
    key = hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]
    return cache_dir("host") / f"accel-{key}.json"


def _load(path: Path) -> tuple[ProofBoot, ProofBoot | None] | None:
    try:
        data = json.loads(path.read_text())
        kvm = ProofBoot(**data["kvm"])
        tcg = ProofBoot(**data["tcg"]) if data.get("tcg") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no verdict yet, or an unreadable one: prove again
    return kvm, tcg


def _store(path: Path, kvm: ProofBoot, tcg: ProofBoot | None) -> None:
    write_atomic(path, json.dumps({"kvm": asdict(kvm), "tcg": asdict(tcg) if tcg else None},
                                  indent=1))


def choose_accel(qemu: str, requested: str, kernel: Path, prove: Prove, *,
                 source: str = "--accel", dev: Path = Path("/dev/kvm"),
                 refresh: bool = False) -> AccelChoice:
    """Resolve auto|kvm|tcg to an accelerator that boots `kernel` here, with the reason.

    `prove(accel)` boots the proof; its verdict is cached (see the module docstring) unless
    `refresh`. `--accel kvm` on a host where KVM cannot boot the kernel is an AccelError.
    """
    if requested not in ACCELS:
        raise ConfigError(f"{said(source, requested)}: no such accelerator; choose one of "
                          f"{', '.join(ACCELS)}")
    if requested == "tcg":
        return AccelChoice("tcg", said(source, "tcg"))
    problem = kvm_access_problem(dev)
    if problem is None:
        path = verdict_path(qemu, kernel)
        with FileLock(str(path) + ".lock"):
            cached = None if refresh else _load(path)
            if cached is None:
                kvm = prove("kvm")
                tcg = prove("tcg") if needs_tcg_race(kvm) else None
                _store(path, kvm, tcg)
                note = ""
            else:
                kvm, tcg = cached
                note = "; cached for this host boot (cocolab doctor --refresh proves again)"
        if requested == "kvm":
            if kvm.reached:
                return AccelChoice("kvm", f"{said(source, 'kvm')}: {kvm}{note}")
            problem = f"KVM cannot boot {kernel.name} on this host: {kvm.detail}{note}"
        else:
            choice = decide(kvm, tcg)
            return AccelChoice(choice.accel, choice.reason + note)
    if requested == "kvm":
        raise AccelError(f"{said(source, 'kvm')}: {problem}. Use --accel tcg (or auto) on "
                         "this host.")
    return AccelChoice("tcg", f"KVM unusable: {problem}")


def retire_kvm(qemu: str, kernel: Path, why: str) -> AccelChoice:
    """A real boot under KVM failed after the proof passed: record it, so this host boot
    never picks KVM for this kernel again, and say what to use instead."""
    path = verdict_path(qemu, kernel)
    failed = ProofBoot("kvm", False, 0.0, f"a real boot under KVM failed: {why}")
    with FileLock(str(path) + ".lock"):
        _store(path, failed, None)
    return AccelChoice("tcg", f"KVM retired during this run: {why}")
