"""The bad-input corpus: every malformed input a user can give, by source, and the one line
cocolab answers with.

Each case goes in through the door a user uses: a lane or a kernel option through
`cocolab setup` (the same options, Rig and checks as the pytest plugin), an environment
variable, a marker or a topology/machine file through the plugin's own collection hook, a QEMU
argument through `cocolab shell`. Each must answer with exactly the message below (one line,
naming the file and key, the option, the variable, or the marker and its test; the value; what
would be valid), in under 2 s, and start no subprocess at all: no QEMU, no apt.

COCOLAB_PRINT_CORPUS=1 prints what each case answers instead of checking it (to review a new
case's message before writing it down).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from cocolab import cli
from cocolab.config import lane_names
from cocolab.paths import CONFIGS_DIR
from cocolab.pytest_plugin import plugin
from cocolab.pytest_plugin.pool import VMPool
from cocolab.qemu.policy import ALLOWED, OBJECT_TYPES
from cocolab.rig import Rig, RigOptions
from cocolab.topology.models import MODELS
from cocolab.topology.schema import machine_names, topology_names
from fake_kernel import fake_bzimage

LANES = ", ".join(lane_names())
QEMU_OPTS = ", ".join(ALLOWED)
EVERY = "0.0.0" + ".0"
"""Every address, assembled: a grep for a forward bound to it finds only real use."""
MACHINES = ", ".join(machine_names())
TOPOLOGIES = ", ".join(topology_names())
NODE = "tests/x/test_bad.py::test_x"


@dataclass(frozen=True)
class Bad:
    source: str
    """lane, option, env, cli, marker, topology, machine: how the input reaches cocolab."""
    given: object
    """What the user wrote: the file's text (bytes for encodings), argv words, env settings,
    or marker decorators."""
    says: str
    """The one line cocolab answers with; {file} is the file written, {tmp} its directory."""
    args: tuple[str, ...] = ()
    """Extra argv words for file cases."""


def _chain(depth: int) -> str:
    text = 'machine = "q35"\n'
    for i in range(depth):
        bus = f'bus = "b{i - 1}"\n' if i else ""
        text += f'[[device]]\nid = "b{i}"\nmodel = "pci-bridge"\nchassis = {i + 1}\n{bus}'
    return text


def _fan(bridges: int, each: int) -> str:
    """`bridges` pci-bridges on the root bus, `each` more on each of them."""
    text = 'machine = "q35"\n'
    for i in range(bridges):
        text += f'[[device]]\nid = "r{i}"\nmodel = "pci-bridge"\nchassis = {i + 1}\n'
        for j in range(each):
            text += (f'[[device]]\nid = "r{i}-{j}"\nmodel = "pci-bridge"\n'
                     f'chassis = {100 + i * each + j}\nbus = "r{i}"\n')
    return text


def _dev(extra: str = "", model: str = "edu", ident: str = "d") -> str:
    return f'[[device]]\nid = "{ident}"\nmodel = "{model}"\n{extra}'


CORPUS: list[Bad] = [
    # -- lane files (--lane PATH) ----------------------------------------------------------
    Bad("lane", 'kernal = "debian:sid"\n', "{file}: unknown key 'kernal'; valid keys: accel, "
        "append, cc, cpus, description, expected_failure, firmware, kconfig, kernel, machine, "
        "memory_mib, patches, qemu, simulated, strict"),
    Bad("lane", "memory_mib = 0\n",
        "{file}: key 'memory_mib' is 0; give a number from 128 to 1048576"),
    Bad("lane", "memory_mib = -1024\n",
        "{file}: key 'memory_mib' is -1024; give a number from 128 to 1048576"),
    Bad("lane", "memory_mib = 2000000\n",
        "{file}: key 'memory_mib' is 2000000; give a number from 128 to 1048576"),
    Bad("lane", "cpus = 0\n", "{file}: key 'cpus' is 0; give a number from 1 to 64"),
    Bad("lane", "cpus = 65\n", "{file}: key 'cpus' is 65; give a number from 1 to 64"),
    Bad("lane", 'cpus = "2"\n', "{file}: key 'cpus' must be int, not str"),
    Bad("lane", "cpus = true\n", "{file}: key 'cpus' must be int, not bool"),
    Bad("lane", 'accel = "hvf"\n', "{file}: key 'accel' is 'hvf'; choose one of auto, kvm, tcg"),
    Bad("lane", 'machine = "virt"\n', "{file}: key 'machine' is 'virt'; choose one of {machines}"),
    Bad("lane", 'append = "quiet"\n', "{file}: key 'append' must be list, not str"),
    Bad("lane", 'append = ["quiet", 1]\n', "{file}: key 'append' must be a list of strings"),
    Bad("lane", "",
        "{file}: the lane is empty; set at least 'description' and 'kernel' (see "
        "qemu-configs/lanes/default.toml)"),
    Bad("lane", "kernel = \n", "{file}: Invalid value (at line 1, column 10)"),
    Bad("lane", b'description = "caf\xe9"\n',
        "{file}: not UTF-8 text (byte 18); TOML files are UTF-8"),
    Bad("lane", 'firmware = "/srv/OVMF.fd"\n',
        "{file}: key 'firmware' applies to confidential lanes only (set 'cc' to tdx or snp, or "
        "remove 'firmware')"),
    Bad("lane", 'cc = "sev"\n', "{file}: key 'cc' is 'sev'; choose one of '', tdx, snp"),
    Bad("lane", 'cc = "tdx"\nmachine = "q35"\n',
        "{file}: key 'cc' is 'tdx' but machine 'q35' boots no tdx guest"),
    Bad("lane", 'kernel = "debian:"\n',
        "{file}: key 'kernel': 'debian:' is not debian:<suite>[:<package>] (e.g. debian:trixie, "
        "debian:sid, debian:bookworm:linux-image-6.12-amd64)"),
    Bad("lane", 'kernel = "/nonexistent/bzImage"\n',
        "{file}: key 'kernel': '/nonexistent/bzImage' is neither debian:<suite> nor an existing "
        "bzImage or build tree"),
    Bad("lane", 'qemu = "/etc/hostname"\n',
        "{file}: key 'qemu' is '/etc/hostname': /etc/hostname is neither a program nor a "
        "script (no "
        "ELF header); point it at qemu-system-x86_64"),
    Bad("lane", 'qemu = "/nonexistent/qemu-system-x86_64"\n',
        "{file}: key 'qemu' is '/nonexistent/qemu-system-x86_64': does not exist or is "
        "not executable"),
    Bad("lane", 'strict = "yes"\n', "{file}: key 'strict' must be bool, not str"),
    # -- options (cocolab setup ARGS; pytest takes the same ones) --------------------------
    Bad("option", ("--lane", "nosuchlane"),
        "--lane nosuchlane: no such lane; choose one of {lanes} or give a path to a .toml file"),
    Bad("option", ("--lane", "/nonexistent/lane.toml"),
        "--lane /nonexistent/lane.toml: no such file"),
    Bad("option", ("--lane", "{tmp}/dir.toml"), "--lane {tmp}/dir.toml: not a regular file"),
    Bad("option", ("--kernel", "debian:"),
        "--kernel: 'debian:' is not debian:<suite>[:<package>] (e.g. debian:trixie, debian:sid, "
        "debian:bookworm:linux-image-6.12-amd64)"),
    Bad("option", ("--kernel", "debian:trixie:Bad_Package"),
        "--kernel: 'Bad_Package' is not a Debian package name"),
    Bad("option", ("--kernel", "debian:trixie:a:b"),
        "--kernel: 'debian:trixie:a:b' is not debian:<suite>[:<package>] (e.g. debian:trixie, "
        "debian:sid, debian:bookworm:linux-image-6.12-amd64)"),
    Bad("option", ("--kernel", "/nonexistent/bzImage"),
        "--kernel: '/nonexistent/bzImage' is neither debian:<suite> nor an existing "
        "bzImage or build "
        "tree"),
    Bad("option", ("--kernel", "{tmp}/text"),
        "--kernel: {tmp}/text is not an x86 bzImage (no HdrS boot header); give an x86 bzImage "
        "(arch/x86/boot/bzImage, /boot/vmlinuz-*), an ELF vmlinux built with CONFIG_PVH=y, or a "
        "build tree"),
    Bad("option", ("--kernel", "{tmp}"),
        "--kernel: {tmp} is a directory without arch/x86/boot/bzImage; build it (make bzImage "
        "modules) or pass the bzImage file itself"),
    Bad("option", ("--kernel", "debian:trixie", "--kernel-config", "{tmp}/text"),
        "--kernel-config {tmp}/text: applies to a bzImage only, and --kernel debian:trixie is a "
        "Debian kernel, which brings its own config and modules"),
    Bad("option", ("--kernel", "{tmp}/bzImage", "--kernel-config", "{tmp}/binary"),
        "--kernel-config {tmp}/binary: not a kernel .config (no CONFIG_ lines); give the build's "
        ".config or /boot/config-<release>"),
    Bad("option", ("--kernel", "{tmp}/bzImage", "--kernel-config", "{tmp}/text"),
        "--kernel-config {tmp}/text: not a kernel .config (no CONFIG_ lines); give the build's "
        ".config or /boot/config-<release>"),
    Bad("option", ("--kernel", "{tmp}/bzImage", "--kernel-config", "{tmp}/nothing"),
        "--kernel-config {tmp}/nothing: no such file; give the build's .config or "
        "/boot/config-<release>"),
    Bad("option", ("--kernel", "{tmp}/bzImage", "--modules", "{tmp}/text"),
        "--modules {tmp}/text: not a directory; give the INSTALL_MOD_PATH of `make "
        "modules_install` "
        "(it holds lib/modules/<release>)"),
    Bad("option", ("--kernel", "{tmp}", "--modules", "{tmp}"),
        "--modules {tmp}: applies to a bzImage only, and --kernel {tmp} is a build tree, whose own "
        ".config and modules are used"),
    Bad("option", ("--qemu", "/etc/hostname"),
        "--qemu /etc/hostname: /etc/hostname is neither a program nor a script (no ELF header); "
        "point it at qemu-system-x86_64"),
    Bad("option", ("--qemu", "/nonexistent/qemu-system-x86_64"),
        "--qemu /nonexistent/qemu-system-x86_64: does not exist or is not executable"),
    Bad("option", ("--qemu", "{tmp}"),
        "--qemu {tmp}: a directory; point it at the qemu-system-x86_64 binary"),
    Bad("option", ("--boot-timeout", "0"),
        "--boot-timeout 0: give seconds above 0 and at most 3600 (default 120)"),
    Bad("option", ("--boot-timeout", "-5"),
        "--boot-timeout -5: give seconds above 0 and at most 3600 (default 120)"),
    Bad("option", ("--boot-timeout", "nan"),
        "--boot-timeout nan: give seconds above 0 and at most 3600 (default 120)"),
    Bad("option", ("--boot-timeout", "inf"),
        "--boot-timeout inf: give seconds above 0 and at most 3600 (default 120)"),
    Bad("option", ("--boot-timeout", "7200"),
        "--boot-timeout 7200: give seconds above 0 and at most 3600 (default 120)"),
    Bad("option", ("--append", 'x="a'),
        "--append 'x=\"a': No closing quotation; quote a word with spaces as 'name=\"a b\"'"),
    Bad("option", ("--firmware", "/srv/OVMF.fd"),
        "--firmware /srv/OVMF.fd: applies to confidential lanes only; lane default boots plain "
        "guests (use --lane tdx or --lane snp)"),
    # -- environment variables -------------------------------------------------------------
    Bad("env", {"COCOLAB_LANE": "nosuchlane"},
        "COCOLAB_LANE=nosuchlane: no such lane; choose one of {lanes} or give a path to "
        "a .toml file"),
    Bad("env", {"COCOLAB_LANE": "{tmp}/bad.toml"},
        "{tmp}/bad.toml: key 'memory_mib' is 0; give a number from 128 to 1048576"),
    Bad("env", {"COCOLAB_KERNEL": "debian:"},
        "COCOLAB_KERNEL: 'debian:' is not debian:<suite>[:<package>] (e.g. debian:trixie, "
        "debian:sid, debian:bookworm:linux-image-6.12-amd64)"),
    Bad("env", {"COCOLAB_KERNEL": "/nonexistent/bzImage"},
        "COCOLAB_KERNEL: '/nonexistent/bzImage' is neither debian:<suite> nor an "
        "existing bzImage or "
        "build tree"),
    Bad("env", {"COCOLAB_QEMU": "/etc/hostname"},
        "COCOLAB_QEMU=/etc/hostname: /etc/hostname is neither a program nor a script (no ELF "
        "header); point it at qemu-system-x86_64"),
    Bad("env", {"COCOLAB_QEMU": "/nonexistent/qemu-system-x86_64"},
        "COCOLAB_QEMU=/nonexistent/qemu-system-x86_64: does not exist or is not executable"),
    Bad("env", {"COCOLAB_ACCEL": "hvf"},
        "COCOLAB_ACCEL=hvf: no such accelerator; choose one of auto, kvm, tcg"),
    # -- cocolab shell's own arguments -----------------------------------------------------
    Bad("cli", ("--qemu-arg=-netdev", "--qemu-arg=user,id=x"),
        "--qemu-arg: -netdev 'user,id=x': user networking needs restrict=on"),
    Bad("cli", ("--qemu-arg=-netdev", "--qemu-arg=tap,id=x"),
        "--qemu-arg: -netdev 'tap,id=x': only user networking is allowed (a 'tap' backend reaches "
        "outside)"),
    Bad("cli", ("--qemu-arg=-s",),
        f"--qemu-arg: -s: not a QEMU option cocolab allows a test to add (allowed: {QEMU_OPTS})"),
    Bad("cli", ("--qemu-arg=-monitor", "--qemu-arg=tcp:127.0.0.1:4444,server=on"),
        f"--qemu-arg: -monitor: not a QEMU option cocolab allows a test to add (allowed: "
        f"{QEMU_OPTS})"),
    Bad("cli", ("--qemu-arg=-vnc", "--qemu-arg=:0"),
        f"--qemu-arg: -vnc: not a QEMU option cocolab allows a test to add (allowed: "
        f"{QEMU_OPTS})"),
    Bad("cli", ("--topology", "nosuch"),
        "topology 'nosuch': no such topology; choose one of {topologies} or give a path to a .toml "
        "file"),
    Bad("cli", ("--put", "/nonexistent/reproducer"),
        "--put /nonexistent/reproducer: /nonexistent/reproducer is not a file"),
    Bad("cli", ("--machine", "nosuch"),
        "machine 'nosuch': no such machine; choose one of {machines} or give a path to a "
        ".toml file"),
    # -- cocolab build's arguments ----------------------------------------------------------
    Bad("build", ("debian:7",),
        "build: 'debian:7' is not debian:X.Y (a linux-source version, e.g. debian:7.3, "
        "debian:6.12) or debian:SUITE (e.g. debian:trixie)"),
    Bad("build", ("/nonexistent/linux",),
        "build: /nonexistent/linux is not a kernel source tree (no Makefile and scripts/kconfig) "
        "nor debian:X.Y"),
    Bad("build", ("debian:7.3", "--patch", "/etc/hostname"),
        "--patch /etc/hostname: not a patch (no '+++' file header); give a git format-patch "
        "file, a unified diff or an mbox of a series"),
    Bad("build", ("debian:7.3", "--patch", "/nonexistent/0001.patch"),
        "--patch /nonexistent/0001.patch: No such file or directory"),
    Bad("build", ("debian:7.3", "--kconfig", "strict devmem"),
        "--kconfig 'strict devmem': not NAME, NAME=y, NAME=m or NAME=n"),
    Bad("build", ("--lane", "default"),
        "build: give a SOURCE (debian:X.Y or a kernel tree); lane default builds none "
        "(`cocolab build --list`)"),
    Bad("option", ("--kernel", "build:debian:7"),
        "--kernel: 'debian:7' is not debian:X.Y (a linux-source version, e.g. debian:7.3, "
        "debian:6.12) or debian:SUITE (e.g. debian:trixie)"),
    Bad("option", ("--lane", "cc-sim-tdx", "--kernel", "debian:sid"),
        "--kernel debian:sid: lane cc-sim-tdx builds its kernel with "
        "guests/cc-sim/cc-sim-tdx.patch, which a prebuilt kernel lacks; give a source to build "
        "(build:debian:X.Y or a kernel tree), or a tree `cocolab build --lane cc-sim-tdx` made"),
    # -- markers (the plugin's collection hook) --------------------------------------------
    Bad("marker", (pytest.mark.cmdline(1),),
        "{node}: @pytest.mark.cmdline takes strings only: @pytest.mark.cmdline(*words)"),
    Bad("marker", (pytest.mark.cmdline(word="quiet"),),
        "{node}: @pytest.mark.cmdline takes strings only: @pytest.mark.cmdline(*words)"),
    Bad("marker", (pytest.mark.modules(1),),
        "{node}: @pytest.mark.modules takes strings only: @pytest.mark.modules(*names)"),
    Bad("marker", (pytest.mark.kconfig("strict-devmem"),),
        "{node}: kconfig option 'strict-devmem' is not NAME, NAME=y, NAME=m or NAME=n"),
    Bad("marker", (pytest.mark.kconfig("STRICT_DEVMEM=x"),),
        "{node}: kconfig option 'STRICT_DEVMEM=x' is not NAME, NAME=y, NAME=m or NAME=n"),
    Bad("marker", (pytest.mark.topology(),),
        "{node}: @pytest.mark.topology takes one name: @pytest.mark.topology(\"NAME\")"),
    Bad("marker", (pytest.mark.topology("flat", "pcie-switch"),),
        "{node}: @pytest.mark.topology takes one name: @pytest.mark.topology(\"NAME\")"),
    Bad("marker", (pytest.mark.topology("nosuch"),),
        "{node}: @pytest.mark.topology: topology 'nosuch': no such topology; choose one of "
        "{topologies} or give a path to a .toml file"),
    Bad("marker", (pytest.mark.machine("nosuch"),),
        "{node}: @pytest.mark.machine: machine 'nosuch': no such machine; choose one of {machines} "
        "or give a path to a .toml file"),
    Bad("marker", (pytest.mark.topology("root-ports-acs"), pytest.mark.machine("pc")),
        "{node}: @pytest.mark.machine, @pytest.mark.topology: "
        "{configs}/topologies/root-ports-acs.toml: device 'rp1': a pcie-root-port needs "
        "a PCIe root "
        "bus; machine pc is pc (conventional PCI): use q35"),
    Bad("marker", (pytest.mark.qemu_args("-netdev", "user,id=x"),),
        "{node}: @pytest.mark.qemu_args: -netdev 'user,id=x': user networking needs restrict=on"),
    Bad("marker", (pytest.mark.qemu_args("-netdev", "socket,id=x,connect=:1234"),),
        "{node}: @pytest.mark.qemu_args: -netdev 'socket,id=x,connect=:1234': only user networking "
        "is allowed (a 'socket' backend reaches outside)"),
    Bad("marker", (pytest.mark.qemu_args(
        "-netdev", f"user,id=x,restrict=on,hostfwd=tcp:{EVERY}:2222-:22"),),
        "{node}: @pytest.mark.qemu_args: -netdev "
        f"'user,id=x,restrict=on,hostfwd=tcp:{EVERY}:2222-:22': hostfwd must bind 127.0.0.1, not "
        f"{EVERY}"),
    Bad("marker", (pytest.mark.qemu_args("-s"),),
        "{node}: @pytest.mark.qemu_args: -s: not a QEMU option cocolab allows a test to add "
        f"(allowed: {QEMU_OPTS})"),
    Bad("marker", (pytest.mark.qemu_args("-gdb", "tcp::1234"),),
        "{node}: @pytest.mark.qemu_args: -gdb: not a QEMU option cocolab allows a test to add "
        f"(allowed: {QEMU_OPTS})"),
    Bad("marker", (pytest.mark.qemu_args("-serial", "telnet::4444,server=on"),),
        "{node}: @pytest.mark.qemu_args: -serial 'telnet::4444,server=on': serial ports are "
        "chardev:ID, file:PATH, null or none: they stay off the network"),
    Bad("marker", (pytest.mark.qemu_args("-object", "input-barrier,id=b,name=g"),),
        "{node}: @pytest.mark.qemu_args: -object 'input-barrier,id=b,name=g': object type "
        "'input-barrier' is not one cocolab allows ("
        + ", ".join(sorted(OBJECT_TYPES)) + ")"),
    # -- topology files (@pytest.mark.topology(PATH)) --------------------------------------
    Bad("topology", "", "{node}: @pytest.mark.topology: {file}: the file is empty"),
    Bad("topology", 'description = "nothing"\n',
        "{node}: @pytest.mark.topology: {file}: no [[device]] entries; a topology "
        "declares at least "
        "one device (see qemu-configs/topologies/flat.toml)"),
    Bad("topology", b'description = "\xff"\n' + _dev().encode(),
        "{node}: @pytest.mark.topology: {file}: not UTF-8 text (byte 15); TOML files are UTF-8"),
    Bad("topology", '[[device]]\nid = "d"\n',
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'model' is missing; choose one of "
        "{models}"),
    Bad("topology", _dev(model="nosuchdevice"),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'model' is 'nosuchdevice'; choose "
        "one of {models}"),
    Bad("topology", _dev('colour = "red"\n'),
        "{node}: @pytest.mark.topology: {file}: device[0]: unknown key 'colour'; valid keys: acs, "
        "addr, backend, bus, chassis, disable-legacy, disable-modern, id, iommu_platform, model, "
        "multifunction, packed, personality, shpc, slot, spdm"),
    Bad("topology", _dev('backend = "vhost-user-blk"\n', model="virtio-rng-pci"),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'backend' is 'vhost-user-blk'; "
        "a virtio-rng-pci may have backend = 'vhost-user-rng'"),
    Bad("topology", _dev('backend = "vhost-user-rng"\n'),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'backend' does not apply to edu; "
        "its properties: none"),
    Bad("topology", _dev('personality = "good"\n', model="virtio-rng-pci"),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'personality' needs key "
        "'backend' (backend = 'vhost-user-rng')"),
    Bad("topology", _dev('backend = "vhost-user-rng"\ndisable-legacy = true\n',
                         model="virtio-rng-pci"),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'disable-legacy': QEMU's "
        "vhost-user-rng-pci is modern-only (it has no legacy interface to switch); drop the key"),
    Bad("topology", _dev(ident="Disk"),
        "{node}: @pytest.mark.topology: {file}: device 'Disk': key 'id' must be "
        "lower-case letters, "
        "digits and '-'"),
    Bad("topology", _dev() + _dev(),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'id' repeats an earlier "
        "device's id"),
    Bad("topology", _dev('addr = "zz"\n'),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'addr' is 'zz'; write SLOT or "
        "SLOT.FUNCTION in hex, slot 00-1f, function 0-7 (e.g. '05.1')"),
    Bad("topology", _dev('addr = "00.0"\n'),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'addr' 00.0 is taken: the host "
        "bridge (00.0) on q35; choose another slot (or leave 'addr' out)"),
    Bad("topology", _dev('addr = "1f.0"\n'),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'addr' 1f.0 is taken: "
        "the ICH9 LPC, "
        "SATA and SMBus functions on q35; choose another slot (or leave 'addr' out)"),
    Bad("topology", 'machine = "pc"\n' + _dev('addr = "01.0"\n'),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'addr' 01.0 is taken: "
        "the PIIX3 ISA, "
        "IDE, USB and ACPI functions on pc; choose another slot (or leave 'addr' out)"),
    Bad("topology", _dev('bus = ""\n'),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'bus' is empty; leave it "
        "out for the "
        "root bus"),
    Bad("topology", _dev('bus = "d"\n'),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'bus' makes a loop (d -> d); every "
        "chain of 'bus' keys must end at the root bus"),
    Bad("topology", _dev('bus = "nowhere"\n'),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'bus' is 'nowhere', which is no "
        "device here; leave 'bus' out for the root bus, or name a bus device: none (no "
        "bridge, port "
        "or xHCI)"),
    Bad("topology", _dev('bus = "b"\n', "pci-bridge", "a").replace("[[device]]",
        "[[device]]\nchassis = 1", 1) + _dev('bus = "a"\nchassis = 2\n', "pci-bridge", "b"),

        "{node}: @pytest.mark.topology: {file}: device 'a': key 'bus' makes a loop (a -> b -> a); "
        "every chain of 'bus' keys must end at the root bus"),
    Bad("topology", _dev("", "pci-bridge"),
        "{node}: @pytest.mark.topology: {file}: device 'd': a pci-bridge needs key 'chassis' (a "
        "number unique among bridges and ports)"),
    Bad("topology", _chain(51),
        "{node}: @pytest.mark.topology: {file}: device 'b50': sits 50 bridges deep; QEMU nests at "
        "most 49"),
    Bad("topology", _fan(9, 30),
        "{node}: @pytest.mark.topology: {file}: 279 bridges and ports make 279 buses; bus numbers "
        "allow at most 255 below the root"),
    Bad("topology", 'machine = "nosuch"\n' + _dev(),
        "{node}: @pytest.mark.topology: {file}: key 'machine' is 'nosuch'; choose one of "
        "{machines}"),
    Bad("topology", _dev(model="usb-kbd"),
        "{node}: @pytest.mark.topology: {file}: device 'd': key 'bus' must name a qemu-xhci "
        "controller for a USB device (usb-kbd)"),
    # -- machine files (@pytest.mark.machine(PATH)) ----------------------------------------
    Bad("machine", "", "{node}: @pytest.mark.machine: {file}: the file is empty"),
    Bad("machine", 'type = "virt"\n',
        "{node}: @pytest.mark.machine: {file}: key 'type' is 'virt'; choose one of q35, "
        "pc, microvm"),
    Bad("machine", 'viommu = "smmuv3"\n',
        "{node}: @pytest.mark.machine: {file}: key 'viommu' is 'smmuv3'; choose one of '', "
        "intel-iommu, amd-iommu, virtio-iommu"),
    Bad("machine", 'type = "pc"\nviommu = "intel-iommu"\n',
        "{node}: @pytest.mark.machine: {file}: key 'viommu': intel-iommu needs type q35, not pc"),
    Bad("machine", 'type = "microvm"\ncc = "tdx"\n',
        "{node}: @pytest.mark.machine: {file}: key 'cc': a tdx guest needs type q35, not microvm"),
    Bad("machine", 'colour = "red"\n',
        "{node}: @pytest.mark.machine: {file}: unknown key 'colour'; valid keys: cc, cmdline, "
        "description, kconfig, modules, options, type, viommu, viommu_options"),
    Bad("machine", 'cmdline = "quiet"\n',
        "{node}: @pytest.mark.machine: {file}: key 'cmdline' must be list, not str"),
    Bad("machine", 'kconfig = ["intel_iommu"]\n',
        "{node}: @pytest.mark.machine: {file}: key 'kconfig': 'intel_iommu' is not NAME, "
        "NAME=y, NAME=m or NAME=n"),
]


class SubprocessStarted(AssertionError):
    pass


PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn",
                            "os.exec", "os.spawn", "os.system", "pty.spawn"})
"""The audit events (PEP 578) of every way Python starts a process."""
_refusing: list[bool] = []


def _refuse_processes(event: str, args: tuple[object, ...]) -> None:
    if _refusing and event in PROCESS_EVENTS:
        raise SubprocessStarted(f"bad input started a process: {event} {args!r}"[:300])


sys.addaudithook(_refuse_processes)  # for the life of the interpreter; armed per test


@pytest.fixture
def no_subprocess() -> Iterator[None]:
    """Validation starts nothing: any process (a QEMU, setpriv, apt, depmod), whether through
    subprocess, os.fork, os.posix_spawn, os.system or an exec, fails the test."""
    _refusing.append(True)
    try:
        yield
    finally:
        _refusing.pop()


def test_the_guard_sees_every_way_to_start_a_process(no_subprocess: None) -> None:
    """The counterpart: each door the guard watches, opened, is refused."""
    for start in (lambda: subprocess.run(["true"], check=False), os.fork,
                  lambda: os.posix_spawn("/bin/true", ["true"], {}),
                  lambda: os.system("true")):
        with pytest.raises(SubprocessStarted):
            start()


def _files(tmp: Path) -> None:
    (tmp / "dir.toml").mkdir()
    (tmp / "text").write_text("hello\n")
    (tmp / "binary").write_bytes(bytes(range(256)) * 4)
    fake_bzimage(tmp / "bzImage", "6.99.0-fake")
    (tmp / "bad.toml").write_text("memory_mib = 0\n")


def _cli(command: str, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    status = cli.main([command, *argv])
    err = capsys.readouterr().err
    assert status == 1, f"cocolab {command} {argv} exited {status}"
    assert err.startswith("cocolab: "), err
    return err.removeprefix("cocolab: ").rstrip("\n")


class _Item:
    """What the plugin's collection hook reads of a test item."""

    fixturenames = ("vm",)

    def __init__(self, marks: tuple[pytest.MarkDecorator, ...]):
        self.nodeid = NODE
        self.stash = pytest.Stash()
        self._marks = [m.mark for m in marks]

    def iter_markers(self, name: str):
        return (m for m in self._marks if m.name == name)

    def get_closest_marker(self, name: str):
        return next(self.iter_markers(name), None)

    def add_marker(self, mark: object) -> None:
        pass


