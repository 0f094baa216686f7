"""cocolab's pytest plugin (entry point 'cocolab').

A test that takes the `vm` fixture gets a booted guest matching its markers. Tests with equal
requests share one VM; `@pytest.mark.fresh_vm` gets a private one. Everything the plugin keeps
lives in config.stash / item.stash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import os
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from cocolab import progress
from cocolab.errors import (
    CocolabError,
    ConfigError,
    MissingCCHost,
    MissingQemuFeature,
    PreconditionUnmet,
    RigBug,
    VMError,
)
from cocolab.guest import Guest
from cocolab.guest.cc import SIMULATED, CCProof, lane_proof
from cocolab.guest.kernel_warnings import KernelWarning, kernel_warnings
from cocolab.kernel.kconfig import unmet as kconfig_unmet
from cocolab.kernel.spec import SourceSpec
from cocolab.options import OPTIONS
from cocolab.pytest_plugin.bundle import write_bundle
from cocolab.pytest_plugin.markers import (
    MARKERS,
    VMRequest,
    kconfig_requirements,
    vm_request,
)
from cocolab.pytest_plugin.pool import VMPool, default_boot_ahead, spare_guests
from cocolab.pytest_plugin.record import BASELINE, BUNDLE, ResultsPlugin
from cocolab.pytest_plugin.shard import ShardPlugin, ShardSpec
from cocolab.results import RunFacts, plain_nodeid
from cocolab.rig import Rig, RigOptions

RIG = pytest.StashKey[Rig]()
POOL = pytest.StashKey[VMPool]()
RESULTS = pytest.StashKey[Path]()
ITEM_VM = pytest.StashKey[Guest]()
ITEM_REQUEST = pytest.StashKey[VMRequest]()
ITEM_BUNDLE = pytest.StashKey[Path]()
ITEM_CALL = pytest.StashKey[pytest.TestReport]()
ITEM_WARNINGS = pytest.StashKey[list[KernelWarning]]()
ITEM_SHARE = pytest.StashKey[bool]()
ITEM_RIG_FAILED = pytest.StashKey[bool]()
"""The test still holds its share of a shared VM (counted at collection, not yet released)."""
SHARD = pytest.StashKey["ShardPlugin"]()
STARTED = pytest.StashKey[str]()
SELECTED = pytest.StashKey[int]()
"""How many tests the run selected (after -k, -m and this shard's deselection)."""
WORKER_RIG = pytest.StashKey[list[str]]()
"""Under xdist: what the first worker that booted a VM booted it with (_rig_lines)."""
WORKER_SELECTION = pytest.StashKey[dict[str, Any]]()
"""Under xdist: the selection, shard and partition the workers collected (_selection)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cocolab", "cocolab: boot real kernels under QEMU")
    for opt in OPTIONS:
        group.addoption(opt.flag, dest="cocolab_" + opt.dest, help=opt.help, **dict(opt.kwargs))
    group.addoption("--destructive", dest="cocolab_destructive", action="store_true",
                    help="also run tests marked destructive (they kill their guest on purpose)")
    group.addoption("--kernel-warnings", dest="cocolab_kernel_warnings", default="fail",
                    choices=("fail", "report"),
                    help="a kernel WARNING, UBSAN, KASAN, lockdep, hung-task or RCU-stall report "
                         "during a test fails it (default), or is reported beside its result")
    group.addoption("--strict-lane", dest="cocolab_strict_lane", action="store_const",
                    const=True, default=None,
                    help="a host or QEMU that lacks what a test needs is an ERROR naming it, not "
                         "a skip (the default on confidential lanes and lanes with strict = true)")
    group.addoption("--no-strict-lane", dest="cocolab_strict_lane", action="store_const",
                    const=False, help="skip instead, even on such lanes (exploring a host)")
    group.addoption("--boot-ahead", dest="cocolab_boot_ahead", type=int, default=None,
                    metavar="N",
                    help="in a serial run, boot up to N of the VMs the next tests want at a "
                         "time while the current ones run (default: one per CPU, as many "
                         "as the memory holds, 0 on one CPU; 0 turns it off)")
    group.addoption("--results", dest="cocolab_results", default="results",
                    help="where VM logs, failure bundles and cocolab-results.json go "
                         "(default: ./results)")
    group.addoption("--shard", dest="cocolab_shard", metavar="I/N",
                    help="run the I-th of N shards of the selected tests; tests that share a "
                         "VM stay in one shard, shards are balanced by --durations-file")
    group.addoption("--durations-file", dest="cocolab_durations", metavar="FILE",
                    help="balance --shard by the durations in an earlier run's "
                         "cocolab-results.json (or merged shards'); give every shard the same "
                         "file (default: estimated from VMs and tests)")


def backstop_timeout(boot_timeout: float) -> float:
    """pytest-timeout's default for a cocolab run: a test may boot its VM (setup), run for a
    while, and shut it down; past this it hung, whatever cocolab's own deadlines missed."""
    return 2 * boot_timeout + BACKSTOP_EXTRA_S


BACKSTOP_EXTRA_S = 300.0


@pytest.hookimpl(wrapper=True)  # around xdist's, which makes an unset --dist "load"
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    """`-n N` alone means `--dist loadgroup`: the tests of one VM go to one worker, which
    boots (or restores) it once. A --dist the user gave is kept."""
    if getattr(config.option, "numprocesses", None) and config.option.dist == "no":
        config.option.dist = "loadgroup"
    return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist's controller, per worker: a worker derives loadgroup from its own command line
    (xdist's remote.setup_config), where an implied one is not; tell it."""
    node.workerinput["cocolab_dist"] = node.config.option.dist


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout reads its settings
def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", {})
    if workerinput.get("cocolab_dist") == "loadgroup":  # before xdist's worker collects
        config.option.loadgroup = True
    if (config.pluginmanager.hasplugin("timeout") and config.getoption("timeout") is None
            and not os.environ.get("PYTEST_TIMEOUT") and not config.getini("timeout")):
        config.option.timeout = backstop_timeout(config.getoption("cocolab_boot_timeout"))
    for signature, text in MARKERS.items():
        config.addinivalue_line("markers", f"{signature}: {text}")
    try:
        options = RigOptions.parsed(lambda dest: config.getoption("cocolab_" + dest))
        rig = Rig(dataclasses.replace(
            options, strict_lane=config.getoption("cocolab_strict_lane")))
        rig.check_inputs()
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    results = Path(config.getoption("cocolab_results")).resolve()
    blocked = next((p for p in (results, *results.parents) if p.exists() and not p.is_dir()),
                   None)
    if blocked is not None:
        raise pytest.UsageError(f"--results {config.getoption('cocolab_results')}: {blocked} "
                                "is a file, not a directory; give a directory for VM logs and "
                                "failure bundles")
    config.stash[RIG] = rig
    config.stash[RESULTS] = results
    config.stash[STARTED] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    ahead = config.getoption("cocolab_boot_ahead")
    if ahead is not None and ahead < 0:
        raise pytest.UsageError(f"--boot-ahead {ahead}: give 0 (off) or more VMs")
    if hasattr(config, "workerinput"):
        ahead = 0  # an xdist worker runs a share of the tests: it would boot others' VMs
    elif ahead is None:
        ahead = default_boot_ahead(rig.lane.memory_mib)
    config.stash[POOL] = VMPool(rig, results / "vms", boot_ahead=ahead,
                                hold=spare_guests(rig.lane.memory_mib))
    _register_shard_and_results(config, rig, results)
    _progress_to_terminal(config)


def _register_shard_and_results(config: pytest.Config, rig: Rig, results: Path) -> None:
    """--shard on the controller and on every xdist worker (each deselects alike); the
    results file on the controller, which sees every report."""
    durations = config.getoption("cocolab_durations")
    shard = None
    if config.getoption("cocolab_shard"):
        try:
            spec = ShardSpec.parse(config.getoption("cocolab_shard"))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        shard = ShardPlugin(spec, Path(durations) if durations else None, _vm_key)
        config.pluginmanager.register(shard, "cocolab-shard")
        config.stash[SHARD] = shard
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(
            ResultsPlugin(results, lambda: run_facts(config, rig)),
            "cocolab-results")


def _vm_key(item: pytest.Item) -> str | None:
    """The VM a test boots or shares (its group when sharding; a fresh_vm test's is its own,
    so its boot is weighed), None for a test that boots none."""
    request = item.stash.get(ITEM_REQUEST, None)
    if request is None:
        return None
    return f"fresh:{plain_nodeid(item.nodeid)}" if request.fresh else request.key()


UNRESOLVED = "not resolved: no VM booted in this run"


def run_facts(config: pytest.Config, rig: Rig) -> RunFacts:
    """The results file's facts: lane_properties', as fields. A run that booted nothing
    (its own pool, or an xdist worker's) fetches no kernel and probes no QEMU to say them."""
    booted = _booted(config) or WORKER_RIG in config.stash
    props = lane_properties(rig) if booted else {
        "cocolab.lane": rig.lane.name, "cocolab.kernel": str(rig.kernel_setting.value),
        "cocolab.cc": cc_header(rig) if rig.lane.cc else "none", "cocolab.host_cpu": _host_cpu(),
        **dict.fromkeys(("cocolab.kernel_release", "cocolab.qemu", "cocolab.accel"),
                        UNRESOLVED)}
    config_sha = UNRESOLVED if not booted else "unavailable"
    if booted:
        with contextlib.suppress(CocolabError, OSError):
            config_sha = hashlib.sha256(rig.kernel.config_path.read_bytes()).hexdigest()
    patches: tuple[str, ...] = ()
    if booted:
        with contextlib.suppress(CocolabError, OSError):
            patches = rig.kernel.patches
    selection = config.stash.get(WORKER_SELECTION, None) or _selection(config)
    return RunFacts(
        lane=rig.lane.name, kernel=props["cocolab.kernel"],
        kernel_release=props["cocolab.kernel_release"], kernel_config_sha256=config_sha,
        qemu=props["cocolab.qemu"], accel=props["cocolab.accel"], cc=props["cocolab.cc"],
        host_cpu=props["cocolab.host_cpu"], started=config.stash[STARTED],
        selected=int(selection["selected"]), shard=selection["shard"],
        partition=selection["partition"], patches=patches, simulated=rig.lane.simulated)


def _progress_to_terminal(config: pytest.Config) -> None:
    """Long work (a kernel fetch, the guest image) happens in a test's setup, under output
    capture: say it on the terminal all the same, as pytest's own reporter does."""
    if hasattr(config, "workerinput"):  # an xdist worker has no terminal
        return

    def sink(line: str) -> None:
        # looked up here: the terminal reporter registers in a pytest_configure of its own
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if reporter._tw.width_of_current_line:  # after a row of progress dots
                reporter.write("\n")
            reporter.write_line(line)
    progress.set_sink(sink)


def pytest_unconfigure(config: pytest.Config) -> None:
    progress.set_sink(None)
    pool = config.stash.get(POOL, None)
    if pool is not None:
        pool.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What the run was asked for; nothing here probes QEMU or fetches a kernel (a run whose
    tests boot no VM never does: see pytest_report_collectionfinish)."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller prints it
        return []
    rig = config.stash[RIG]
    lines = [f"cocolab lane: {rig.lane.name} ({rig.lane.description})"]
    k = rig.kernel_setting
    lines.append(f"cocolab kernel: {k.value} (from {k.source})")
    if rig.lane.cc:
        lines.append(f"cocolab cc: {cc_header(rig)}")
    return lines


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]
                                   ) -> list[str]:
    """The QEMU, accelerator and snapshots the selected tests' VMs will use, once collection
    says some will boot (the accelerator's verdict may be a proof boot of the lane's kernel);
    a --collect-only run boots nothing and is told nothing of them. (Under xdist the workers
    collect: the lines come at the end, from the workers that booted, see below.)"""
    if hasattr(config, "workerinput"):
        return []
    shard = config.stash.get(SHARD, None)
    lines = [shard.header()] if shard is not None else []
    if config.option.collectonly or not any(ITEM_REQUEST in i.stash for i in items):
        return lines  # nothing will boot: nothing to prove or probe
    return lines + _rig_lines(config)


