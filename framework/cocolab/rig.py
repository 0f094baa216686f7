"""The rig: a lane plus command-line/environment overrides, resolved on first use.

Shared by the pytest plugin and the CLI, so `cocolab shell` boots exactly what a test boots.
Precedence of every setting: command-line option > COCOLAB_* environment variable > lane file.
Nothing is probed at construction; each fact is resolved (and cached) when first asked for.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from cocolab.config import Lane, load_lane
from cocolab.constants import ACCELS
from cocolab.devices import BACKENDS
from cocolab.errors import (
    CocolabError,
    ConfigError,
    HostError,
    ImageError,
    KernelError,
    MissingCCHost,
    MissingQemuFeature,
    VMError,
    present,
    said,
)
from cocolab.guest import Guest, ModuleStore, Supplies
from cocolab.guest_image import GuestImage, build_guest_image, build_proof_initrd
from cocolab.guest_image.build import (
    carried_modules,
    cma_requester,
    missing_modules,
    module_store_for,
    read_modules_list,
)
from cocolab.host import AccelChoice, QemuInfo, choose_accel, find_qemu, probe_qemu
from cocolab.host.accel import ProofBoot, retire_kvm
from cocolab.host.cc import FirmwareSearch, find_firmware, host_cbit, host_problems
from cocolab.host.tsc import host_tsc_khz
from cocolab.kernel import Kernel, KernelSpec, parse_kernel_spec, resolve_kernel
from cocolab.kernel.build import is_source_tree
from cocolab.kernel.needs import Need, rig_lacks
from cocolab.kernel.resolve import check_image_spec
from cocolab.kernel.spec import BuildTreeSpec, ImageSpec, SourceSpec, is_build_output
from cocolab.options import split_append
from cocolab.qemu import VMConfig
from cocolab.qemu.argv import spdm_devices
from cocolab.qemu.cc import cc_machine_options, cc_platform_args
from cocolab.qemu.topology import backend_specs, topology_args, viommu_args
from cocolab.sidecars import BackendSidecar, ResponderSidecar
from cocolab.topology import (
    ExpectedView,
    Machine,
    Topology,
    expected_view,
    load_machine,
    load_topology,
)
from cocolab.vm.proof import console_boot, proof_boot
from cocolab.vm.sidecar import Sidecar

T = TypeVar("T")
MAX_BOOT_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Setting:
    value: str | None
    source: str
    """Where the value came from: '--kernel', 'COCOLAB_KERNEL', "<lane file>: key 'kernel'"."""


def pick(cli: str | None, option: str, env: str, lane: Lane, key: str) -> Setting:
    if cli:
        return Setting(cli, option)
    if os.environ.get(env):
        return Setting(os.environ[env], env)
    return Setting(getattr(lane, key), f"{lane.source}: key {key!r}")


@dataclass(frozen=True)
class RigOptions:
    lane: str | None = None
    kernel: str | None = None
    kernel_config: str | None = None
    modules: str | None = None
    module_debug: bool = False
    """A build tree's modules keep their debug info in the guest."""
    qemu: str | None = None
    accel: str | None = None
    firmware: str | None = None
    append: tuple[str, ...] = ()
    boot_timeout: float = 120.0
    refresh: bool = False
    panic_on_warn: bool = False
    """Prove the accelerator and probe QEMU again instead of trusting cached verdicts."""
    strict_lane: bool | None = None
    """--strict-lane (True) / --no-strict-lane (False); None: as the lane says."""
    snapshots: bool = True
    """Restore booted guests from snapshots (False: --no-snapshots, every VM boots cold)."""

    @classmethod
    def parsed(cls, get: Callable[[str], Any]) -> RigOptions:
        """The options of the shared command line (options.OPTIONS) as `get(dest)` returns
        them, from pytest's config or the CLI's namespace alike."""
        return cls(lane=get("lane"), kernel=get("kernel"), kernel_config=get("kernel_config"),
                   modules=get("modules"), module_debug=bool(get("module_debug")),
                   qemu=get("qemu"), accel=get("accel"),
                   firmware=get("firmware"), append=split_append(get("append") or []),
                   boot_timeout=get("boot_timeout"), panic_on_warn=get("panic_on_warn"),
                   snapshots=not get("no_snapshots"))


