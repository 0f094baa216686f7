"""The rig: a lane plus command-line/environment overrides, resolved on first use.

Shared by the pytest plugin and the CLI, so `cocolab shell` boots exactly what a test boots.
Precedence of every setting: command-line option > COCOLAB_* environment variable > lane file.
Nothing is probed at construction; each fact is resolved (and cached) when first asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from cocolab.config import Lane, load_lane
from cocolab.guest_image import GuestImage, build_guest_image
from cocolab.host import AccelChoice, QemuInfo, choose_accel, find_qemu, probe_qemu
from cocolab.kernel import Kernel, KernelSpec, parse_kernel_spec, resolve_kernel
from cocolab.qemu import VMConfig


@dataclass(frozen=True)
class Setting:
    value: str | None
    source: str
    """Where the value came from: '--kernel', 'COCOLAB_KERNEL', 'lane default (file)'."""


def pick(cli: str | None, option: str, env: str, lane_value: str | None, lane: Lane) -> Setting:
    if cli:
        return Setting(cli, option)
    if os.environ.get(env):
        return Setting(os.environ[env], env)
    return Setting(lane_value, f"lane {lane.name} ({lane.source})")


@dataclass(frozen=True)
class RigOptions:
    lane: str | None = None
    kernel: str | None = None
    kernel_config: str | None = None
    modules: str | None = None
    qemu: str | None = None
    accel: str | None = None
    append: tuple[str, ...] = ()
    boot_timeout: float = 120.0


class Rig:
    def __init__(self, options: RigOptions):
        self.options = options
        lane_name = options.lane or os.environ.get("COCOLAB_LANE") or "default"
        self.lane = load_lane(lane_name)
        self.kernel_setting = pick(options.kernel, "--kernel", "COCOLAB_KERNEL",
                                   self.lane.kernel, self.lane)
        self.qemu_setting = pick(options.qemu, "--qemu", "COCOLAB_QEMU", self.lane.qemu,
                                 self.lane)
        self.accel_setting = pick(options.accel, "--accel", "COCOLAB_ACCEL", self.lane.accel,
                                  self.lane)

    @cached_property
    def kernel_spec(self) -> KernelSpec:
        assert self.kernel_setting.value
        return parse_kernel_spec(self.kernel_setting.value, config=self.options.kernel_config,
                                 modules=self.options.modules, source=self.kernel_setting.source)

    @cached_property
    def qemu_path(self) -> str:
        return find_qemu(self.qemu_setting.value)

    @cached_property
    def qemu_info(self) -> QemuInfo:
        return probe_qemu(self.qemu_path)

    @cached_property
    def accel(self) -> AccelChoice:
        return choose_accel(self.qemu_path, self.accel_setting.value or "auto")

    @cached_property
    def kernel(self) -> Kernel:
        return resolve_kernel(self.kernel_spec)

    @cached_property
    def image(self) -> GuestImage:
        return build_guest_image(self.kernel)

    @property
    def append(self) -> tuple[str, ...]:
        return (*self.lane.append, *self.options.append)

    def vm_config(self, cmdline: tuple[str, ...] = (), qemu_args: tuple[str, ...] = (),
                  modules: tuple[str, ...] = ()) -> VMConfig:
        """The VM this rig boots, plus a test's own cmdline words, QEMU args and modules."""
        base_modules = ("virtio_pci", "virtio_net")
        return VMConfig(
            qemu=self.qemu_path,
            kernel=self.kernel.image,
            initrd=self.image.initrd,
            accel=self.accel.accel,
            machine=self.lane.machine,
            memory_mib=self.lane.memory_mib,
            cpus=self.lane.cpus,
            cmdline=(*self.append, *cmdline),
            modules=(*base_modules, *(m for m in modules if m not in base_modules)),
            qemu_args=qemu_args,
            labels=(("lane", self.lane.name), ("kernel", str(self.kernel_spec))),
        )
