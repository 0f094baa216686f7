"""Booted VMs shared by the tests that ask for the same one.

The plugin counts, at collection, how many tests want each VM; the pool boots a VM on first
use and shuts it down after its last test, so at most the VMs still needed are alive. A VM
that failed to boot is remembered: the first test that needed it gets the error, later ones
error at once with a line naming it, instead of each waiting out a boot timeout.

Under `--accel auto`, a boot that KVM stops (an internal error its proof boot did not show)
retires KVM for the run and boots the same VM again under TCG.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cocolab.errors import GuestStopped, HostError, SnapshotUnfaithful, VMError
from cocolab.guest import Guest
from cocolab.pytest_plugin.markers import VMRequest
from cocolab.rig import Rig
from cocolab.vm.boot import Boot, Restore, SavingBoot
from cocolab.vm.snapshot import SnapshotStore, snapshot_key

LOG = logging.getLogger(__name__)


@dataclass
class BootFailure:
    nodeid: str
    error: VMError
    workdir: Path
    bundle: Path | None = None
    """The failure bundle written for the first test that needed this VM."""


class VMPool:
    def __init__(self, rig: Rig, workdir: Path):
        self.rig = rig
        self.workdir = workdir
        self.wanted: Counter[str] = Counter()
        self.vms: dict[str, Guest] = {}
        self.failures: dict[str, BootFailure] = {}
        self._boots = 0
        self.retired: str | None = None
        """Set when this run retired KVM after a boot it could not run; said in the summary."""
        self.cold_boots = 0
        self.restores = 0
        self.snapshot_problems: list[str] = []
        """Snapshots that did not restore (dropped; their VMs booted cold)."""

    @cached_property
    def snapshots(self) -> SnapshotStore | None:
        """The snapshot store, or None when snapshots are off. Looked up on first use: a run
        that boots nothing makes no cache directory."""
        return SnapshotStore() if self.rig.snapshots_off is None else None

    def _new_vm(self, request: VMRequest) -> Guest:
        self._boots += 1
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        config, view = self.rig.plan(request.cmdline, request.qemu_args, request.modules,
                                     request.machine, request.topology)
        name = f"{worker}-{self._boots:03d}-{request.key()}"
        return self.rig.guest(config, self.workdir / name, name, view)

    def boot(self, request: VMRequest, nodeid: str) -> Guest:
        """A new VM for `request`, launched and, if it declares a topology, verified.

        A boot or verification failure is remembered and re-raised.
        """
        try:
            try:
                return self._boot(request)
            except GuestStopped as exc:
                if not (exc.kvm_failed and self.rig.accel_requested == "auto"):
                    raise
                choice = self.rig.retire_kvm(exc.qemu_said or exc.message)
                self.retired = f"{choice.reason} ({nodeid} booted its VM again under TCG)"
                LOG.warning("%s", self.retired)
                return self._boot(request)
        except VMError as exc:
            workdir = exc.workdir or self.workdir
            self.failures[request.key()] = BootFailure(nodeid, exc, workdir)
            raise

    def _boot(self, request: VMRequest) -> Guest:
        """A cold boot, or a restore of the snapshot of this VM's first boot (which the cold
        boot takes, when there is none yet). A snapshot that will not restore is dropped and
        the VM boots cold: never a test's failure."""
        vm = self._new_vm(request)
        # Never snapshotted: a confidential guest (encrypted memory), and a VM with vhost-user
        # back-ends (their rings' state lives in the back-end, which a QEMU stream does not
        # carry; QEMU refuses to save such a VM anyway, see docs/DESIGN.md)
        if self.snapshots is None or vm.config.cc or vm.config.backends:
            self.cold_boots += 1
            return self._start(vm, request.verify)
        store = self.snapshots
        key = snapshot_key(vm.config, self.rig.qemu_info.version)
        with store.lock(key):
            try:
                found = None if store.refused(key) else store.find(key)
            except HostError as exc:  # a snapshot others could read
                self.snapshot_problems.append(str(exc))
                found = None
            if found is not None:
                try:
                    vm = self._start(vm, request.verify, Restore(found))
                    self.restores += 1
                    vm.snapshot = found
                    return vm
                except SnapshotUnfaithful as exc:
                    store.refuse(key, exc.message, request.describe())
                    self.snapshot_problems.append(f"{request.describe()}: {exc.message}")
                except VMError as exc:
                    LOG.warning("snapshot %s did not restore (%s); booting cold", key, exc)
                    self.snapshot_problems.append(f"{found.state}: {exc.message}")
                    store.discard(key)
                vm = self._new_vm(request)
            if store.refused(key):
                self.cold_boots += 1
                return self._start(vm, request.verify)
            saving = SavingBoot(store.pending(key))
            try:
                vm = self._start(vm, request.verify, saving)
                self.cold_boots += 1
                if saving.refused:
                    store.refuse(key, saving.refused, request.describe())
                else:
                    vm.snapshot = store.commit(key, vm.token, vm.name, saving.pci_dump,
                                               saving.console)
            finally:
                saving.path.unlink(missing_ok=True)
            return vm

    def _start(self, vm: Guest, verify: bool, boot: Boot | None = None) -> Guest:
        """Launch `vm` and, unless its tests check it themselves, verify its topology."""
        try:
            vm.launch(self.rig.options.boot_timeout, boot)
            if vm.expected is not None and verify:
                vm.topology.verify()
        except VMError as exc:
            exc.workdir = vm.workdir
            vm.shutdown()
            raise
        return vm

    def acquire(self, request: VMRequest, nodeid: str) -> Guest:
        key = request.key()
        vm = self.vms.get(key)
        if vm is not None:
            try:
                vm.check_alive()
                if vm.retired is None:
                    return vm
                LOG.info("shared VM %s was retired (%s); booting a new one", vm.name,
                         vm.retired)
            except VMError as exc:
                # An earlier test on this VM killed the guest; that test reported it.
                LOG.info("shared VM %s is dead (%s); booting a new one", vm.name, exc)
            vm.shutdown()
            del self.vms[key]
        vm = self.boot(request, nodeid)
        self.vms[key] = vm
        return vm

    def release(self, request: VMRequest) -> None:
        key = request.key()
        self.wanted[key] -= 1
        if self.wanted[key] <= 0 and key in self.vms:
            self.vms.pop(key).shutdown()

    def close(self) -> None:
        for vm in self.vms.values():
            vm.shutdown()
        self.vms.clear()