class Rig:
    def __init__(self, options: RigOptions):
        if not 0 < options.boot_timeout <= MAX_BOOT_TIMEOUT_S:  # also refuses nan
            raise ConfigError(f"--boot-timeout {options.boot_timeout:g}: give seconds above 0 "
                              f"and at most {MAX_BOOT_TIMEOUT_S:g} (default 120)")
        self.options = options
        self._made: dict[str, object] = {}
        self.build_kconfig: list[str] = []
        """Options the collected tests ask a kernel cocolab builds to have (a selftest
        target's `config`): added to its build request, before it is built."""
        if options.lane:
            self.lane = load_lane(options.lane, "--lane")
        elif os.environ.get("COCOLAB_LANE"):
            self.lane = load_lane(os.environ["COCOLAB_LANE"], "COCOLAB_LANE")
        else:
            self.lane = load_lane("default")
        self.kernel_setting = pick(options.kernel, "--kernel", "COCOLAB_KERNEL", self.lane,
                                   "kernel")
        self.qemu_setting = pick(options.qemu, "--qemu", "COCOLAB_QEMU", self.lane, "qemu")
        self.accel_setting = pick(options.accel, "--accel", "COCOLAB_ACCEL", self.lane,
                                  "accel")
        if self.accel_requested not in ACCELS:
            raise ConfigError(f"{said(self.accel_setting.source, self.accel_requested)}: no "
                              f"such accelerator; choose one of {', '.join(ACCELS)}")
        lane = self.lane
        if options.firmware and not lane.hardware_cc:
            raise ConfigError(f"--firmware {options.firmware}: applies to confidential lanes "
                              f"only; lane {lane.name} boots "
                              f"{'simulated CC' if lane.simulated else 'plain'} guests (use "
                              "--lane tdx or --lane snp)")
        machine_cc = load_machine(lane.machine).cc
        if lane.hardware_cc and machine_cc != lane.cc:
            raise ConfigError(f"{lane.source}: key 'cc' is {lane.cc!r} but machine "
                              f"{lane.machine!r} boots no {lane.cc} guest")
        if lane.simulated and machine_cc:
            raise ConfigError(f"{lane.source}: a simulated lane boots a plain machine; machine "
                              f"{lane.machine!r} boots a real {machine_cc} guest")

    @cached_property
    def kernel_spec(self) -> KernelSpec:
        text = present(self.kernel_setting.value, "the lane's kernel")
        tree = Path(text).expanduser()
        if (self.lane.patches or self.lane.kconfig) and is_source_tree(tree) \
                and not is_build_output(tree):  # a source tree, built or not: built here
            return self._with_lane_build(SourceSpec(str(tree.resolve())), text)
        spec = parse_kernel_spec(text, config=self.options.kernel_config,
                                 modules=self.options.modules, source=self.kernel_setting.source,
                                 module_debug=self.options.module_debug)
        return self._with_lane_build(spec, text)

    def _with_lane_build(self, spec: KernelSpec, text: str) -> KernelSpec:
        """A lane that builds its kernel with patches builds a user's source tree with them
        too; a prebuilt kernel (a bzImage, a Debian package) cannot carry them."""
        lane = self.lane
        if not (lane.patches or lane.kconfig):
            return spec
        if isinstance(spec, SourceSpec):
            return SourceSpec(spec.source, (*lane.patch_paths, *spec.patches),
                              (*lane.kconfig, *spec.kconfig))
        if isinstance(spec, BuildTreeSpec):  # an O= output (kernel_spec took source trees)
            return spec
        raise ConfigError(f"{said(self.kernel_setting.source, text)}: lane {lane.name} builds "
                          f"its kernel with {', '.join(lane.patches) or 'its own options'}, "
                          "which a prebuilt kernel lacks; give a source to build (build:debian:"
                          "X.Y or a kernel tree), or a tree `cocolab build --lane "
                          f"{lane.name}` made")

    def check_inputs(self) -> None:
        """Everything the user gave, judged before any test: the kernel spec and the files it
        names (read, never run), and a QEMU they chose: a file that is no program is refused
        without running it, a program that is no QEMU by its (cached) capability probe. One
        ConfigError naming its source; no network, no boot."""
        spec = self.kernel_spec
        if isinstance(spec, ImageSpec):
            check_image_spec(spec, self.kernel_setting.source)
        if self.qemu_setting.value:  # a QEMU found on PATH is the host's, not input
            try:
                _ = self.qemu_path  # find_qemu's messages name the source themselves
            except HostError as exc:
                raise ConfigError(str(exc)) from None
            try:
                _ = self.qemu_info  # probes `path`: '--qemu /bin/true' is input at fault
            except HostError as exc:
                raise ConfigError(f"{said(self.qemu_setting.source, self.qemu_setting.value)}: "
                                  f"{exc}") from None

    @cached_property
    def qemu_path(self) -> str:
        return find_qemu(self.qemu_setting.value, self.qemu_setting.source)

    @cached_property
    def qemu_info(self) -> QemuInfo:
        return probe_qemu(self.qemu_path, refresh=self.options.refresh)

    @property
    def strict(self) -> str | None:
        """Why a missing host capability or QEMU feature is an error here, or None if it is
        a skip."""
        if self.options.strict_lane is not None:
            return "--strict-lane" if self.options.strict_lane else None
        if self.lane.cc:
            return (f"lane {self.lane.name} is a "
                    f"{'simulated ' if self.lane.simulated else ''}confidential lane")
        if self.lane.strict:
            return f"lane {self.lane.name} is strict ({self.lane.source})"
        return None

    @property
    def snapshots_off(self) -> str | None:
        """Why this run boots every VM cold, or None when VMs are restored from snapshots
        (a confidential machine on a plain lane is still booted cold, VM by VM)."""
        if not self.options.snapshots:
            return "--no-snapshots"
        if self.lane.hardware_cc:
            return (f"lane {self.lane.name} boots {self.lane.cc.upper()} guests, whose "
                    "encrypted memory QEMU cannot save: every VM boots cold")
        return None

    @property
    def accel_requested(self) -> str:
        return self.accel_setting.value or "auto"

    @cached_property
    def accel(self) -> AccelChoice:
        """The accelerator that boots this lane's kernel here (a proof boot, cached; none,
        and no kernel fetched for it, when TCG is asked for)."""
        if self.accel_requested == "tcg":
            return AccelChoice("tcg", said(self.accel_setting.source, "tcg"))
        kernel = self.kernel

        def prove(accel: str) -> ProofBoot:
            return proof_boot(self.qemu_path, kernel.image, build_proof_initrd(), accel)

        return choose_accel(self.qemu_path, self.accel_requested, kernel.image,
                            prove, source=self.accel_setting.source,
                            refresh=self.options.refresh)

    def boot_console(self, cmdline: tuple[str, ...], deadline_s: float) -> str:
        """The rig's kernel's console from power-on to userspace, booted with `cmdline` and a
        one-program initramfs (no guest image, no SSH): what a kernel reports at boot."""
        kernel = self.kernel
        verdict, console = console_boot(self.qemu_path, kernel.image, build_proof_initrd(),
                                        self.accel.accel, cmdline, deadline_s)
        if not verdict.reached:
            raise VMError(f"booting {kernel.release} with {' '.join(cmdline)} to read its "
                          f"console failed after {verdict.seconds:.1f}s: {verdict.detail}")
        return console

    def retire_kvm(self, why: str) -> AccelChoice:
        """KVM failed a real boot that its proof had passed: TCG from now on (and in the
        cache, for this host boot), and every VM planned afresh."""
        self.accel = retire_kvm(self.qemu_path, self.kernel.image, why)
        self.plan.cache_clear()
        return self.accel

    @property
    def kernel(self) -> Kernel:
        """The kernel, fetched once; a failure is kept too, so forty tests get one apt run
        and the same line naming where the kernel came from."""
        return self._once("kernel", lambda: resolve_kernel(self.build_spec),
                          f"{self.kernel_setting.source}: kernel {self.kernel_setting.value}")

    @property
    def build_spec(self) -> KernelSpec:
        """The kernel spec, with `build_kconfig` when cocolab builds the kernel."""
        spec = self.kernel_spec
        if isinstance(spec, SourceSpec) and self.build_kconfig:
            extra = tuple(o for o in self.build_kconfig if o not in spec.kconfig)
            return SourceSpec(spec.source, spec.patches, (*spec.kconfig, *extra))
        return spec

    def want_build_kconfig(self, options: list[str]) -> bool:
        """Ask a kernel cocolab has yet to build for `options`: True if they will be in its
        build request (a prebuilt kernel, or one already resolved, is as it is)."""
        if not isinstance(self.kernel_spec, SourceSpec) or "kernel" in self._made:
            return False
        self.build_kconfig += [o for o in options if o not in self.build_kconfig]
        return True

    @cached_property
    def _rig_lacks(self) -> list[Need]:
        return rig_lacks(self.kernel.kconfig)  # once a run, not once a test

    def preflight(self) -> None:
        """Refuse, before any boot, a kernel that lacks what the rig needs to boot its guest
        and reach it (kernel/needs.py): one line naming every missing option."""
        lacks = self._rig_lacks
        if lacks:
            names = ", ".join(f"CONFIG_{n.option}" for n in lacks)
            raise KernelError(f"kernel {self.kernel.release} ({self.kernel_spec}) lacks what "
                              f"cocolab needs to boot and reach its guest: {names}; "
                              "`cocolab kconfig` prints a fragment with them")

    @property
    def image(self) -> GuestImage:
        return self._once("image", lambda: build_guest_image(self.kernel), "the guest image")

    def image_for(self, modules: tuple[str, ...], boot: tuple[str, ...]) -> GuestImage:
        """The guest image for a VM whose /init loads `boot` (in which a test's `modules`
        marker is). A marker's module the kernel has neither built in nor built is a
        KernelError naming it, at plan time."""
        default = read_modules_list()
        extra = tuple(m for m in modules if m.replace("-", "_") not in default)
        missing = missing_modules(self.kernel, extra)
        if missing:
            raise KernelError(f"kernel {self.kernel.release} ({self.kernel_spec}) has no module "
                              f"{', '.join(missing)} (neither built in nor built as a module): "
                              "enable it (=m or =y) and rebuild, or drop it from the test's "
                              "modules marker")
        return self._once(f"image:{','.join(boot)}",
                          lambda: build_guest_image(self.kernel, boot), "the guest image")

    def _once(self, name: str, make: Callable[[], T], what: str) -> T:
        if name not in self._made:
            try:
                self._made[name] = make()
            except (KernelError, ImageError) as exc:
                self._made[name] = type(exc)(f"{what}: {exc}")
            except HostError as exc:
                self._made[name] = exc
        made = self._made[name]
        if isinstance(made, CocolabError):
            raise made
        return made  # type: ignore[return-value]

    @property
    def append(self) -> tuple[str, ...]:
        warn = ("panic_on_warn=1",) if self.options.panic_on_warn else ()
        return (*self.lane.append, *self.options.append, *warn)

    def guest(self, config: VMConfig, workdir: Path, name: str,
              view: ExpectedView | None = None) -> Guest:
        """A VM for `config` (not launched), with what runs beside it (an SPDM responder for
        each device that has one) and what its tests may copy in."""
        kernel, boot = self.kernel, config.modules

        def modules() -> ModuleStore | None:
            store = module_store_for(kernel, boot)
            return None if store is None else ModuleStore(
                store, frozenset(carried_modules(store, kernel.release, boot)))

        sidecars: list[Sidecar] = [ResponderSidecar(d) for d in spdm_devices(config.qemu_args)]
        sidecars += [BackendSidecar(spec.device, spec.backend, spec.personality)
                     for spec in config.backends]
        return Guest(config, workdir, kernel, self.image.keys, name=name, topology=view,
                     sidecars=sidecars, supplies=Supplies(modules, cma_requester))

    def vm_config(self, cmdline: tuple[str, ...] = (), qemu_args: tuple[str, ...] = (),
                  modules: tuple[str, ...] = ()) -> VMConfig:
        """The lane's VM, plus a test's own cmdline words, QEMU args and modules."""
        return self.plan(cmdline, qemu_args, modules)[0]

    @functools.cache  # noqa: B019 - one Rig per run; the fixture checks, the pool boots
    def plan(self, cmdline: tuple[str, ...] = (), qemu_args: tuple[str, ...] = (),
             modules: tuple[str, ...] = (), machine: str | None = None,
             topology: str | None = None) -> tuple[VMConfig, ExpectedView | None]:
        """The VM for a request, and the guest view its topology implies (if it has one).

        Raises ConfigError for a machine or topology that is not valid (see layout),
        MissingQemuFeature when this QEMU lacks a machine type or device model it needs, and
        MissingCCHost when the machine boots a TDX/SNP guest this host cannot run.
        """
        mach, topo, view = self.layout(machine, topology)
        self._require(mach, topo)
        cc_options, cc_args = self._cc(mach)
        microvm = mach.type == "microvm"
        clock = (f"tsc_early_khz={host_tsc_khz()}", "tsc=reliable") \
            if microvm and self.accel.accel == "tcg" else ()  # see host/tsc.py
        transport = "virtio_mmio" if microvm else "virtio_pci"
        wanted = tuple(dict.fromkeys((transport, *mach.modules, "virtio_net", *modules)))
        image = self.image_for(tuple(modules), wanted)
        return VMConfig(
            qemu=self.qemu_path,
            kernel=self.kernel.image,
            initrd=image.initrd,
            accel=self.accel.accel,
            machine=mach.type,
            machine_options=(*mach.options, *cc_options),
            memory_mib=self.lane.memory_mib,
            cpus=self.lane.cpus,
            cmdline=(*mach.cmdline, *clock, *self.append, *cmdline),
            modules=wanted,
            platform_args=(*cc_args, *viommu_args(mach)),
            qemu_args=(*(topology_args(view) if view else ()), *qemu_args),
            nic_model="virtio-net-device" if microvm else "virtio-net-pci",
            # A confidential guest refuses a virtio device without VIRTIO_F_ACCESS_PLATFORM
            # (virtio_features_ok(), since 5.19); QEMU's TDX/SNP machines turn it on
            # themselves, a simulated guest's plain q35 does not, and QEMU offers it on a
            # modern-only device alone ("supported by neither legacy nor transitional").
            nic_options=("disable-legacy=on", "iommu_platform=on") if self.lane.cc else (),
            cc=mach.cc,
            backends=backend_specs(view) if view else (),
            labels=(("lane", self.lane.name), ("kernel", str(self.kernel_spec)),
                    ("machine", mach.name), ("topology", topo.name if topo else "")),
        ), view

    def layout(self, machine: str | None = None, topology: str | None = None
               ) -> tuple[Machine, Topology | None, ExpectedView | None]:
        """The machine and topology of a request, read and laid out (files only: no QEMU).
        The machine is the marker's, else the topology's, else the lane's."""
        topo = load_topology(topology) if topology else None
        mach = load_machine(machine or (topo.machine if topo else None) or self.lane.machine)
        return mach, topo, expected_view(topo, mach) if topo else None

    def firmware(self, kind: str) -> FirmwareSearch:
        return find_firmware(kind, self.options.firmware, self.lane.firmware or None,
                             self.lane.source)

    @functools.cache  # noqa: B019 - one Rig per run; the answer does not change within it
    def cc_problems(self, kind: str) -> list[str]:
        """What keeps this host from booting a `kind` guest; empty when nothing does."""
        try:
            qemu: QemuInfo | None = self.qemu_info
        except HostError:
            qemu = None
        try:
            accel: AccelChoice | None = self.accel
        except HostError as exc:
            accel = AccelChoice("none", str(exc))
        return host_problems(kind, root=Path("/"), qemu=qemu, accel=accel,
                             firmware=self.firmware(kind))

    def _cc(self, machine: Machine) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if not machine.cc:
            return (), ()
        problems = self.cc_problems(machine.cc)
        if problems:
            raise MissingCCHost(f"machine {machine.name} needs a {machine.cc.upper()} host: "
                                + "; ".join(problems))
        firmware = present(self.firmware(machine.cc).found, "CC firmware (host_problems checks it)")
        cbit = host_cbit() if machine.cc == "snp" else None
        if machine.cc == "snp" and cbit is None:
            raise MissingCCHost("an SNP guest needs the host's C-bit position: /dev/cpu/0/cpuid "
                                "is unreadable (modprobe cpuid; run as root)")
        return (cc_machine_options(machine.cc),
                cc_platform_args(machine.cc, memory_mib=self.lane.memory_mib,
                                 firmware=firmware, cbit=cbit))

    @staticmethod
    def _require_backends(machine: Machine, topo: Topology | None) -> None:
        """A device's `personality` must be one its back-end has, and a vhost-user back-end
        needs guest RAM it can map: not a TDX or SNP guest's private memory."""
        served = [d for d in topo.devices if d.prop("backend")] if topo else []
        for dev in served:
            backend = BACKENDS[dev.prop("backend")]
            name = dev.prop("personality", "good")
            if name not in {p.value for p in backend.personalities}:
                have = ", ".join(sorted(p.value for p in backend.personalities))
                raise ConfigError(f"{topo.source if topo else ''}: device {dev.id!r}: key "
                                  f"'personality' is {name!r}; a {dev.prop('backend')} "
                                  f"back-end has {have}")
        if served and machine.cc:
            raise MissingQemuFeature(
                f"machine {machine.name}: device {served[0].id!r} has a vhost-user back-end, "
                f"which maps guest RAM, and cocolab shares no {machine.cc.upper()} guest's "
                "RAM with one (its private memory is not a shared memfd); run these tests on "
                "the simulated lane, --lane cc-sim-tdx")

    def _require(self, machine: Machine, topo: Topology | None) -> None:
        info = self.qemu_info
        where = f"QEMU {info.version} ({info.binary})"
        if not info.has_machine(machine.type):
            raise MissingQemuFeature(f"{where} has no machine type {machine.type!r} (machine "
                                     f"{machine.name}); use another QEMU with --qemu")
        needed = [d.model.name for d in topo.devices] if topo else []
        if machine.viommu:
            needed.append("virtio-iommu-pci" if machine.viommu == "virtio-iommu"
                          else machine.viommu)
        missing = sorted({n for n in needed if not info.has_device(n)})
        for_what = f"topology {topo.name}" if topo else f"machine {machine.name}"
        if missing:
            raise MissingQemuFeature(f"{where} has no device {', '.join(missing)} (needed by "
                                     f"{for_what}); use a QEMU that has it (--qemu)")
        self._require_backends(machine, topo)
        spdm = [d.id for d in topo.devices if d.prop("spdm")] if topo else []
        if spdm and not info.has_property("nvme", "spdm_port"):
            raise MissingQemuFeature(
                f"{where}: its nvme has no spdm_port property (needed by {for_what}, device "
                f"{', '.join(spdm)}: SPDM over DOE); QEMU 9.1 or later has it. On Debian 12, "
                "./setup.sh installs QEMU 10 from bookworm-backports; else pass --qemu")
