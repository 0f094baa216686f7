"""The VM core and its boot strategies against the fake QEMU (fake_qemu.py's `boot`): the
states each passes through, what a save and a restore leave behind, and sidecars started
before QEMU and stopped after it. No kernel boots; the guest is /bin/sh behind an SSH server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_sshd import ed25519, pinned

from cocolab.errors import BootError, RigBug, SnapshotUnfaithful, VMStateError
from cocolab.kernel import Kernel
from cocolab.qemu import VMConfig
from cocolab.vm import VM, VMState
from cocolab.vm.boot import Restore, SavingBoot
from cocolab.vm.sidecar import Sidecar
from cocolab.vm.snapshot import Snapshot
from cocolab.vm.ssh import GuestKeys

RELEASE = "6.12.0-fake"
EDU_SAVED = bytes.fromhex(  # edu's first 64 bytes as cocolab-pci-dump printed them
    "3412e811030110001000ff00000000000000a0fe000000000000000000000000"
    "000000000000000000000000f41a00110000000040000000000000000b010000")
FAKE_QEMU = Path(__file__).with_name("fake_qemu.py")
SAVED_DUMP = f"0000:00:01.0 bound {EDU_SAVED.hex()}\n0000:00:02.0 free {EDU_SAVED.hex()}\n"

C, L, SA, R, RUN, OFF, F = (VMState.CREATED, VMState.LAUNCHING, VMState.SAVING,
                            VMState.RESTORING, VMState.RUNNING, VMState.SHUT_DOWN,
                            VMState.FAILED)


class World:
    """A fake QEMU with a guest: its files, its keys, and VMs made against it."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch):
        self.tmp = tmp
        qemu = tmp / "qemu"
        qemu.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_QEMU} \"$@\"\n")
        qemu.chmod(0o755)
        bin_ = tmp / "guest-bin"
        bin_.mkdir()
        self.dump = tmp / "pci-dump"
        self.dump.write_text(SAVED_DUMP)
        for name, body in (("uname", f"echo {RELEASE}"), ("cocolab-restored", "exit 0"),
                           ("cocolab-pci-dump", f"cat {self.dump}")):
            (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
            (bin_ / name).chmod(0o755)
        host = ed25519(tmp / "host_key")
        ed25519(tmp / "client_key")
        self.keys = GuestKeys(tmp / "client_key", pinned(host))
        for var, value in (("FAKE_QEMU_OUTCOME", "boot"), ("FAKE_QEMU_HOST_KEY",
                           str(tmp / "host_key")), ("FAKE_QEMU_GUEST_BIN", str(bin_))):
            monkeypatch.setenv(var, value)
        for name in ("bzImage", "initrd"):
            (tmp / name).write_bytes(b"")
        self.config = VMConfig(qemu=str(qemu), kernel=tmp / "bzImage", initrd=tmp / "initrd",
                               accel="tcg")
        self.kernel = Kernel("fake", tmp / "bzImage", tmp / "config", RELEASE, None)
        self.vms: list[VM] = []

    def vm(self, name: str, sidecars: tuple[Sidecar, ...] = ()) -> VM:
        vm = VM(self.config, self.tmp / name, self.kernel, self.keys, name=name,
                sidecars=sidecars)
        self.vms.append(vm)
        return vm


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(tmp_path, monkeypatch)
    yield w
    for vm in w.vms:
        vm.shutdown()


def test_a_cold_boot_launches_then_runs_then_shuts_down(world: World) -> None:
    vm = world.vm("cold")
    vm.launch(timeout=30)
    assert vm.states == [C, L, RUN]
    assert vm.run("echo hello").stdout == "hello\n"
    assert f"COCOLAB READY {vm.token}" in vm.console_log.read_text()
    vm.shutdown()
    assert vm.states == [C, L, RUN, OFF]


def test_a_saving_boot_pauses_saves_and_resumes_before_ssh(world: World) -> None:
    vm, saving = world.vm("save"), SavingBoot(world.tmp / "state.mig")
    vm.launch(timeout=30, boot=saving)
    assert vm.states == [C, L, SA, L, RUN]
    assert saving.refused is None
    assert saving.path.read_bytes().startswith(b"fake-qemu migration stream")
    assert saving.path.stat().st_mode & 0o777 == 0o600  # the guest's memory: its host key
    assert saving.pci_dump == SAVED_DUMP
    assert f"COCOLAB READY {vm.token}".encode() in saving.console
    assert vm.run_stop is None  # its own pause was expected: the guest runs


def test_a_save_qemu_refuses_is_recorded_and_the_boot_goes_on(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MIGRATE", "blocked")
    vm, saving = world.vm("blocked"), SavingBoot(world.tmp / "state.mig")
    vm.launch(timeout=30, boot=saving)
    assert vm.states == [C, L, SA, L, RUN]
    assert saving.refused == ("QEMU could not save this VM: State blocked by non-migratable "
                              "device '0000:00:04.0/nvme'")
    assert not saving.path.exists()
    assert saving.pci_dump == ""


def _saved(world: World) -> Snapshot:
    vm, saving = world.vm("first"), SavingBoot(world.tmp / "state.mig")
    vm.launch(timeout=30, boot=saving)
    vm.shutdown()
    console = world.tmp / "saved-console.log"
    console.write_bytes(saving.console)
    return Snapshot("k", saving.path, vm.token, saving.pci_dump, console)


def test_a_restore_loads_writes_back_and_checks_then_runs(world: World) -> None:
    snapshot = _saved(world)
    vm = world.vm("restored")
    vm.launch(timeout=30, boot=Restore(snapshot))
    assert vm.states == [C, L, R, RUN]
    assert vm.token == snapshot.token  # the guest's memory holds the saved command line
    log = vm.console_log.read_text()
    assert log.index(f"COCOLAB READY {vm.token}") < log.index("this guest was restored from it")


def test_a_restore_that_is_not_the_saved_guest_fails_and_kills_qemu(world: World) -> None:
    snapshot = _saved(world)
    world.dump.write_text(SAVED_DUMP.replace(f"free {EDU_SAVED.hex()}",
                                             f"free {bytes(len(EDU_SAVED)).hex()}"))
    vm = world.vm("unfaithful")
    with pytest.raises(SnapshotUnfaithful, match=r"PCI config space differs for 0000:00:02.0"):
        vm.launch(timeout=30, boot=Restore(snapshot))
    assert vm.states == [C, L, R, F]
    assert vm.pid is not None and not Path(f"/proc/{vm.pid}").exists()


def test_a_restored_guest_running_another_kernel_fails_the_boot(world: World) -> None:
    # a restore asks the release in its one round trip (with the reseed and the PCI dump)
    snapshot = _saved(world)
    (world.tmp / "guest-bin/uname").write_text("#!/bin/sh\necho 0.0.1-other\n")
    vm = world.vm("other-kernel")
    with pytest.raises(BootError, match=r"booted kernel reports '0\.0\.1-other', expected"):
        vm.launch(timeout=30, boot=Restore(snapshot))
    assert vm.states == [C, L, R, F]


def test_a_restore_of_a_stream_qemu_cannot_read_fails_the_boot(world: World) -> None:
    snapshot = _saved(world)
    snapshot.state.write_bytes(b"garbage")
    vm = world.vm("garbage")
    with pytest.raises(BootError, match=r"QEMU exited during boot with status 1: "
                       r"qemu-system-x86_64: load of migration failed: Invalid argument"):
        vm.launch(timeout=30, boot=Restore(snapshot))
    assert vm.states == [C, L, R, F]


class Recorder(Sidecar):
    """A sidecar that notes when it starts and stops, and whether QEMU ran at the time."""

    def __init__(self, device: str, vm: list[VM], notes: list[str]):
        super().__init__(device)
        self.vm, self.notes = vm, notes

    def start(self, workdir: Path, sockdir: Path) -> str:
        self.notes.append(f"start, qemu {'running' if self.vm[0].pid else 'not started'}")
        return "4242"

    def close(self) -> None:
        pid = self.vm[0].pid
        gone = pid is not None and not Path(f"/proc/{pid}").exists()
        self.notes.append(f"close, qemu {'gone' if gone else 'alive'}")

    def describe(self) -> str:
        return f"{self.device}: a recorder"


def test_sidecars_start_before_qemu_stop_after_it_and_are_named(world: World) -> None:
    holder: list[VM] = []
    notes: list[str] = []
    vm = world.vm("sidecar", sidecars=(Recorder("dev0", holder, notes),))
    holder.append(vm)
    vm.launch(timeout=30)
    assert (vm.workdir / "sidecars.txt").read_text() == "dev0: a recorder\n"
    vm.shutdown()
    assert notes == ["start, qemu not started", "close, qemu gone"]


def test_a_move_the_lifecycle_does_not_allow_is_a_rig_bug(world: World) -> None:
    vm = world.vm("illegal")
    with pytest.raises(RigBug, match="cannot go from created to running"):
        vm.enter(VMState.RUNNING)
    vm.launch(timeout=30)
    with pytest.raises(VMStateError, match="launch\\(\\) needs state created, not running"):
        vm.launch(timeout=30)