def _rig_lines(config: pytest.Config) -> list[str]:
    rig, lines = config.stash[RIG], []
    try:
        info = rig.qemu_info
        lines.append(f"cocolab QEMU: {info.binary} {info.version}")
        lines.append(f"cocolab accelerator: {rig.accel.accel} ({rig.accel.reason})")
    except CocolabError as exc:
        lines.append(f"cocolab QEMU/accelerator: unavailable: {exc}")
    pool = config.stash[POOL]
    if pool.snapshots is None:
        lines.append(f"cocolab snapshots: off ({rig.snapshots_off})")
    else:
        store = pool.snapshots
        lines.append(f"cocolab snapshots: on ({store.root}: {len(store.entries())} kept, "
                     f"{store.size() >> 20} of {store.limit_bytes >> 20} MiB; --no-snapshots "
                     "boots cold)")
    return lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker tells the controller, which collects nothing, what the run selected
    (and how it was split); one that booted a VM, what it booted with."""
    config = session.config
    output = getattr(config, "workeroutput", None)
    if output is None:
        return
    output["cocolab_selection"] = _selection(config)
    if _booted(config):
        output["cocolab_rig"] = _rig_lines(config)


@pytest.hookimpl(optionalhook=True)  # xdist's
def pytest_testnodedown(node: Any, error: object) -> None:
    said = getattr(node, "workeroutput", {})
    if said.get("cocolab_rig"):
        node.config.stash.setdefault(WORKER_RIG, said["cocolab_rig"])
    if said.get("cocolab_selection"):  # every worker collected the same selection
        node.config.stash.setdefault(WORKER_SELECTION, said["cocolab_selection"])


def _booted(config: pytest.Config) -> bool:
    pool = config.stash[POOL]
    return bool(pool.cold_boots + pool.restores or pool.failures)


def _selection(config: pytest.Config) -> dict[str, Any]:
    """The run's selection before any shard took its share, and the shard and partition."""
    shard = config.stash.get(SHARD, None)
    if shard is None:
        return {"selected": config.stash.get(SELECTED, 0), "shard": None,
                "partition": None}
    return {"selected": shard.selected, "shard": str(shard.spec),
            "partition": shard.partition.digest if shard.partition else None}


