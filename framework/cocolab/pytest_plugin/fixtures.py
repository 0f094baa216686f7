"""The plugin's fixtures: `vm` (a booted guest matching the test's markers, shared with equal
requests; on a confidential lane every one proves what it is first), `cc_guest`, `plain_guest`
and `cocolab_rig`; and what decides, before any boot, that a test cannot have its VM (a skip
for what the host or kernel lacks, a rig failure for what stands in the way)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import NoReturn

import pytest

from cocolab.errors import (
    CocolabError,
    MissingCCHost,
    MissingQemuFeature,
    RigBug,
    VMError,
)
from cocolab.guest import Guest
from cocolab.guest.cc import SIMULATED, CCProof, lane_proof
from cocolab.kernel.kconfig import unmet as kconfig_unmet
from cocolab.pytest_plugin.keys import (
    ITEM_BUNDLE,
    ITEM_CALL,
    ITEM_REQUEST,
    ITEM_RIG_FAILED,
    ITEM_SHARE,
    ITEM_VM,
    POOL,
    RIG,
)
from cocolab.pytest_plugin.markers import (
    VMRequest,
    kconfig_requirements,
    vm_request,
)
from cocolab.pytest_plugin.pool import VMPool
from cocolab.rig import Rig


def _lane_gate(rig: Rig) -> None:
    """A confidential lane boots nothing on a host that cannot run its guests: every VM test
    errors (or with --no-strict-lane skips), saying what the host lacks."""
    if rig.lane.hardware_cc:
        problems = rig.cc_problems(rig.lane.cc)
        if problems:
            raise MissingCCHost(f"lane {rig.lane.name} needs a {rig.lane.cc.upper()} host: "
                                + "; ".join(problems))


def _kernel_gate(item: pytest.Item, rig: Rig, vm_req: VMRequest) -> None:
    """Skip, naming each option, a test whose kernel lacks what its markers or its machine
    (a vIOMMU's driver, CC guest support) need."""
    machine, _, _ = rig.layout(vm_req.machine, vm_req.topology)
    unmet = kconfig_unmet(rig.kernel.kconfig, kconfig_requirements(item))
    unmet += [f"{line} (for machine {machine.name})"
              for line in kconfig_unmet(rig.kernel.kconfig, list(machine.kconfig))]
    if unmet:
        pytest.skip(f"kernel {rig.kernel.release} ({rig.kernel_spec}): " + "; ".join(unmet)
                    + ". Build a kernel with it and pass --kernel, or choose another debian:"
                      "<suite>")


def _setup_problem(item: pytest.Item, rig: Rig, vm_req: VMRequest) -> str | None:
    """Why this test cannot have a VM, decided before any boot: a skip (raised) for what this
    host or kernel lacks, the returned line for a host, kernel or config in the way."""
    try:
        _lane_gate(rig)
        rig.preflight()
        _kernel_gate(item, rig, vm_req)
        # A bad machine or topology, a QEMU lacking a device, a host that cannot run the CC
        # guest, then no accelerator or kernel: each is one clear line, before any boot.
        rig.plan(vm_req.cmdline, vm_req.qemu_args, vm_req.modules, vm_req.machine,
                 vm_req.topology)
    except (MissingQemuFeature, MissingCCHost) as exc:
        if rig.strict:
            return f"cocolab: {exc} ({rig.strict}: what a test needs and the host lacks is an " \
                   "error; --no-strict-lane skips instead)"
        pytest.skip(str(exc))
    except VMError:
        raise
    except CocolabError as exc:
        return f"cocolab: {exc}"
    return None


@pytest.fixture
def vm(request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A booted guest matching this test's markers (shared with equal requests)."""
    item = request.node
    rig, pool = request.config.stash[RIG], request.config.stash[POOL]
    vm_req = item.stash.get(ITEM_REQUEST, None) or vm_request(item)
    try:
        problem = _setup_problem(item, rig, vm_req)
    except BaseException:
        if not vm_req.fresh:
            give_back(item, pool, vm_req)  # this test will not use its share of the VM
        raise
    if problem is not None:
        if not vm_req.fresh:
            give_back(item, pool, vm_req)
        rig_failure(item, problem)
    if vm_req.fresh:
        yield from _fresh(item, rig, pool, vm_req)
    else:
        yield from _shared(item, rig, pool, vm_req)


def _fresh(item: pytest.Item, rig: Rig, pool: VMPool, vm_req: VMRequest) -> Iterator[Guest]:
    booted = pool.boot(vm_req, item.nodeid)
    item.stash[ITEM_VM] = booted
    try:
        _prove(item, rig, booted)
        yield booted
        if _call_passed(item):
            booted.check_sidecars()
    finally:
        booted.shutdown()


def _shared(item: pytest.Item, rig: Rig, pool: VMPool, vm_req: VMRequest) -> Iterator[Guest]:
    failure = pool.failures.get(vm_req.key())
    if failure is not None and failure.nodeid != item.nodeid:  # else: booted ahead for it
        give_back(item, pool, vm_req)
        item.stash[ITEM_BUNDLE] = failure.bundle or failure.workdir  # the first test's bundle
        first = failure.error.message.splitlines()[0]
        where = f"; bundle: {failure.bundle}" if failure.bundle else ""
        rig_failure(item, f"cocolab: RIG FAILURE: its VM ({vm_req.describe()}) failed to boot "
                    f"in {failure.nodeid}: {first}{where}")
    retired = pool.retired
    try:
        shared = pool.acquire(vm_req, item.nodeid)
    except BaseException:
        give_back(item, pool, vm_req)
        raise
    if pool.retired != retired:
        warnings.warn(CocolabWarning(pool.retired), stacklevel=1)
    item.stash[ITEM_VM] = shared
    shared.dmesg.forget()  # per-test facade state starts fresh on a shared VM
    shared.forget_sidecar_errors()
    try:
        _prove(item, rig, shared)
        yield shared
        if _call_passed(item):
            # a guest that stopped, or a sidecar that failed, during this test: a rig failure
            shared.check_alive()
            shared.check_sidecars()
    finally:
        give_back(item, pool, vm_req)


def _prove(item: pytest.Item, rig: Rig, vm: Guest) -> None:
    """On a confidential lane every guest proves what it is before any test uses it (once
    per VM): a hardware lane's must be the CC guest it asked for, a simulated lane's must
    show the simulation took effect. One that cannot is a rig failure for each of its tests:
    no test, CC or not, runs on a guest that is not what its lane says."""
    lane = rig.lane
    if not lane.cc:
        return
    proof = lane_proof(vm, lane.cc, lane.simulated)
    if proof.kind == lane.cc:
        return
    if lane.simulated:
        rig_failure(item, f"cocolab: RIG FAILURE: lane {lane.name} asks for a simulated "
                    f"{lane.cc} guest but the guest did not show it (the cc-sim patch's line, "
                    f"the policy line it causes, and no hardware evidence): {proof}; "
                    + (f"is its kernel built with the lane's patches ({', '.join(lane.patches)})?"
                       if lane.patches else "the lane names no patch that would simulate it"))
    rig_failure(item, f"cocolab: RIG FAILURE: lane {lane.name} asks for a {lane.cc} guest but "
                f"the guest is {proof}")


def rig_failure(item: pytest.Item, message: str) -> NoReturn:
    """Fail `item` for a reason that is not the kernel's (a host, kernel fetch, image or an
    earlier boot in the way): recorded as a rig failure, whichever phase it is in."""
    item.stash[ITEM_RIG_FAILED] = True
    pytest.fail(message, pytrace=False)


def is_rig_failure(item: pytest.Item, report: pytest.TestReport,
                    call: pytest.CallInfo[None]) -> bool:
    """The VM misbehaved (any phase), cocolab could not set the test up (a CocolabError in
    setup: a kernel fetch, the image, the host), or the rig said so (`rig_failure`)."""
    error = call.excinfo.value if call.excinfo is not None else None
    return isinstance(error, (VMError, RigBug)) or item.stash.get(ITEM_RIG_FAILED, False) or (
        report.when == "setup" and isinstance(error, CocolabError))


def give_back(item: pytest.Item, pool: VMPool, vm_req: VMRequest) -> None:
    if item.stash.get(ITEM_SHARE, False):
        item.stash[ITEM_SHARE] = False
        pool.release(vm_req)


def _call_passed(item: pytest.Item) -> bool:
    report = item.stash.get(ITEM_CALL, None)
    return report is not None and report.passed


class CocolabWarning(UserWarning):
    """The rig changed course during the run (KVM retired, for one); the run goes on."""


@pytest.fixture
def cc_guest(request: pytest.FixtureRequest, cocolab_rig: Rig) -> CCProof:
    """The guest's proof that it is confidential. Skips on a non-CC lane (before booting); on
    a CC lane a guest that cannot prove it is a test *error*: a CC test must never pass on a
    plain guest. Requests `vm` itself, so tests list it first or not at all."""
    lane = cocolab_rig.lane
    if not lane.cc:
        pytest.skip(f"lane {lane.name} boots a non-confidential guest; this test needs a TDX "
                    "or SEV-SNP guest: run it on such a host with --lane tdx or --lane snp, "
                    "or the policy tests on a simulated one with --lane cc-sim-tdx")
    hardware = request.node.get_closest_marker("cc_hardware")
    if lane.simulated and hardware is not None:
        why = hardware.args[0] if hardware.args else "it needs the hardware"
        pytest.skip(f"needs a hardware {lane.cc.upper()} guest ({why}); lane {lane.name} is "
                    f"simulated ({SIMULATED}): run it with --lane {lane.cc} on a "
                    f"{lane.cc.upper()} host")
    vm: Guest = request.getfixturevalue("vm")  # proven by it on a confidential lane
    if vm.cc is None or vm.cc.kind != lane.cc:
        raise RigBug(f"the vm fixture let an unproven guest through on lane {lane.name}")
    return vm.cc


@pytest.fixture
def plain_guest(cocolab_rig: Rig) -> None:
    """The counterpart of `cc_guest`: a test of what a non-confidential guest does skips, before
    booting, on a lane whose guests are confidential (simulated ones included)."""
    lane = cocolab_rig.lane
    if lane.cc:
        pytest.skip(f"counterpart of a confidential-guest test: runs on non-confidential lanes; "
                    f"lane {lane.name} boots {lane.cc_words} guests")


@pytest.fixture(scope="session")
def cocolab_rig(pytestconfig: pytest.Config) -> Rig:
    """The resolved rig (lane, kernel, QEMU, accelerator) of this run."""
    return pytestconfig.stash[RIG]
