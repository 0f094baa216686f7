"""Booted VMs shared by the tests that ask for the same one.

The plugin counts, at collection, how many tests want each VM; the pool boots a VM on first
use and shuts it down after its last test, so at most the VMs still needed are alive. A VM
that failed to boot is remembered: the first test that needed it gets the error, later ones
error at once with a line naming it, instead of each waiting out a boot timeout.

Under `--accel auto`, a boot that KVM stops (an internal error its proof boot did not show)
retires KVM for the run and boots the same VM again under TCG.

Boot-ahead: in a serial run the pool knows, from the collection, the order in which the tests
will want their VMs. From the VM the run is at, the next VMs it will want boot (cold, or
restoring) on boot-ahead threads while the current VM's tests run: `boot_ahead` of them at a
time (the cores; one fewer, but at least one, while a test waits for a boot of the run's own),
and at most `hold` booted ahead at once, booting or waiting for their tests (the memory). A
boot that ends starts the next one, so the spare cores stay busy however long the current
tests take. A VM booted ahead is taken by the first test that wants it (waiting for the boot
if it is still under way); a boot that fails fails that test, as if it had booted the VM
itself; one nobody took (a -x stop) is shut down at the end. The boot-ahead threads live as
long as the pool, because QEMU's parent-death signal follows the thread that started it
(host/process.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cocolab.errors import GuestStopped, HostError, SnapshotUnfaithful, VMError
from cocolab.guest import Guest
from cocolab.guest.gcov import save_gcda
from cocolab.pytest_plugin.markers import VMRequest
from cocolab.rig import Rig
from cocolab.vm.boot import Boot, Restore, SavingBoot
from cocolab.vm.snapshot import SnapshotStore, snapshot_key

LOG = logging.getLogger(__name__)


HOLD_MAX = 4
"""VMs booted ahead at once, whatever the memory: a run's VMs are few, and boots too far
ahead are wasted by a -x stop."""


def spare_guests(memory_mib: int, meminfo: Path = Path("/proc/meminfo")) -> int:
    """How many guests of `memory_mib` fit beside the one running now, each counted twice
    (its RAM, and as much again for QEMU and the page cache), at most HOLD_MAX."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines())
        available_mib = int(fields["MemAvailable"].split()[0]) // 1024
    except (OSError, KeyError, ValueError):
        return 0
    return max(0, min(HOLD_MAX, available_mib // (2 * memory_mib) - 1))


def default_boot_ahead(memory_mib: int, meminfo: Path = Path("/proc/meminfo")) -> int:
    """VMs booting ahead at a time: one per CPU, as many as the memory holds beside the
    current guest, none on one CPU. One per CPU, not one fewer: a guest whose tests run idles
    between their commands, and the boots are what keeps the cores busy (tests/devmem/ cold
    on 2 CPUs: 0.56 to 0.80 of a serial run with 2 ahead, 0.70 to 0.82 with 1)."""
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        return 0
    return min(cpus, spare_guests(memory_mib, meminfo))


def _shut_down_unused(future: Future[Guest]) -> None:
    """A VM booted ahead that no test took: shut it down, once its boot is over."""
    try:
        future.result().shutdown()
    except Exception as exc:
        LOG.info("a VM booted ahead and never used failed: %s", exc)


@dataclass
class BootFailure:
    nodeid: str
    error: VMError
    workdir: Path
    bundle: Path | None = None
    """The failure bundle written for the first test that needed this VM."""


class VMPool:
    def __init__(self, rig: Rig, workdir: Path, boot_ahead: int = 0, hold: int | None = None):
        self.rig = rig
        self.workdir = workdir
        self.boot_ahead = boot_ahead
        """How many VMs may boot ahead of the tests that want them at a time (0: none)."""
        self.hold = boot_ahead if hold is None else max(hold, boot_ahead)
        """How many VMs booted ahead may be alive at once, booting or waiting for a test."""
        self.order: list[tuple[VMRequest, str]] = []
        """Each shared VM the run wants, with the first test that wants it, in run order."""
        self._position = -1
        """Where the run is in `order`: the VM taken last."""
        self._ahead: dict[str, Future[Guest]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.RLock()
        """Guards `_ahead`, `_closed` and the boot counter: boots end on the boot-ahead
        threads, and each end looks further ahead. Reentrant: a future that is already
        done runs its callback at once, in the thread adding it."""
        self._closed = False
        self._booting_here = False
        """A test waits for a boot on the run's own thread: one boot ahead fewer meanwhile
        (a boot ahead must not slow the boot a test waits for)."""
        self.booted_ahead = 0
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
        self.gcov_dir: Path | None = None
        """--gcov-dir: where each guest of a GCOV kernel leaves its coverage counters, one
        directory a VM, read as it shuts down (guest/gcov.py)."""

    @cached_property
    def snapshots(self) -> SnapshotStore | None:
        """The snapshot store, or None when snapshots are off. Looked up on first use: a run
        that boots nothing makes no cache directory."""
        return SnapshotStore() if self.rig.snapshots_off is None else None

    def _new_vm(self, request: VMRequest) -> Guest:
        with self._lock:
            self._boots += 1
            number = self._boots
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        config, view = self.rig.plan(request.cmdline, request.qemu_args, request.modules,
                                     request.machine, request.topology)
        name = f"{worker}-{number:03d}-{request.key()}"
        vm = self.rig.guest(config, self.workdir / name, name, view)
        if self.gcov_dir is not None and self.rig.kernel.kconfig.builtin("GCOV_KERNEL"):
            dest = self.gcov_dir / name
            vm.before_shutdown(lambda: LOG.info("%s: %d coverage files saved", name,
                                                save_gcda(vm, dest)))
        return vm

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

    def plan(self, wants: Iterable[tuple[VMRequest, str]]) -> None:
        """The shared VMs the run will want, as (request, first test's nodeid) in run order."""
        seen: set[str] = set()
        for request, nodeid in wants:
            if request.key() not in seen:
                seen.add(request.key())
                self.order.append((request, nodeid))

    def _look_ahead(self) -> None:
        """Start booting the VMs wanted after the current one, in run order, while fewer than
        `boot_ahead` boot and fewer than `hold` are booted ahead."""
        with self._lock:
            if not self.boot_ahead or self._closed:
                return
            booting = sum(1 for f in self._ahead.values() if not f.done())
            limit = max(1, self.boot_ahead - self._booting_here)
            for request, nodeid in self.order[self._position + 1:]:
                if booting >= limit or len(self._ahead) >= self.hold:
                    return
                k = request.key()
                if k in self.vms or k in self._ahead or k in self.failures \
                        or self.wanted[k] <= 0:
                    continue
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.boot_ahead,
                                                        thread_name_prefix="cocolab-boot-ahead")
                LOG.info("booting ahead: %s, for %s", request.describe(), nodeid)
                future = self._executor.submit(self.boot, request, nodeid)
                self._ahead[k] = future
                booting += 1
                future.add_done_callback(lambda _: self._look_ahead())

    def _take_ahead(self, key: str) -> Future[Guest] | None:
        """The run is at `key`'s VM now: later looks ahead start after it (so a boot that
        ends while this one's is awaited never boots it again); its boot ahead, if any."""
        keys = [r.key() for r, _ in self.order]
        with self._lock:
            if key in keys:
                self._position = max(self._position, keys.index(key))
            return self._ahead.pop(key, None)

    def acquire(self, request: VMRequest, nodeid: str) -> Guest:
        key = request.key()
        ahead = self._take_ahead(key)
        if ahead is not None:
            self._look_ahead()  # its place is free
            booted = ahead.result()  # a failed boot raises here, recorded as if booted now
            self.booted_ahead += 1
            self.vms[key] = booted
            return booted
        shared = self.vms.get(key)
        if shared is not None:
            try:
                shared.check_alive()
                if shared.retired is None:
                    return shared
                LOG.info("shared VM %s was retired (%s); booting a new one", shared.name,
                         shared.retired)
            except VMError as exc:
                # An earlier test on this VM killed the guest; that test reported it.
                LOG.info("shared VM %s is dead (%s); booting a new one", shared.name, exc)
            shared.shutdown()
            del self.vms[key]
        with self._lock:
            self._booting_here = True
        self._look_ahead()  # before this boot: they overlap
        try:
            booted = self.boot(request, nodeid)
        finally:
            with self._lock:
                self._booting_here = False
            self._look_ahead()
        self.vms[key] = booted
        return booted

    def release(self, request: VMRequest) -> None:
        key = request.key()
        self.wanted[key] -= 1
        if self.wanted[key] > 0:
            return
        if key in self.vms:
            self.vms.pop(key).shutdown()
        with self._lock:
            ahead = self._ahead.pop(key, None)
        if ahead is not None:  # booted ahead for tests that all skipped before taking it
            ahead.add_done_callback(_shut_down_unused)
            self._look_ahead()  # its place is free

    def close(self) -> None:
        with self._lock:  # no boot starts after this
            self._closed = True
            unused = list(self._ahead.values())
            self._ahead.clear()
        for future in unused:  # booted ahead, never taken (a -x stop)
            try:
                future.result().shutdown()
            except Exception as exc:
                LOG.info("a VM booted ahead and never used failed: %s", exc)
        for vm in self.vms.values():
            vm.shutdown()
        self.vms.clear()
        if self._executor is not None:  # last: its threads are the parents of those QEMUs
            self._executor.shutdown(wait=True)
            self._executor = None
