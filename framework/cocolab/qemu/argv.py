"""Build the QEMU argv for a VM. Pure: no probing, no processes, no clocks.

`build_argv(config, runtime)` depends only on its two arguments. `config` is everything that
makes two VMs the same VM (and so keys VM reuse); `runtime` is what differs between two boots of
the same VM: socket paths and the readiness token. Keeping the split strict is what makes a
later snapshot/restore possible: the device model depends on `config` alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cocolab.host.process import qmp_args
from cocolab.qemu.policy import VMDIR

NIC_MAC = "52:54:00:12:34:56"
GUEST_SSH_PORT = 22


@dataclass(frozen=True)
class BackendSpec:
    """A device whose data path a cocolab.devices back-end serves: which, and how it starts."""

    device: str
    backend: str
    """A topology's `backend` key: vhost-user-rng, vhost-user-blk."""
    personality: str = "good"


@dataclass(frozen=True)
class VMConfig:
    """Everything that defines a VM. Two tests with equal configs may share one booted VM."""

    qemu: str
    kernel: Path
    initrd: Path
    accel: str = "tcg"
    machine: str = "q35"
    machine_options: tuple[str, ...] = ()
    memory_mib: int = 1024
    cpus: int = 2
    cmdline: tuple[str, ...] = ()
    """Extra kernel command line words (lane, --append, markers), in that order."""
    modules: tuple[str, ...] = ("virtio_pci", "virtio_net")
    """Modules /init loads before starting sshd."""
    platform_args: tuple[str, ...] = ()
    """Devices the machine implies (its vIOMMU), placed before every other device."""
    qemu_args: tuple[str, ...] = ()
    """Topology devices, then a test's own QEMU arguments."""
    nic_model: str = "virtio-net-pci"
    nic_options: tuple[str, ...] = ()
    """More properties of cocolab's own NIC (a CC guest's needs iommu_platform=on)."""
    cc: str = ""
    """'tdx' or 'snp' for a confidential guest (never snapshotted: its memory is encrypted)."""
    backends: tuple[BackendSpec, ...] = ()
    """Devices served by a cocolab back-end over vhost-user: guest RAM becomes a shared
    memfd for them, and the VM is never snapshotted (their state lives outside QEMU)."""
    labels: tuple[tuple[str, str], ...] = field(default=(), compare=False, hash=False)
    """Free-form (key, value) notes for reports; not part of the VM's identity."""

    @property
    def cpu(self) -> str:
        # TCG: -cpu max gives the guest RDRAND, so its crng is ready at once (qemu64 stalls the
        # first SSH connection ~1.3 s in getrandom()). KVM: the host CPU.
        return "host" if self.accel == "kvm" else "max"

    def key(self) -> str:
        """A short stable hash of the config: equal configs, equal keys."""
        data = asdict(self)
        data.pop("labels")
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


SIDECAR_PLACEHOLDER = re.compile(r"@(spdm|vhost-user):([a-z0-9-]+)@")
SPDM, VHOST_USER = "spdm", "vhost-user"


def sidecar_placeholder(kind: str, ident: str) -> str:
    """Stands, in a VMConfig (made before anything runs), for where device `ident`'s
    sidecar listens: its SPDM responder's TCP port, or its vhost-user back-end's socket.
    build_argv puts the real one in (see Runtime.endpoints)."""
    return f"@{kind}:{ident}@"


def spdm_placeholder(ident: str) -> str:
    return sidecar_placeholder(SPDM, ident)


def sidecar_devices(args: tuple[str, ...] | list[str], kind: str) -> list[str]:
    """The ids of the devices in `args` that want a `kind` sidecar, in order."""
    return list(dict.fromkeys(m.group(2) for arg in args
                              for m in SIDECAR_PLACEHOLDER.finditer(arg) if m.group(1) == kind))


def spdm_devices(args: tuple[str, ...] | list[str]) -> list[str]:
    return sidecar_devices(args, SPDM)


@dataclass(frozen=True)
class Runtime:
    """Per-boot values: where the sockets are, which token /init must print, and where
    each device's sidecar listens (a port or a socket path, by device id)."""

    qmp_socket: Path
    console_socket: Path
    token: str
    endpoints: Mapping[str, str] = field(default_factory=dict)
    vmdir: Path | None = None
    """The VM's own directory: what `@vmdir@` in a test's arguments stands for."""


def with_endpoints(args: tuple[str, ...], endpoints: Mapping[str, str],
                   vmdir: Path | None = None) -> list[str]:
    """A test's arguments with each sidecar's endpoint, and the VM's directory for
    `@vmdir@` (qemu/policy.py allows host files there)."""
    def endpoint(m: re.Match[str]) -> str:
        if m.group(2) not in endpoints:
            raise KeyError(f"no {m.group(1)} sidecar for device {m.group(2)!r}")
        return endpoints[m.group(2)]
    done = [SIDECAR_PLACEHOLDER.sub(endpoint, arg) for arg in args]
    return [arg.replace(VMDIR, str(vmdir)) for arg in done] if vmdir is not None else done


