"""How a started QEMU becomes a guest that answers: the boot strategies `VM.launch` takes.

    ColdBoot        the guest boots; ready when /init prints this boot's token on the console
    SavingBoot      a cold boot whose guest is paused the moment it is READY (before any SSH
                    session exists, so none is frozen into the image), migrated to a file and
                    resumed; what came of it (the stream, or why QEMU refused) is kept on it
    Restore         QEMU starts with `-incoming defer` and loads a snapshot; the PCI config
                    space it lost is written back while the guest is paused; then its clock is
                    set, its CRNG reseeded and its PCI functions checked against the saved ones

Each step runs in a VM state of its own (vm/state.py): LAUNCHING, then SAVING or RESTORING
while QEMU, not the guest, has the machine. A strategy reaches the VM through what the VM
offers its boot: the monitor (`vm.qmp`, `vm.hmp`), the console wait (`vm.await_ready`),
commands (`vm.run`), liveness (`vm.check_alive`) and the state guard (`vm.enter`).
"""

from __future__ import annotations

import secrets
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cocolab import progress
from cocolab.deadline import Deadline
from cocolab.errors import BootError, QMPCommandFailed, SnapshotUnfaithful
from cocolab.paths import private_file
from cocolab.vm.snapshot import (
    CONFIG_ADDRESS,
    PCI_DUMP,
    Snapshot,
    config_port_writes,
    parse_pci_dump,
    pci_differences,
)
from cocolab.vm.state import VMState

if TYPE_CHECKING:
    from cocolab.vm.machine import VM

RESEED_BYTES = 64
"""Host randomness a restored guest credits to its input pool (cocolab-restored)."""


class ColdBoot:
    """The guest boots from its kernel; it is ready when /init prints this boot's token."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        self.release: str | None = None
        """The kernel release the guest reported, when the boot asked it on its way."""

    def qemu_args(self) -> list[str]:
        return []

    def before_qemu(self, vm: VM) -> None:
        """Anything the VM's directory needs before QEMU starts."""

    def until_ssh(self, vm: VM, deadline: Deadline) -> None:
        """QMP is up: bring the guest to where SSH may connect."""
        vm.await_ready(self.token, deadline)
        vm.ready_seconds = deadline.elapsed()

    def after_ssh(self, vm: VM, deadline: Deadline) -> None:
        """SSH answers: anything left before the guest is handed out."""