def cc_header(rig: Rig) -> str:
    lane = rig.lane
    if lane.simulated:
        return f"simulated {lane.cc.upper()} guest ({SIMULATED})"
    return f"{lane.cc.upper()} guest (hardware; each guest proves it before its tests)"


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    """A VM that misbehaved while the test body ran is the rig's failure, not the kernel's:
    count and show it as an ERROR, as pytest does for a failing fixture."""
    if report.when == "call" and report.failed and (
            getattr(report, "cocolab_rig_failure", False)
            or getattr(report, "cocolab_precondition", False)):
        return "error", "E", ("ERROR", {"red": True})
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    pool = terminalreporter.config.stash.get(POOL, None)
    if pool is None:
        return
    for line in terminalreporter.config.stash.get(WORKER_RIG, []):
        terminalreporter.write_line(f"{line} (xdist workers)")
    if pool.retired:
        terminalreporter.write_line(f"cocolab accelerator: {pool.retired}", yellow=True)
    if pool.cold_boots or pool.restores:
        ahead = f", {pool.booted_ahead} booted ahead of their tests" if pool.booted_ahead else ""
        terminalreporter.write_line(f"cocolab VMs: {pool.cold_boots} cold boot(s), "
                                    f"{pool.restores} restore(s) from snapshots{ahead}")
    for problem in pool.snapshot_problems:
        terminalreporter.write_line(f"cocolab snapshot dropped (its VM booted cold): {problem}",
                                    yellow=True)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        _baseline(item, config.stash[RIG])
        if "vm" not in getattr(item, "fixturenames", ()):
            continue
        request = vm_request(item)
        kconfig_requirements(item)  # reject malformed markers at collection
        _check_layout(item, config.stash[RIG], request)
        item.stash[ITEM_REQUEST] = request
        if not request.fresh:
            # with `-n N --dist loadgroup`, tests sharing a VM run on one worker
            item.add_marker(pytest.mark.xdist_group(f"vm-{request.key()}"))


