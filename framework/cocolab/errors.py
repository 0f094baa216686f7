"""Every error cocolab raises, in one tree.

    CocolabError
     ├── ConfigError            a lane, option or marker is wrong (names its source)
     ├── HostError              this host lacks something: QEMU, a package, an accelerator
     │    ├── AccelError        --accel kvm, and KVM cannot boot the kernel here
     │    ├── MissingQemuFeature  this QEMU lacks a device or machine a test needs (a skip)
     │    └── MissingCCHost     this host cannot run a TDX/SNP guest (a skip, with every reason)
     ├── KernelError            a kernel could not be found, fetched or understood
     │    └── SelftestError     its selftests could not be built, installed or listed
     │         └── NoSelftestSource  it has no source tree to build them from (a skip)
     ├── KernelTestDidNotReport a kernel test (a kselftest or KUnit case) gave no result of
     │                          its own: it hung, crashed or printed no KTAP (an ERROR)
     ├── ImageError             the guest initramfs could not be built
     ├── RigBug                 cocolab broke one of its own invariants (never the kernel's)
     ├── PreconditionUnmet      what a test needs of its guest before it can assert anything
     │                          is not there: an ERROR, neither the kernel's failure nor a pass
     ├── ProtocolError          a peer of a server cocolab runs (QEMU's vhost-user front end,
     │                          the guest behind it) sent what its protocol does not allow:
     │                          that request or connection ends, the server goes on
     └── VMError                a booted (or booting) VM misbehaved: this is the rig's side
          ├── BootError         QEMU or the guest never reached READY
          │    ├── SnapshotUnfaithful  a restored guest is not the one saved (booted cold)
          │    └── GuestCrashed a panic/Oops/BUG was seen on the console
          ├── GuestStopped      QEMU stopped running the guest (KVM internal error, a pause,
          │                     a frozen QEMU process): seen within a second, never waited out
          ├── VMStateError      a method was called in the wrong lifecycle state
          ├── TopologyError     the booted guest does not have the devices its test declared
          ├── SidecarFailed     a server beside the VM (an SPDM responder, a vhost-user
          │                     back-end) died or refused what it was sent
          ├── RestoreError      a fixture could not put the guest back as it found it (the VM
          │                     is retired: the next test gets a fresh one)
          ├── MonitorError      QEMU's monitor could not be reached or did not answer in time
          │    └── QMPCommandFailed  QEMU refused a QMP command (its error class and words)
          └── GuestCommandError a guest command could not be run at all (not: it exited non-zero)

A VMError is the rig failing; a test assertion failing is the kernel failing. The pytest plugin
reports the first as an *error* and the second as a *failure*.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar


class CocolabError(Exception):
    """Base of everything cocolab raises on purpose."""


class ConfigError(CocolabError):
    """Invalid configuration. The message names the file and key, option or marker."""


class HostError(CocolabError):
    """The host lacks something cocolab needs; the message says how to get it."""


class AccelError(HostError):
    """KVM was asked for and cannot boot the lane's kernel on this host (its proof boot failed)."""


class MissingQemuFeature(HostError):
    """This QEMU lacks a machine type or device model; tests that need it skip."""


class MissingCCHost(HostError):
    """This host cannot run the confidential guest a lane asks for; tests that need one skip."""


class PreconditionUnmet(CocolabError):
    """A test found its guest without what it needs before its own assertion (a debugfs file
    it reads, a device it drives): reported as an ERROR, never as the kernel failing the
    assertion nor as a pass (`cocolab.assertions.require`)."""


class ProtocolError(CocolabError):
    """A peer sent something its protocol does not allow (a vhost-user message, a virtqueue
    descriptor): the server ends that request or connection and logs it; never itself."""


class KernelError(CocolabError):
    """A kernel could not be located, fetched or inspected."""


class ImageError(CocolabError):
    """The guest image could not be built."""