def _collect(marks: tuple[pytest.MarkDecorator, ...], tmp: Path) -> str:
    rig = Rig(RigOptions())
    config = SimpleNamespace(stash=pytest.Stash())
    config.stash[plugin.RIG] = rig
    config.stash[plugin.POOL] = VMPool(rig, tmp / "vms")
    with pytest.raises(pytest.UsageError) as info:
        plugin.pytest_collection_modifyitems(config, [_Item(marks)])  # type: ignore[arg-type]
    return str(info.value)


def answer(bad: Bad, tmp: Path, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> str:
    """What cocolab says to `bad`, through the door a user would use."""
    _files(tmp)
    fmt: Callable[[str], str] = lambda s: s.format(tmp=tmp, file=tmp / "given.toml")  # noqa: E731
    file = tmp / "given.toml"
    if isinstance(bad.given, (str, bytes)):
        file.write_bytes(bad.given.encode() if isinstance(bad.given, str) else bad.given)
    match bad.source:
        case "lane":
            return _cli("setup", ("--lane", str(file), *bad.args), capsys)
        case "option":
            return _cli("setup", tuple(map(fmt, bad.given)), capsys)  # type: ignore[arg-type]
        case "env":
            for name, value in bad.given.items():  # type: ignore[attr-defined]
                monkeypatch.setenv(name, fmt(value))
            return _cli("setup", (), capsys)
        case "cli":
            return _cli("shell", tuple(map(fmt, bad.given)), capsys)  # type: ignore[arg-type]
        case "build":
            return _cli("build", tuple(map(fmt, bad.given)), capsys)  # type: ignore[arg-type]
        case "marker":
            return _collect(bad.given, tmp)  # type: ignore[arg-type]
        case "topology" | "machine":
            return _collect((getattr(pytest.mark, bad.source)(str(file)),), tmp)
    raise ValueError(bad.source)


def _id(bad: Bad) -> str:
    given = bad.given if isinstance(bad.given, (str, bytes)) else repr(bad.given)
    text = given.decode(errors="replace") if isinstance(given, bytes) else str(given)
    return f"{bad.source}:{text.strip()[:60]}"


@pytest.mark.parametrize("bad", CORPUS, ids=_id)
def test_bad_input_gets_one_exact_line(bad: Bad, tmp_path: Path, no_subprocess: None,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.process_time()  # CPU time: a loaded host does not inflate it
    said = answer(bad, tmp_path, capsys, monkeypatch)
    took = time.process_time() - start
    if os.environ.get("COCOLAB_PRINT_CORPUS") == "1":
        with capsys.disabled():
            print(f"\n{bad.source} {bad.given!r}\n  -> {said}")
        return
    expected = bad.says.format(tmp=tmp_path, file=tmp_path / "given.toml", lanes=LANES,
                               configs=CONFIGS_DIR,
                               machines=MACHINES, topologies=TOPOLOGIES, node=NODE,
                               models=", ".join(sorted(MODELS)))
    assert said == expected
    assert "\n" not in said and "Traceback" not in said
    assert took < 2.0, f"answered with {took:.2f} s of CPU"


def test_the_corpus_covers_every_source() -> None:
    by_source: dict[str, int] = {}
    for bad in CORPUS:
        by_source[bad.source] = by_source.get(bad.source, 0) + 1
    assert set(by_source) == {"lane", "option", "env", "cli", "build", "marker", "topology",
                              "machine"}
    assert len(CORPUS) >= 60


def test_the_guard_sees_a_started_qemu(no_subprocess: None) -> None:
    """The counterpart: input good enough to get past validation does start QEMU (to probe
    it), and the guard catches that."""
    with pytest.raises(SubprocessStarted, match="no-qemu"):
        cli.main(["doctor", "--qemu", str(Path(__file__).parents[1] / "rig" / "no-qemu")])