class SavingBoot(ColdBoot):
    """A cold boot saved as it reaches READY into `path` (the caller commits it)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.refused: str | None = None
        """Why QEMU could not save this guest (a device that cannot migrate), or None."""
        self.console = b""
        """The console log as it stood when the guest was saved."""
        self.pci_dump = ""
        """PCI_DUMP of the guest as saved, for the write-back of its restores."""

    def until_ssh(self, vm: VM, deadline: Deadline) -> None:
        super().until_ssh(vm, deadline)
        vm.enter(VMState.SAVING)
        self._save(vm, deadline)
        vm.enter(VMState.LAUNCHING)

    def _save(self, vm: VM, deadline: Deadline) -> None:
        start = time.monotonic()
        with private_file(self.path):  # the guest's memory, its SSH host key in it: 0600
            pass  # `cat >` truncates it and keeps the mode
        with vm.qmp.expecting_stop():
            vm.qmp.cmd("stop")
            try:
                vm.qmp.cmd("migrate", {"uri": "exec:cat > " + shlex.quote(str(self.path))})
                status = _migration(vm, deadline)
            except QMPCommandFailed as exc:  # a migration blocker: 'nvme' is not migratable
                status = exc.desc
            vm.qmp.cmd("cont")
        if status == "completed":  # one line: it takes about a second
            progress.say(f"saved a snapshot of {vm.name} in {time.monotonic() - start:.1f}s "
                         f"({progress.mib(self.path.stat().st_size)}); later boots of it "
                         "restore it")
        else:
            self.refused = f"QEMU could not save this VM: {status}"
            self.path.unlink(missing_ok=True)
        self.console = vm.console_log.read_bytes()

    def after_ssh(self, vm: VM, deadline: Deadline) -> None:
        if self.refused is None:
            self.pci_dump = vm.run(PCI_DUMP, timeout=deadline.remaining() + 5).stdout


class Restore:
    """The guest resumes from `snapshot`; it keeps the snapshot's token, since the guest's
    memory holds that kernel command line."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.token = snapshot.token
        self.release: str | None = None
        """The kernel release the guest reported, asked in the same round trip as the rest."""

    def qemu_args(self) -> list[str]:
        return ["-incoming", "defer"]

    def before_qemu(self, vm: VM) -> None:
        """The console log begins with the saved boot's, so a bundle shows a boot."""
        snap = self.snapshot
        (vm.workdir / "restored-from.txt").write_text(f"{snap.state}\n")
        boot = snap.console.read_bytes() if snap.console else b""
        said = (f"the boot above was saved as snapshot {snap.key}; this guest was restored "
                "from it here" if boot else f"this guest was restored here from snapshot "
                f"{snap.key}, which kept no log of its boot")
        vm.console_log.write_bytes(boot + f"\n[cocolab: {said}]\n".encode())

    def until_ssh(self, vm: VM, deadline: Deadline) -> None:
        vm.enter(VMState.RESTORING)
        self._incoming(vm, deadline)

    def _incoming(self, vm: VM, deadline: Deadline) -> None:
        """Load the stream into the waiting QEMU, write back PCI config space, let it run."""
        state = self.snapshot.state
        piped = "exec:cat " + shlex.quote(str(state))
        if "," in str(state):  # file:'s options follow a comma
            vm.qmp.cmd("migrate-incoming", {"uri": piped})
        else:
            try:  # QEMU 8.2 and later read the file themselves: ~70 ms less than through cat
                vm.qmp.cmd("migrate-incoming", {"uri": f"file:{state}"})
            except QMPCommandFailed:  # QEMU 7.2: "unknown migration protocol"
                vm.qmp.cmd("migrate-incoming", {"uri": piped})
        while not deadline.expired():
            vm.check_alive()
            status = vm.qmp.cmd("query-status")["status"]
            if status not in ("inmigrate", "prelaunch"):
                break
            time.sleep(0.01)
        else:
            raise BootError(f"restoring {state} took longer than {deadline.seconds:g}s",
                            argv=vm.argv)
        if status != "paused":
            raise BootError(f"restoring {state} left the guest {status}", argv=vm.argv)
        self._write_back_pci(vm)
        vm.qmp.cmd("cont")

    def _write_back_pci(self, vm: VM) -> None:
        """Put back what driverless PCI functions lost in the restore (vm/snapshot.py), while
        the guest is paused; the configuration address latch is left as the guest had it."""
        writes = config_port_writes(parse_pci_dump(self.snapshot.pci_dump))
        if not writes:
            return
        latch = vm.hmp(f"i /w {CONFIG_ADDRESS:#x}").rpartition("=")[2].strip()
        for command in [*writes, f"o /w {CONFIG_ADDRESS:#x} {latch}"]:
            said = vm.hmp(command).strip()
            if said:
                raise BootError(f"writing back the restored guest's PCI config: QEMU refused "
                                f"{command!r}: {said}", argv=vm.argv)

    def after_ssh(self, vm: VM, deadline: Deadline) -> None:
        """A restored guest resumes the clock and CRNG of the moment it was saved: set its
        clock to the host's and reseed its CRNG from the host's randomness; then every PCI
        function must be as it was saved (see vm/snapshot.py), else SnapshotUnfaithful. The
        reseed, the kernel release and the PCI dump share one round trip: the first command
        after a restore is the slowest (TCG translates the guest's code again)."""
        now = time.time_ns()
        seed = secrets.token_hex(RESEED_BYTES)
        result = vm.run(f"uname -r && cocolab-restored {now // 10**9} {now % 10**9} {seed} && "
                        f"{PCI_DUMP}", timeout=max(deadline.remaining(), 5.0))
        if result.returncode != 0:
            raise BootError(f"the restored guest could not set its clock or reseed: "
                            f"{(result.stdout + result.stderr).strip()}", argv=vm.argv)
        self.release, _, dump = result.stdout.partition("\n")  # uname's line first
        differ = pci_differences(parse_pci_dump(self.snapshot.pci_dump), parse_pci_dump(dump))
        if differ:
            raise SnapshotUnfaithful(
                "the restored guest is not the saved one: PCI config space differs for "
                f"{', '.join(differ)}", argv=vm.argv)


def _migration(vm: VM, deadline: Deadline) -> str:
    """How an outgoing migration ended: completed, cancelled, failed (with QEMU's reason) or
    unfinished at the deadline."""
    while not deadline.expired():
        vm.check_alive()
        info = vm.qmp.cmd("query-migrate")
        status = str(info.get("status", "unknown"))
        if status == "failed":
            return f"failed: {info.get('error-desc', 'no reason given')}"
        if status in ("completed", "cancelled"):
            return status
        time.sleep(0.01)
    return f"unfinished after {deadline.seconds:g}s"


Boot = ColdBoot | Restore
"""A boot strategy (SavingBoot is a ColdBoot)."""