SHARED_RAM_ID = "cocolab-ram"


def kernel_cmdline(config: VMConfig, token: str) -> str:
    words = [
        "console=ttyS0",
        "panic=-1",          # with -no-reboot a panic ends QEMU at once
        f"cocolab.token={token}",
        f"cocolab.mac={NIC_MAC}",
    ]
    if config.modules:
        words.append("cocolab.modules=" + ",".join(config.modules))
    return " ".join([*words, *config.cmdline])


def base_args(config: VMConfig) -> list[str]:
    return [config.qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]


def accel_arg(accel: str) -> str:
    if accel == "tcg":
        # One TCG thread for all vCPUs. With multi-threaded TCG the guest kernel's int3-based
        # live patching (text_poke_bp, at boot for static keys/calls) races with the other
        # vCPU's translated code: "Oops: int3" at sched_clock_cpu+0x9 in 4 of 225 boots here
        # (6.12, 7.2). Single-threaded costs ~0.2 s of boot and keeps the guest SMP.
        return "tcg,thread=single"
    return accel


def machine_args(config: VMConfig) -> list[str]:
    options, ram = list(config.machine_options), []
    if config.backends:
        # vhost-user back-ends map guest RAM from the fds QEMU passes: it must be a shared
        # memfd (docs/interop/vhost-user.rst, "Memory regions description").
        options.append(f"memory-backend={SHARED_RAM_ID}")
        ram = ["-object", f"memory-backend-memfd,id={SHARED_RAM_ID},"
                          f"size={config.memory_mib}M,share=on"]
    return ["-machine", ",".join([config.machine, *options]), "-accel", accel_arg(config.accel),
            "-cpu", config.cpu, "-m", f"{config.memory_mib}M", *ram, "-smp", str(config.cpus),
            *config.platform_args]


def boot_args(config: VMConfig, token: str) -> list[str]:
    return ["-kernel", str(config.kernel), "-initrd", str(config.initrd),
            "-append", kernel_cmdline(config, token)]


def console_args(socket: Path) -> list[str]:
    # cocolab listens and QEMU connects, at startup, before the guest runs: no byte is lost.
    return ["-chardev", f"socket,id=con0,path={socket}", "-serial", "chardev:con0"]


def ssh_netdev(host_port: str) -> str:
    # restrict=on: the guest reaches nothing outside. Port 0 lets the host kernel pick a free
    # port (race-free under xdist); cocolab reads it back with 'info usernet'.
    return f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_SSH_PORT}"


def nic_device(config: VMConfig) -> str:
    device = f"{config.nic_model},netdev=net0,mac={NIC_MAC}"
    if config.nic_model.endswith("-pci"):
        device += ",romfile="  # no option ROM: nothing boots from the network
    return ",".join((device, *config.nic_options))


def netdev_args(config: VMConfig) -> list[str]:
    return ["-netdev", ssh_netdev("0"), "-device", nic_device(config)]


def build_argv(config: VMConfig, runtime: Runtime) -> list[str]:
    return [
        *base_args(config),
        *machine_args(config),
        *boot_args(config, runtime.token),
        *console_args(runtime.console_socket),
        *qmp_args(runtime.qmp_socket),
        *netdev_args(config),
        *with_endpoints(config.qemu_args, runtime.endpoints, runtime.vmdir),
    ]


def proof_argv(config: VMConfig, qmp_socket: Path, console_log: Path) -> list[str]:
    """The accelerator's proof boot (host/accel.py): the config's machine, accelerator and
    kernel with no devices at all, its console written to a file."""
    return [*base_args(config), *machine_args(config), *boot_args(config, "proof"),
            "-serial", f"file:{console_log}", *qmp_args(qmp_socket)]


@dataclass(frozen=True)
class ShellWord:
    """A word already written in shell syntax; every other word of a script is quoted."""

    text: str


def relaunch_script(config: VMConfig, ssh_key: Path, python: str = "python3") -> str:
    """A shell script that boots the same VM by hand, console on the terminal.

    Same config, so the same machine, kernel, initrd, cmdline and devices; only the sockets
    differ (the console is the terminal, Ctrl-a x quits) and SSH is forwarded to the port given
    as the script's first argument (default 10022). Every word is quoted with shlex.quote, so
    whatever a cmdline or QEMU argument holds arrives literally; $PORT is expanded in
    cocolab's own SSH forward alone, which is built here, not found by matching text. No path
    is written into a comment.

    A device with an SPDM responder gets one on the next port up, started with `python`
    (-m cocolab.spdm) before QEMU and stopped when QEMU ends; the root it serves is written
    beside the script as spdm-ID-root.pem. A device with a vhost-user back-end gets one
    (-m cocolab.devices, in the personality it started in) on a socket in a fresh directory
    under /tmp, removed when the script ends.
    """
    prefix, _, suffix = ssh_netdev("\0").partition("\0")
    port_word = ShellWord(shlex.quote(prefix) + '"$PORT"' + shlex.quote(suffix))
    words = {ident: f'"$SPDM_PORT_{n}"'
             for n, ident in enumerate(sidecar_devices(config.qemu_args, SPDM), 1)}
    words.update({spec.device: f'"$VU_DIR/{spec.device}.sock"' for spec in config.backends})
    argv: list[str | ShellWord] = [
        *base_args(config),
        *machine_args(config),
        *boot_args(config, "manual"),
        "-serial", "mon:stdio",
        "-netdev", port_word, "-device", nic_device(config),
        *(_with_variables(arg, words) for arg in config.qemu_args),
    ]
    command = " \\\n    ".join(_script_lines(argv))
    sidecars = _sidecar_lines(sidecar_devices(config.qemu_args, SPDM), config.backends, python)
    return (_SCRIPT_HEAD.format(key=shlex.quote(str(ssh_key))) + sidecars
            + (f"{command}\n" if sidecars else f"exec {command}\n"))