class KernelTestDidNotReport(CocolabError):
    """A kselftest or KUnit case that gave no result of its own (it hung, crashed, or its
    output holds no KTAP line for it): the test's error, neither a pass nor the rig's."""


class RigBug(CocolabError):
    """An invariant of cocolab's own failed: a bug in the rig, reported as a RIG FAILURE
    (an ERROR), never as a kernel failure the way a bare `assert` in rig code would be."""


T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """`value`, which the rig's own logic guarantees is there; RigBug if it is not."""
    if value is None:
        raise RigBug(f"cocolab bug: {what} is missing here")
    return value


class VMError(CocolabError):
    """A VM misbehaved. Carries the console tail so the report shows what the guest said."""

    def __init__(self, message: str, *, console_tail: str = "", argv: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.console_tail = console_tail
        self.argv = argv or []
        self.workdir: Path | None = None
        """The failed VM's directory (console.log, qemu.log, argv.txt), once known."""

    def __str__(self) -> str:
        text = self.message
        if self.console_tail:
            tail = "\n".join("    " + line for line in self.console_tail.rstrip().splitlines())
            text += f"\n  console tail:\n{tail}"
        return text


class BootError(VMError):
    """QEMU exited, or the guest did not reach READY before its deadline."""


class SnapshotUnfaithful(BootError):
    """A restored guest is not the guest that was saved (a device's state was not migrated):
    its snapshot must never be used; the VM boots cold instead."""


class GuestCrashed(BootError):
    """The guest kernel crashed: a panic, Oops or BUG line was seen on the console."""

    def __init__(self, message: str, *, crash_line: str, console_tail: str = "",
                 argv: list[str] | None = None):
        super().__init__(message, console_tail=console_tail, argv=argv)
        self.crash_line = crash_line


class GuestStopped(VMError):
    """QEMU no longer runs the guest's vCPUs, though it may still be alive.

    `status` is QEMU's run state (`internal-error`, `paused`, `guest-panicked`, `shutdown`,
    or `frozen` for a QEMU process that is itself stopped); `kvm_failed` says KVM gave up on
    the guest, which `--accel auto` answers by booting again under TCG.
    """

    def __init__(self, message: str, *, status: str, kvm_failed: bool = False,
                 qemu_said: str = "", console_tail: str = "", argv: list[str] | None = None):
        super().__init__(message, console_tail=console_tail, argv=argv)
        self.status = status
        self.kvm_failed = kvm_failed
        self.qemu_said = qemu_said
        """QEMU's own line about it ("KVM internal error. Suberror: 1 ... emulation failure")."""


class VMStateError(VMError):
    """A VM method was called in a lifecycle state that does not allow it."""


class TopologyError(VMError):
    """The guest's devices differ from what the test declared: the rig is wrong, not the kernel."""


class SidecarFailed(VMError):
    """A sidecar of the VM died, or logged an error (a request it refused, a ring it stopped
    serving), while a test used it: that test cannot be the kernel's verdict."""


class RestoreError(VMError):
    """Guest state a test changed could not be put back; its shared VM is retired."""


class GuestCommandError(VMError):
    """A command could not be run in the guest (transport failure, timeout)."""


class MonitorError(VMError):
    """QEMU's monitor could not be reached, or did not answer in time."""


class QMPCommandFailed(MonitorError):
    """QEMU answered a QMP command with an error: `error_class` (GenericError, ...) and
    QEMU's own words, `desc`."""

    def __init__(self, command: str, error_class: str, desc: str):
        super().__init__(f"QEMU refused QMP {command!r}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


def said(source: str, value: str) -> str:
    """How the user wrote `value`, for the head of a message: '--qemu X' for an option,
    'COCOLAB_QEMU=X' for an environment variable, "<file>: key 'qemu' is 'X'" for a config
    file's key (its source as rig.pick names it)."""
    if source.startswith("-"):
        return f"{source} {value}"
    if source.isupper():
        return f"{source}={value}"
    return f"{source} is {value!r}"