def _baseline(item: pytest.Item, rig: Rig) -> None:
    """A lane's known-issue baseline: the test is expected to fail an assertion about the
    kernel (strict: a pass is red, so the baseline is updated when the kernel changes); a rig
    error stays an error. JUnit carries it as a property of the test case."""
    baseline = rig.lane.expected_failure(item.nodeid)
    if baseline is None:
        return
    item.add_marker(pytest.mark.xfail(reason=f"{rig.lane.name}: {baseline}", strict=True,
                                      raises=AssertionError))
    item.user_properties.append((BASELINE, f"{rig.lane.name}: {baseline}"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Count each shared VM's tests among those selected (after -k, -m and --deselect), so
    the VM shuts down after its last selected test, not at the end of the session. (Under
    xdist a worker counts every selected test, not only its own: its VMs live until it ends.)
    """
    pool = session.config.stash[POOL]
    session.config.stash[SELECTED] = len(session.items)
    shared = []
    for item in session.items:
        request = item.stash.get(ITEM_REQUEST, None)
        if request is not None and not request.fresh:
            pool.wanted[request.key()] += 1
            item.stash[ITEM_SHARE] = True
            shared.append((request, item.nodeid))
    pool.plan(shared)
    _build_before_tests(session)


def _build_before_tests(session: pytest.Session) -> None:
    """A kernel cocolab builds (build:SOURCE, a lane's patches) is built now, before the
    first test: minutes of compiling belong to no test's setup or timeout. A failure is kept
    by the rig and reported by every test that needs the kernel."""
    rig = session.config.stash[RIG]
    if session.config.option.collectonly:
        return
    if isinstance(rig.kernel_spec, SourceSpec) and any(
            ITEM_REQUEST in item.stash for item in session.items):
        with contextlib.suppress(CocolabError):
            _ = rig.kernel


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """A selected test that never reached the `vm` fixture (a skip mark, a failed fixture
    before it) gives back its share of the VM here; the fixture gives back everyone else's."""
    try:
        return (yield)
    finally:
        if ITEM_REQUEST in item.stash:
            _give_back(item, item.config.stash[POOL], item.stash[ITEM_REQUEST])


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core this process may run on, since one TCG guest keeps one
    core busy; never more (xdist's own count may include cores outside our affinity)."""
    return max(1, len(os.sched_getaffinity(0)))


def _check_layout(item: pytest.Item, rig: Rig, request: VMRequest) -> None:
    """A machine or topology marker names files that are read now, at collection: a bad one is
    one usage error naming the test and its marker, before anything boots."""
    try:
        rig.layout(request.machine, request.topology)
    except ConfigError as exc:
        marks = [f"@pytest.mark.{name}" for name, value in
                 (("machine", request.machine), ("topology", request.topology)) if value]
        raise pytest.UsageError(f"{item.nodeid}: {', '.join(marks) or 'the lane'}: {exc}"
                                ) from None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("destructive") and not item.config.getoption(
            "cocolab_destructive"):
        pytest.skip("destructive: this test kills its guest on purpose; pass --destructive "
                    "to run it")


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
    config = request.config
    rig, pool = config.stash[RIG], config.stash[POOL]
    vm_req = item.stash.get(ITEM_REQUEST, None) or vm_request(item)
    try:
        problem = _setup_problem(item, rig, vm_req)
    except BaseException:
        if not vm_req.fresh:
            _give_back(item, pool, vm_req)  # this test will not use its share of the VM
        raise
    if problem is not None:
        if not vm_req.fresh:
            _give_back(item, pool, vm_req)
        rig_failure(item, problem)
    if vm_req.fresh:
        booted = pool.boot(vm_req, item.nodeid)
        item.stash[ITEM_VM] = booted
        try:
            _prove(item, rig, booted)
            yield booted
        finally:
            booted.shutdown()
        return
    failure = pool.failures.get(vm_req.key())
    if failure is not None and failure.nodeid != item.nodeid:  # else: booted ahead for it
        _give_back(item, pool, vm_req)
        item.stash[ITEM_BUNDLE] = failure.bundle or failure.workdir  # the first test's bundle
        first = failure.error.message.splitlines()[0]
        where = f"; bundle: {failure.bundle}" if failure.bundle else ""
        rig_failure(item, f"cocolab: RIG FAILURE: its VM ({vm_req.describe()}) failed to boot "
                    f"in {failure.nodeid}: {first}{where}")
    retired = pool.retired
    try:
        shared = pool.acquire(vm_req, item.nodeid)
    except BaseException:
        _give_back(item, pool, vm_req)
        raise
    if pool.retired != retired:
        warnings.warn(CocolabWarning(pool.retired), stacklevel=1)
    item.stash[ITEM_VM] = shared
    shared.dmesg.forget()  # per-test facade state starts fresh on a shared VM
    try:
        _prove(item, rig, shared)
        yield shared
        if _call_passed(item):
            shared.check_alive()  # a guest that stopped during this test is its rig failure
    finally:
        _give_back(item, pool, vm_req)


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


def _is_rig_failure(item: pytest.Item, report: pytest.TestReport,
                    call: pytest.CallInfo[None]) -> bool:
    """The VM misbehaved (any phase), cocolab could not set the test up (a CocolabError in
    setup: a kernel fetch, the image, the host), or the rig said so (`rig_failure`)."""
    error = call.excinfo.value if call.excinfo is not None else None
    return isinstance(error, (VMError, RigBug)) or item.stash.get(ITEM_RIG_FAILED, False) or (
        report.when == "setup" and isinstance(error, CocolabError))


def _give_back(item: pytest.Item, pool: VMPool, vm_req: VMRequest) -> None:
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


def lane_properties(rig: Rig) -> dict[str, str]:
    """What a CI report needs to tell one lane's run from another's."""
    props = {"cocolab.lane": rig.lane.name, "cocolab.cc": cc_header(rig) if rig.lane.cc else "none",
             "cocolab.kernel": str(rig.kernel_setting.value)}

    def attempt(key: str, get: Callable[[], str]) -> None:
        try:
            props[key] = get()
        except CocolabError as exc:
            props[key] = f"unavailable: {exc}"

    attempt("cocolab.kernel_release", lambda: rig.kernel.release)
    attempt("cocolab.qemu", lambda: f"{rig.qemu_info.binary} {rig.qemu_info.version}")
    attempt("cocolab.accel", lambda: f"{rig.accel.accel} ({rig.accel.reason})")
    if rig.lane.hardware_cc:
        fw = rig.firmware(rig.lane.cc)
        props["cocolab.firmware"] = str(fw.found) if fw.found else fw.why_not(rig.lane.cc)
    props["cocolab.host_cpu"] = _host_cpu()
    return props


def _host_cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


@pytest.fixture(scope="session", autouse=True)
def _cocolab_junit_properties(request: pytest.FixtureRequest) -> None:
    """With --junitxml, the lane's facts become <property> elements of the test suite."""
    if not request.config.option.xmlpath:
        return
    record = request.getfixturevalue("record_testsuite_property")
    for name, value in lane_properties(request.config.stash[RIG]).items():
        record(name, value)


@pytest.fixture(scope="session")
def cocolab_rig(pytestconfig: pytest.Config) -> Rig:
    """The resolved rig (lane, kernel, QEMU, accelerator) of this run."""
    return pytestconfig.stash[RIG]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    vm = item.stash.get(ITEM_VM, None)
    start = vm.console_size() if vm is not None else 0
    try:
        result = yield
    except BaseException:
        if vm is not None:
            _kernel_warnings(item, vm, start, fail=False)
        raise
    if vm is not None:
        _kernel_warnings(item, vm, start,
                         fail=item.config.getoption("cocolab_kernel_warnings") == "fail")
    return result


def _kernel_warnings(item: pytest.Item, vm: Guest, start: int, fail: bool) -> None:
    found = kernel_warnings(vm.console_since(start))
    if not found:
        return
    item.stash[ITEM_WARNINGS] = found
    reports = "\n\n".join(w.report for w in found)
    first = f"the guest kernel warned during this test: {found[0]}" + (
        f" (and {len(found) - 1} more)" if len(found) > 1 else "")
    if fail:  # the kernel's side: a test failure, shown as the report itself
        pytest.fail(f"cocolab: {first}\n{reports}", pytrace=False)
    item.add_report_section("call", "cocolab kernel warnings", reports)
    warnings.warn(CocolabWarning(f"{first} (--kernel-warnings=report)"), stacklevel=1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[ITEM_CALL] = report
    if not report.failed:
        return report
    if call.excinfo is not None and isinstance(call.excinfo.value, PreconditionUnmet):
        report.cocolab_precondition = True  # type: ignore[attr-defined]
        report.sections.append(("cocolab", "PRECONDITION UNMET: the test could not ask the "
                                "kernel its question (an ERROR, not the kernel's failure)"))
    if _is_rig_failure(item, report, call):  # a fixture that asked for vm by name, too
        report.cocolab_rig_failure = True  # type: ignore[attr-defined]
        report.sections.append(("cocolab", "RIG FAILURE: not a kernel verdict (the VM, the "
                                "host, QEMU or cocolab stood in the way)"))
    if ITEM_REQUEST not in item.stash:
        return report
    vm = item.stash.get(ITEM_VM, None)
    pool = item.config.stash[POOL]
    workdir = vm.workdir if vm else None
    if workdir is None and (f := pool.failures.get(item.stash[ITEM_REQUEST].key())):
        workdir = f.workdir
    if workdir is not None and ITEM_BUNDLE not in item.stash:
        found = item.stash.get(ITEM_WARNINGS, [])
        extra = {"kernel-warnings.txt": "\n\n".join(w.report for w in found)} if found else {}
        path = write_bundle(item.config.stash[RESULTS] / "failures", item.nodeid, vm, workdir,
                            extra)
        item.stash[ITEM_BUNDLE] = path
        report.user_properties.append((BUNDLE, str(path)))
        failure = pool.failures.get(item.stash[ITEM_REQUEST].key())
        if failure is not None and failure.nodeid == item.nodeid:
            failure.bundle = path
        report.sections.append(("cocolab", f"failure bundle: {path}\n"
                                f"re-enter this VM: {path}/relaunch.sh"))
    return report
