"""The failure bundle: what a developer needs to see, and re-enter, the VM a test failed in."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pexpect

from cocolab.errors import CocolabError
from cocolab.paths import private_dir
from cocolab.vm import VM, VMState

README = """\
cocolab failure bundle for {nodeid}

  console.log   everything the guest printed on its serial console, boot included
  dmesg.txt     the guest kernel log when the test failed ({dmesg_note})
  qemu.log      QEMU's own stdout/stderr
  argv.txt      the exact QEMU command line, one argument per line
  dropbear.log  the guest's SSH server's own log (/run/dropbear.log: why it refused a channel
                or a command), read over SSH, else over the serial console
  kernel-warnings.txt  the kernel's warning reports during the test, if it printed any
  sidecars.txt  what ran beside QEMU, each with its log: an SPDM responder per device that
                has one (spdm-DEVICE.log: every SPDM message, decoded), a vhost-user
                back-end per device that has one (vhost-user-DEVICE.log: every message,
                kick, request and answer, decoded)
  relaunch.sh   boots the same VM (kernel, initrd, cmdline, devices) with its console on your
                terminal: ./relaunch.sh [SSH_PORT]; SSH command inside
"""


NAME_MAX = 120


def bundle_name(nodeid: str) -> str:
    """A directory name for `nodeid`: readable, and unique to it. A long one is cut and ends
    in a digest of the whole id (cut alone, two long ids that began alike shared a bundle,
    and the second failure deleted the first's)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")
    if len(safe) <= NAME_MAX:
        return safe
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:12]
    return f"{safe[:NAME_MAX - 13]}-{digest}"


def _dropbear_log(vm: VM) -> str:
    """The guest sshd's log: over SSH, else over the serial console (the SSH failures it
    explains are exactly when SSH may not answer)."""
    try:
        return vm.run("cat /run/dropbear.log", timeout=10).stdout
    except CocolabError as over_ssh:
        try:
            return vm.console.run("cat /run/dropbear.log", timeout=10).output
        except (CocolabError, OSError, pexpect.ExceptionPexpect) as over_console:
            return f"(could not be read: over SSH: {over_ssh}; over the console: " \
                   f"{over_console})\n"


def write_bundle(root: Path, nodeid: str, vm: VM | None, workdir: Path,
                 extra: dict[str, str] | None = None) -> Path:
    """The bundle for `nodeid`; `extra` files (name: text) are written beside the logs."""
    private_dir(root)  # console logs, dmesg and a way back into the VM: the user's alone
    dest = private_dir(root / bundle_name(nodeid), fresh=True)
    for name in ("console.log", "qemu.log", "argv.txt", "relaunch.sh", "sidecars.txt"):
        if (workdir / name).exists():
            shutil.copy2(workdir / name, dest / name)
    for log in sorted([*workdir.glob("spdm-*.log"), *workdir.glob("vhost-user-*.log")]):
        shutil.copy2(log, dest / log.name)  # what each sidecar saw, decoded
    note = "guest was not running"
    if vm is not None and vm.state is VMState.RUNNING:
        try:
            (dest / "dmesg.txt").write_text(vm.run("dmesg", timeout=15).stdout)
            note = "read over SSH"
        except CocolabError as exc:
            note = f"could not be read: {exc}"
    if not (dest / "dmesg.txt").exists():
        (dest / "dmesg.txt").write_text(f"({note}; see console.log)\n")
    if vm is not None and vm.state is VMState.RUNNING:
        (dest / "dropbear.log").write_text(_dropbear_log(vm))
    for name, text in (extra or {}).items():
        (dest / name).write_text(text + "\n")
    (dest / "README").write_text(README.format(nodeid=nodeid, dmesg_note=note))
    return dest
