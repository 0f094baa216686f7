"""cocolab's pytest plugin (entry point 'cocolab').

A test that takes the `vm` fixture gets a booted guest matching its markers. Tests with equal
requests share one VM; `@pytest.mark.fresh_vm` gets a private one. Everything the plugin keeps
lives in config.stash / item.stash (keys.py). This module holds the options, the run's set-up
and collection; the rest is split by concern, and registered with it when the run is
configured (`CONCERNS`): fixtures.py (vm, cc_guest, plain_guest, cocolab_rig), outcomes.py
(how a test's outcome is told), facts.py (what the run says of itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from cocolab import progress
from cocolab.errors import (
    CocolabError,
    ConfigError,
)
from cocolab.kernel.spec import SourceSpec
from cocolab.options import OPTIONS
from cocolab.pytest_plugin import facts, fixtures, outcomes
from cocolab.pytest_plugin.facts import run_facts
from cocolab.pytest_plugin.keys import (
    ITEM_REQUEST,
    ITEM_SHARE,
    POOL,
    RESULTS,
    RIG,
    SELECTED,
    SHARD,
    STARTED,
)
from cocolab.pytest_plugin.markers import (
    MARKERS,
    VMRequest,
    allowed_kernel_reports,
    finding_marker,
    kconfig_requirements,
    vm_request,
)
from cocolab.pytest_plugin.pool import VMPool, default_boot_ahead, spare_guests
from cocolab.pytest_plugin.record import BASELINE, ResultsPlugin
from cocolab.pytest_plugin.shard import ShardPlugin, ShardSpec
from cocolab.results import plain_nodeid
from cocolab.rig import Rig, RigOptions

CONCERNS = (fixtures, outcomes, facts)
"""The plugin's other modules, registered beside it (fixtures and hooks alike) as soon as
the run is configured; `pytest_plugins` would have them assertion-rewritten after this module
imported them, which pytest warns of."""


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
    group.addoption("--device-seed", dest="cocolab_device_seed", type=int, default=1,
                    metavar="N",
                    help="the seed of the hostile-device campaign "
                         "(tests/virtio_hostile/test_campaign.py; default 1)")
    group.addoption("--device-rounds", dest="cocolab_device_rounds", type=int, default=2,
                    metavar="K",
                    help="rounds of the campaign per device, each its own test and "
                         "reproducible from the seed and its number (default 2)")
    group.addoption("--gcov-dir", dest="cocolab_gcov_dir", metavar="DIR",
                    help="keep the coverage counters of every guest of a GCOV kernel (the "
                         "hardening lane's) in DIR, one directory a VM, for `cocolab "
                         "coverage DIR`")
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
    for module in CONCERNS:
        config.pluginmanager.register(module, "cocolab-" + module.__name__.rsplit(".", 1)[1])
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
    if config.getoption("cocolab_gcov_dir"):
        config.stash[POOL].gcov_dir = Path(config.getoption("cocolab_gcov_dir")).resolve()
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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        _baseline(item, config.stash[RIG])
        finding_marker(item)
        allowed_kernel_reports(item)  # reject a malformed marker at collection
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
