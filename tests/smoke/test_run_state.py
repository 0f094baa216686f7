"""A guest that QEMU stops running is a RIG FAILURE within about a second, never a timeout.

The stop is made here the two ways a host can make it, whatever the accelerator: through QMP
(a pause, as a KVM internal error leaves the guest) and by SIGSTOP of QEMU itself. The
counterpart, a boot nobody stops, is every other smoke test.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from cocolab.deadline import Deadline
from cocolab.errors import BootError, CocolabError, GuestCommandError, GuestStopped, VMStateError
from cocolab.guest import Guest
from cocolab.host.process import process_state
from cocolab.rig import Rig
from cocolab.vm import VMState

STOP_SEEN_S = 1.5
"""How soon after the stop the rig must say so (the watcher polls at 0.25 s)."""


class Booting:
    """A VM launching in a thread, so the test can stop it mid-boot."""

    def __init__(self, rig: Rig, workdir: Path):
        config, _ = rig.plan()
        self.vm = Guest(config, workdir, rig.kernel, rig.image.keys, name="stopped")
        self.error: BaseException | None = None
        self.ended: float | None = None
        self.thread = threading.Thread(target=self._launch)
        self.thread.start()

    def _launch(self) -> None:
        try:
            self.vm.launch(timeout=120)
        except BaseException as exc:
            self.error = exc
        self.ended = time.monotonic()

    def wait_for_qmp(self) -> None:
        deadline = Deadline(60)
        while not deadline.expired() and self.thread.is_alive():
            try:
                self.vm.qmp.cmd("query-status")
                return
            except VMStateError:
                time.sleep(0.05)
        pytest.fail(f"the VM's QMP monitor never came up: {self.error}")

    def join(self) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive(), "launch() did not return within 30s of the stop"


@pytest.fixture
def rig(cocolab_rig: Rig) -> Rig:
    """The run's rig, its VM planned: a host or kernel that cannot give one is a setup error
    in one line, as for the vm fixture."""
    problem = None
    try:
        cocolab_rig.plan()
    except CocolabError as exc:
        problem = f"cocolab: {exc}"
    if problem:
        pytest.fail(problem, pytrace=False)
    return cocolab_rig


@pytest.mark.parametrize("how", ["qmp-stop", "sigstop"])
def test_a_guest_stopped_while_booting_fails_within_a_second(rig: Rig, tmp_path: Path,
                                                             how: str) -> None:
    booting = Booting(rig, tmp_path / "vm")
    try:
        booting.wait_for_qmp()
        pid = booting.vm.pid
        assert pid is not None
        stopped = time.monotonic()
        if how == "qmp-stop":
            booting.vm.qmp.cmd("stop")
        else:
            os.kill(pid, signal.SIGSTOP)
        booting.join()
    finally:
        booting.vm.kill()
    assert isinstance(booting.error, GuestStopped), booting.error
    assert booting.ended is not None and booting.ended - stopped < STOP_SEEN_S
    assert booting.error.status == ("paused" if how == "qmp-stop" else "frozen")
    assert "the guest stopped running during boot" in booting.error.message
    assert booting.vm.state is VMState.FAILED
    assert process_state(pid) is None, f"QEMU pid {pid} outlived its failed boot"


@pytest.mark.fresh_vm
def test_a_guest_paused_after_boot_fails_its_next_command_at_once(vm: Guest) -> None:
    vm.qmp.cmd("stop")
    start = time.monotonic()
    with pytest.raises(GuestStopped) as info:
        vm.run("sleep 30", timeout=60)
    assert time.monotonic() - start < STOP_SEEN_S
    assert info.value.status == "paused"


@pytest.mark.fresh_vm
def test_a_pause_cocolab_announces_is_no_failure(vm: Guest) -> None:
    with vm.qmp.expecting_stop():
        vm.qmp.cmd("stop")
        vm.qmp.cmd("cont")
    assert vm.run("echo up", timeout=30).stdout == "up\n"


@pytest.mark.fresh_vm
def test_a_guest_frozen_while_a_helper_is_held_fails_at_once(vm: Guest) -> None:
    """A test holding a helper session (a mapping kept open) whose guest stops answering: the
    helper's next read is a RIG FAILURE in about a second, not a hang."""
    pid = vm.pid
    assert pid is not None
    with vm.probe.hold("/dev/mem", 0, 16) as held:
        assert held.first.ok, held.first
        os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(GuestStopped) as info:
            held.finish("again")
    assert time.monotonic() - start < STOP_SEEN_S
    assert info.value.status == "frozen"
    vm.shutdown()
    assert process_state(pid) is None, f"QEMU pid {pid} outlived its frozen guest"


@pytest.mark.fresh_vm
def test_a_guest_reboot_is_told_apart_by_its_reason(vm: Guest) -> None:
    """-no-reboot turns a reboot into QEMU's exit; the SHUTDOWN event still says it was the
    guest's own reset (the TD tests tell a killed TD from a clean reboot by this)."""
    with pytest.raises((GuestStopped, BootError, GuestCommandError)):
        vm.run("reboot -f", timeout=60)
        deadline = Deadline(30)
        while not deadline.expired():
            vm.check_alive()
            time.sleep(0.1)
    assert vm.run_stop is not None
    assert (vm.run_stop.event, "reason=guest-reset" in vm.run_stop.detail) == ("SHUTDOWN", True)
