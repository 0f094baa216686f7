"""The VM core: the QEMU process, its monitor, console and SSH, liveness, and shutdown.

`launch(boot=...)` starts the VM's sidecars and QEMU, connects console and monitor, and
hands over to the boot strategy (vm/boot.py: cold, cold-and-save, restore) until SSH
answers; the states it passes through are vm/state.py's. `shutdown()` is idempotent and safe
in every state. Every resource (sockets, sidecars, the QEMU process, QMP, SSH) is registered
on one ExitStack as it is acquired and released in reverse order.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pexpect

from cocolab.deadline import Deadline
from cocolab.errors import (
    BootError,
    GuestCommandError,
    GuestCrashed,
    GuestStopped,
    MonitorError,
    RigBug,
    SidecarFailed,
    VMError,
    VMStateError,
    present,
)
from cocolab.host.process import (
    accept_while_running,
    kill_qemu,
    process_state,
    qemu_said,
    start_qemu,
)
from cocolab.kernel import Kconfig, Kernel
from cocolab.monitor import Monitor, RunStop
from cocolab.qemu import Runtime, VMConfig, build_argv, relaunch_script
from cocolab.topology import ExpectedView
from cocolab.vm.boot import Boot, ColdBoot
from cocolab.vm.console import Console
from cocolab.vm.sidecar import Sidecar
from cocolab.vm.snapshot import Snapshot
from cocolab.vm.ssh import SSH, CommandResult, GuestKeys
from cocolab.vm.state import TRANSITIONS, VMState

LOG = logging.getLogger(__name__)
DEFAULT_BOOT_TIMEOUT = 120.0
CONSOLE_SETTLE_S = 0.5

_LIVE: weakref.WeakSet[VM] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for vm in list(_LIVE):
        vm.kill()


INIT_FAILED = rb"COCOLAB FAILED ([^\r\n]*)\r?\n"
"""/init giving up, the whole line: the console may deliver it in pieces, and a match on the
first piece would cut the reason short ("modprobe dummy: modprobe: can't l")."""
COMMANDS_IN = frozenset({VMState.RUNNING, VMState.LAUNCHING, VMState.RESTORING})
"""The states in which the guest runs commands."""
EXIT_EVENT_GRACE_S = 1.0
"""How long a QEMU found exited may still have an event in flight on QMP."""


class VM:
    """One QEMU guest booted from `config`. Use as a context manager."""

    def __init__(self, config: VMConfig, workdir: Path, kernel: Kernel, keys: GuestKeys,
                 name: str = "vm", topology: ExpectedView | None = None,
                 sidecars: Iterable[Sidecar] = ()):
        self.config = config
        self.expected = topology
        """What the guest should enumerate, when the VM was built from a topology."""
        self.workdir = workdir
        self.kernel = kernel
        self.keys = keys
        self.name = name
        self.state = VMState.CREATED
        self.states = [VMState.CREATED]
        """Every state this VM has been in, in order (see vm/state.py)."""
        self.argv: list[str] = []
        self.boot_seconds: float | None = None
        """From starting QEMU to the first SSH command done (the guest's `uname -r`)."""
        self.ready_seconds: float | None = None
        """From starting QEMU to the READY token on the console."""
        self.token = ""
        """The readiness token on this guest's kernel command line (a restore keeps its
        snapshot's)."""
        self.snapshot: Snapshot | None = None
        """The snapshot of this guest's boot, once there is one (it was restored from it, or
        its cold boot was saved as it): another of it is a restore away."""
        self.failure: VMError | None = None
        self.retired: str | None = None
        """Why this VM must not be shared any more (see retire()), or None."""
        self._stack = ExitStack()
        self._before_shutdown: list[Callable[[], None]] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._monitor: Monitor | None = None
        self._console: Console | None = None
        self._ssh: SSH | None = None
        self.ssh_port: int | None = None
        self.sidecars = {sidecar.device: sidecar for sidecar in sidecars}
        self._sidecar_seen: dict[str, int] = {}
        """How many errors each sidecar had when a test began (forget_sidecar_errors)."""
        """What runs beside this VM (vm/sidecar.py), by the device it serves: started before
        QEMU, stopped after it."""

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.launch()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"

    def console_size(self) -> int:
        """Bytes the guest has printed on its console so far (an offset for console_since)."""
        try:
            return self.console_log.stat().st_size
        except OSError:
            return 0

    def console_since(self, offset: int, settle: float = CONSOLE_SETTLE_S) -> str:
        """What the guest printed on its console after `offset`, once it has been quiet for
        a moment (a report printed by a test's last command may still be arriving)."""
        deadline, size = Deadline(settle), self.console_size()
        while not deadline.expired():
            time.sleep(0.05)
            if self.console_size() == size:
                break
            size = self.console_size()
        with contextlib.suppress(OSError), self.console_log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
        return ""

    def launch(self, timeout: float = DEFAULT_BOOT_TIMEOUT, boot: Boot | None = None) -> None:
        """Start QEMU and return once SSH answers, the guest brought up by `boot`
        (vm/boot.py): a cold boot by default, a SavingBoot or a Restore."""
        if self.state is not VMState.CREATED:
            raise VMStateError(f"{self.name}: launch() needs state created, not {self.state.value}")
        boot = boot if boot is not None else ColdBoot()
        self.enter(VMState.LAUNCHING)
        deadline = Deadline(timeout)
        try:
            self._start(boot, deadline)
            boot.until_ssh(self, deadline)
            self._connect_ssh(deadline)
            boot.after_ssh(self, deadline)
            self._check_release(boot.release, deadline)
        except BaseException as exc:
            self.enter(VMState.FAILED)
            if isinstance(exc, VMError):
                self.failure = exc
            self.kill()  # first: a frozen or paused QEMU has nothing graceful left to say
            self._stack.close()
            raise
        self.enter(VMState.RUNNING)
        self.boot_seconds = deadline.elapsed()
        LOG.info("%s ready in %.2fs (ssh port %s)", self.name, self.boot_seconds, self.ssh_port)

    def enter(self, state: VMState) -> None:
        """Move to `state`: only the moves vm/state.py allows, each one recorded."""
        if state not in TRANSITIONS[self.state]:
            raise RigBug(f"cocolab bug: {self.name} cannot go from {self.state.value} to "
                         f"{state.value}")
        self.state = state
        self.states.append(state)

    def _start(self, boot: Boot, deadline: Deadline) -> None:
        """The VM's directory, its sidecars, QEMU, and its console and monitor connected."""
        # A workdir left by an earlier run (same results dir, same VM name) must not lend
        # its console log to this boot.
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True, mode=0o700)  # console logs, argv, the relaunch script
        # Unix socket paths are limited to 108 bytes: keep them in a short private dir.
        sockdir = Path(self._stack.enter_context(
            tempfile.TemporaryDirectory(prefix="cocolab-", dir="/tmp")))
        endpoints = self._start_sidecars(sockdir)
        runtime = Runtime(sockdir / "qmp.sock", sockdir / "con.sock", boot.token, endpoints,
                          self.workdir)
        self.token = boot.token
        self.argv = build_argv(self.config, runtime) + boot.qemu_args()
        boot.before_qemu(self)
        self._write_artifacts()

        console_listener = self._listen(runtime.console_socket)
        qmp_listener = self._listen(runtime.qmp_socket)
        self._proc = start_qemu(self.argv, self.qemu_log)
        _LIVE.add(self)
        self._stack.callback(self.kill)

        conn = self._accept(console_listener, "its serial console", deadline)
        self._console = Console(conn, self.console_log, alive=self.check_alive)
        self._stack.callback(self._console.close)
        self._monitor = self._start_monitor(qmp_listener, deadline)
        self.check_alive()
        self.ssh_port = self._forwarded_port()

    def _start_sidecars(self, sockdir: Path) -> dict[str, str]:
        """Start every sidecar (on the exit stack, so stopped after QEMU) and name them in
        sidecars.txt; where each listens, by device, for the argv."""
        endpoints = {}
        for sidecar in self.sidecars.values():
            self._stack.callback(sidecar.close)
            endpoints[sidecar.device] = sidecar.start(self.workdir, sockdir)
        if self.sidecars:
            (self.workdir / "sidecars.txt").write_text(
                "".join(f"{s.describe()}\n" for s in self.sidecars.values()))
        return endpoints

    def _start_monitor(self, listener: socket.socket, deadline: Deadline) -> Monitor:
        monitor = Monitor(self._accept(listener, "its QMP monitor", deadline), self.name,
                          on_lost=self._monitor_lost)
        self._stack.callback(monitor.close)
        try:
            monitor.start(timeout=max(min(deadline.remaining(), 15.0), 1.0))
        except MonitorError as exc:
            failure: MonitorError | None = exc
        else:
            failure = None
        if failure is not None:
            # A QEMU that dies while starting drops QMP first and exits a moment later; its
            # own words say why.
            with contextlib.suppress(subprocess.TimeoutExpired):
                present(self._proc, "QEMU").wait(1.0)
            self._check_process("while starting")
            raise BootError(f"QMP did not come up: {failure}", argv=self.argv) from failure
        return monitor

    def _monitor_lost(self) -> None:
        """QMP broke mid-command: if QEMU is exiting, its exit (and its last words) is what
        to report, not the broken connection."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            present(self._proc, "QEMU").wait(EXIT_EVENT_GRACE_S)
        self._check_process("during boot" if self.state.booting else "unexpectedly")

    def _connect_ssh(self, deadline: Deadline) -> None:
        self._ssh = SSH(present(self.ssh_port, "the SSH port"), self.keys.client, self.keys.host)
        self._stack.callback(self._ssh.close)
        self._ssh.connect(deadline, alive=self.check_alive)

    def _check_release(self, said: str | None, deadline: Deadline) -> None:
        """The guest runs the kernel asked for: `said` if the boot asked already, else ask."""
        release = said.strip() if said is not None else \
            self.run("uname -r", timeout=deadline.remaining() + 5).stdout.strip()
        if release != self.kernel.release:
            raise BootError(f"booted kernel reports {release!r}, expected "
                            f"{self.kernel.release!r} ({self.kernel.image})")

    def _write_artifacts(self) -> None:
        (self.workdir / "argv.txt").write_text("\n".join(self.argv) + "\n")
        script = self.workdir / "relaunch.sh"
        script.write_text(relaunch_script(self.config, self.keys.client, sys.executable))
        script.chmod(0o755)

    def _listen(self, path: Path) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._stack.callback(listener.close)
        listener.bind(str(path))
        listener.listen(1)
        return listener

    def _accept(self, listener: socket.socket, what: str, deadline: Deadline) -> socket.socket:
        conn = accept_while_running(listener, present(self._proc, "QEMU"), deadline)
        if conn is None:
            self._check_process("while starting")
            raise BootError(f"QEMU did not connect {what}", argv=self.argv)
        return conn

    def _forwarded_port(self) -> int:
        # hostfwd asked for port 0; the port the host kernel chose is only in 'info usernet'.
        text = self.hmp("info usernet")
        m = re.search(r"HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+10\.0\.2\.15\s+22", text)
        if not m:
            raise BootError(f"no SSH port forward in 'info usernet':\n{text}", argv=self.argv)
        return int(m.group(1))

    def await_ready(self, token: str, deadline: Deadline) -> None:
        """Wait for /init to print `token` on the console (a cold boot's readiness), or for
        it to give up, crash or vanish, which raise."""
        console = present(self._console, "the console")
        try:
            index = console.expect([f"COCOLAB READY {token}".encode(),
                                          INIT_FAILED], deadline)
            if index == 1:
                spawn_match = console.last_match
                raise BootError(f"the guest's /init gave up: {spawn_match}",
                                console_tail=console.tail(), argv=self.argv)
        except GuestCrashed as exc:
            exc.argv = self.argv
            raise
        except pexpect.TIMEOUT:
            raise BootError(f"guest not READY after {deadline.seconds:g}s",
                            console_tail=console.tail(), argv=self.argv) from None
        except pexpect.EOF:
            self._check_process("during boot")
            raise BootError("console closed during boot", console_tail=console.tail(),
                            argv=self.argv) from None

    def _check_process(self, when: str) -> None:
        rc = present(self._proc, "QEMU").poll()
        if rc is not None:
            if self._monitor is not None and self._monitor.stopped is None:
                # QEMU says why (SHUTDOWN) before it exits: let the monitor read it
                self._monitor.changed.wait(EXIT_EVENT_GRACE_S)
            if self._console is not None:
                # read what the guest said last: it may name a panic
                self._console.settle(2.0)
            said = self.qemu_log.read_text(errors="replace").strip()[-2000:]
            tail = self._console.tail() if self._console else ""
            if self._console and self._console.crash_line:
                raise GuestCrashed(f"guest crashed {when}: {self._console.crash_line}",
                                   crash_line=self._console.crash_line, console_tail=tail,
                                   argv=self.argv)
            raise BootError(f"QEMU exited {when} with status {rc}: {said or '(no output)'}",
                            console_tail=tail, argv=self.argv)

    def check_alive(self) -> None:
        """Raise if the guest crashed (GuestCrashed), QEMU is gone (BootError), or QEMU no
        longer runs the guest (GuestStopped: a KVM internal error, a pause, a frozen QEMU).

        Cheap (no guest round trip): every wait on the guest calls it a few times a second.
        """
        if self._console is not None and self._console.crash_line:
            raise GuestCrashed(f"guest crashed: {self._console.crash_line}",
                               crash_line=self._console.crash_line,
                               console_tail=self._console.tail(), argv=self.argv)
        self._check_sidecars_running()
        if self._proc is None:
            return
        self._check_process("unexpectedly")
        stop = self._monitor.stopped if self._monitor is not None else None
        if stop is None and process_state(self._proc.pid) == "T":
            stop = RunStop("SIGSTOP", "frozen", f"QEMU pid {self._proc.pid} is stopped")
        if stop is not None:
            raise self._stopped(stop)

    def _check_sidecars_running(self) -> None:
        for sidecar in self.sidecars.values():
            why = sidecar.dead()
            if why is not None:
                raise SidecarFailed(why, argv=self.argv)

    def forget_sidecar_errors(self) -> None:
        """From now on, an error a sidecar logs is news (check_sidecars): a test on a shared
        VM answers only for what happened during it."""
        self._sidecar_seen = {d: len(s.errors()) for d, s in self.sidecars.items()}

    def check_sidecars(self) -> None:
        """SidecarFailed naming why a sidecar died, or the first error it logged since
        forget_sidecar_errors (a request it refused, a ring it stopped serving). The guest's
        own state is check_alive's."""
        self._check_sidecars_running()
        for device, sidecar in self.sidecars.items():
            new = sidecar.errors()[self._sidecar_seen.get(device, 0):]
            if new:
                raise SidecarFailed(f"the sidecar of {device} refused what it was sent: "
                                    f"{new[0]}" + (f" (and {len(new) - 1} more)"
                                                   if len(new) > 1 else ""), argv=self.argv)

    def _stopped(self, stop: RunStop) -> GuestStopped:
        when = "during boot" if self.state.booting else "after boot"
        said = qemu_said(self.qemu_log.read_text(errors="replace")) if stop.status != "frozen" \
            else ""
        kvm_failed = self.config.accel == "kvm" and stop.status == "internal-error"
        if kvm_failed:
            text = (f"KVM could not run the guest {when}: {said or stop}. Boot under TCG "
                    "instead: --accel tcg (or auto)")
        else:
            text = f"the guest stopped running {when}: {stop}"
            if said:
                text += f"; QEMU said: {said}"
        tail = self._console.tail() if self._console else ""
        return GuestStopped(text, status=stop.status, kvm_failed=kvm_failed, qemu_said=said,
                            console_tail=tail, argv=self.argv)

    def before_shutdown(self, read: Callable[[], None]) -> None:
        """Call `read` once when this VM is shut down while its guest still runs, first: to
        keep what only a live guest has (coverage counters). An error in it is logged; the
        shutdown goes on."""
        self._before_shutdown.append(read)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Quit QEMU (QMP 'quit', then SIGTERM/SIGKILL by PID) and release everything."""
        if self.state is VMState.SHUT_DOWN:
            return
        reads, self._before_shutdown = self._before_shutdown, []
        if self.state is VMState.RUNNING:
            for read in reads:
                try:
                    read()
                except Exception as exc:  # what the guest kept is lost, not the shutdown
                    LOG.warning("%s: before shutdown: %s", self.name, exc)
        if self.state is VMState.CREATED:
            self.enter(VMState.SHUT_DOWN)
            return
        if self._monitor is not None and self._proc is not None and self._proc.poll() is None \
                and process_state(self._proc.pid) != "T":  # a frozen QEMU answers nobody
            try:
                self._monitor.cmd("quit", timeout=timeout)
                self._proc.wait(timeout)
            except Exception as exc:
                LOG.debug("%s: QMP quit failed (%s); killing", self.name, exc)
        self._stack.close()
        if VMState.SHUT_DOWN in TRANSITIONS[self.state]:  # a FAILED VM stays FAILED
            self.enter(VMState.SHUT_DOWN)

    def kill(self) -> None:
        """Kill QEMU at once, by PID. Safe to call any number of times."""
        if self._proc is not None:
            kill_qemu(self._proc, grace=1.0)
        _LIVE.discard(self)

    def retire(self, why: str, *, planned: bool = False) -> None:
        """This guest is no longer as its tests expect (a restore failed; or, `planned`, a
        test changed it on purpose and a restore of `snapshot` is the cheapest way back): the
        pool boots a new one for the next test instead of sharing this one."""
        (LOG.info if planned else LOG.warning)("%s retired: %s", self.name, why)
        self.retired = why

    @property
    def run_stop(self) -> RunStop | None:
        """How QEMU said the guest stopped running (event, run state, reason), if it did."""
        return self._monitor.stopped if self._monitor is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # --- talking --------------------------------------------------------------------------

    def _need_running(self, what: str) -> None:
        if self.state is not VMState.RUNNING:
            raise VMStateError(f"{self.name}: {what} needs a running VM (state: "
                               f"{self.state.value})")

    def run(self, command: str, timeout: float = 60.0, stdin: bytes | None = None,
            check: bool = False) -> CommandResult:
        """Run `command` with /bin/sh over SSH; exit status, stdout and stderr are exact."""
        # a boot strategy runs commands once SSH is up; a paused guest (SAVING) answers none
        if self.state not in COMMANDS_IN or self._ssh is None:
            self._need_running("run()")
        ssh = present(self._ssh, "SSH")
        try:
            result = ssh.run(command, timeout, stdin=stdin, alive=self.check_alive)
        except GuestCommandError:
            self._verdict_on_lost_command()
            raise
        return result.check() if check else result

    def _verdict_on_lost_command(self) -> None:
        """A command's connection broke or it timed out. If that is the guest going down (a
        reset, a panic, QEMU's exit), that is what to report, and it can lag the broken
        connection by a moment (QEMU closes slirp's sockets as it exits, before the process
        is gone): raise it if it shows within EXIT_EVENT_GRACE_S."""
        deadline = Deadline(EXIT_EVENT_GRACE_S)
        while not deadline.expired():
            self.check_alive()
            if self._monitor is not None and self._monitor.changed.wait(0.05):
                break
        self.check_alive()

    def put(self, local: Path | str, remote: str, mode: int = 0o644) -> None:
        """Copy the file `local` into the guest as `remote` (its directory made if need be),
        with `mode`: a reproducer, a test binary (static, or linked against nothing the guest
        lacks), a firmware blob. Read back and compared by size before returning."""
        data = Path(local).read_bytes()
        path = shlex.quote(remote)
        self.run(f"mkdir -p \"$(dirname {path})\" && cat > {path} && chmod {mode:o} {path}",
                 stdin=data, check=True)
        size = self.run(f"wc -c < {path}", check=True).stdout.strip()
        if size != str(len(data)):
            raise GuestCommandError(f"copying {local} to {remote}: the guest has {size} bytes "
                                    f"of {len(data)}")

    @property
    def console(self) -> Console:
        self._need_running("console")
        return present(self._console, "the console")

    @property
    def ssh(self) -> SSH:
        self._need_running("ssh")
        return present(self._ssh, "SSH")

    @property
    def qmp(self) -> Monitor:
        """QEMU's monitor: `vm.qmp.cmd("query-status")`. A pause made through it without
        `vm.qmp.expecting_stop()` is a stopped guest, and so a RIG FAILURE."""
        if self._monitor is None:
            self._need_running("qmp")
        return present(self._monitor, "the QMP monitor")

    def hmp(self, command: str) -> str:
        out: Any = self.qmp.cmd("human-monitor-command", {"command-line": command})
        return str(out)

    @property
    def kconfig(self) -> Kconfig:
        return self.kernel.kconfig