_SCRIPT_HEAD = (
    "#!/bin/sh\n"
    "# Boots the VM this test used, its console on this terminal (Ctrl-a x quits).\n"
    "# Usage: relaunch.sh [SSH_PORT]; the SSH command to use from another terminal is\n"
    "# printed first.\n"
    "PORT=${{1:-10022}}\n"
    "KEY={key}\n"
    'VMDIR=$(cd "$(dirname "$0")" && pwd)\n'
    "printf 'ssh: ssh -i %s -p %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    " root@127.0.0.1\\n' \"$KEY\" \"$PORT\" >&2\n")
"""The script's first lines: its port, key, own directory (for @vmdir@), the SSH command."""


def _with_variables(arg: str, words: Mapping[str, str]) -> str | ShellWord:
    """A test's argument with each sidecar's endpoint as a shell variable, and @vmdir@ as the
    script's own directory; anything else quoted."""
    if not SIDECAR_PLACEHOLDER.search(arg) and VMDIR not in arg:
        return arg
    quoted = []
    pieces = SIDECAR_PLACEHOLDER.split(arg)  # literal, kind, id, literal, ..., literal
    for i, piece in enumerate(pieces):
        if i % 3 == 0:
            quoted.append('"$VMDIR"'.join(shlex.quote(p) if p else "" for p in
                                          piece.split(VMDIR)))
        elif i % 3 == 2:
            quoted.append(words[piece])
    return ShellWord("".join(quoted))


def _sidecar_lines(spdm: list[str], backends: tuple[BackendSpec, ...], python: str) -> str:
    """relaunch.sh's lines that start each device's sidecar (an SPDM responder, its port in
    SPDM_PORT_n; a vhost-user back-end, its socket in $VU_DIR) and stop them all when the
    script ends; '' without one."""
    py = shlex.quote(python)
    lines = "".join(
        f"SPDM_PORT_{n}=$((PORT + {n}))\n"
        f"PIDS=\"$PIDS $({py} -m cocolab.spdm --port \"$SPDM_PORT_{n}\" "
        f"--root-pem \"$HERE/spdm-{ident}-root.pem\" --log \"$HERE/spdm-{ident}-manual.log\" "
        "--background)\" || exit 1\n"
        f"echo \"spdm: device {ident} has a responder on 127.0.0.1:$SPDM_PORT_{n}\" >&2\n"
        for n, ident in enumerate(spdm, 1))
    if backends:
        lines += "VU_DIR=$(mktemp -d /tmp/cocolab-vu.XXXXXX) || exit 1\n"
    lines += "".join(
        f"PIDS=\"$PIDS $({py} -m cocolab.devices --socket \"$VU_DIR/{spec.device}.sock\" "
        f"--backend {shlex.quote(spec.backend)} --personality {shlex.quote(spec.personality)} "
        f"--log \"$HERE/vhost-user-{spec.device}-manual.log\" --background)\" || exit 1\n"
        f"echo \"vhost-user: device {spec.device} is served by {spec.backend} "
        f"({spec.personality})\" >&2\n"
        for spec in backends)
    if not lines:
        return ""
    cleanup = 'kill $PIDS 2>/dev/null' + ('; rm -rf "$VU_DIR"' if backends else "")
    return ('HERE=$(cd "$(dirname "$0")" && pwd)\nPIDS=\n' + lines
            + f"trap '{cleanup}' EXIT INT TERM\n")


def _script_lines(argv: list[str | ShellWord]) -> list[str]:
    """argv as shell words, an option and its value on one line."""
    def word(arg: str | ShellWord) -> str:
        return arg.text if isinstance(arg, ShellWord) else shlex.quote(arg)

    def is_option(arg: str | ShellWord) -> bool:
        return isinstance(arg, str) and arg.startswith("-")

    lines: list[str] = [word(argv[0])]
    i = 1
    while i < len(argv):
        if is_option(argv[i]) and i + 1 < len(argv) and not is_option(argv[i + 1]):
            lines.append(f"{word(argv[i])} {word(argv[i + 1])}")
            i += 2
        else:
            lines.append(word(argv[i]))
            i += 1
    return lines
