"""How each test's outcome is told: a kernel warning during the body fails it, a VM that
misbehaved or a precondition unmet makes it an ERROR (a rig failure or not), a failure gets
its bundle; destructive tests run only when asked."""

from __future__ import annotations

import warnings
from collections.abc import Generator

import pytest

from cocolab.errors import (
    PreconditionUnmet,
)
from cocolab.guest import Guest
from cocolab.guest.kernel_warnings import kernel_warnings
from cocolab.pytest_plugin.bundle import write_bundle
from cocolab.pytest_plugin.fixtures import CocolabWarning, give_back, is_rig_failure
from cocolab.pytest_plugin.keys import (
    ITEM_BUNDLE,
    ITEM_CALL,
    ITEM_REQUEST,
    ITEM_VM,
    ITEM_WARNINGS,
    POOL,
    RESULTS,
)
from cocolab.pytest_plugin.markers import allowed_kernel_reports
from cocolab.pytest_plugin.record import BUNDLE


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    """A VM that misbehaved while the test body ran is the rig's failure, not the kernel's:
    count and show it as an ERROR, as pytest does for a failing fixture."""
    if report.when == "call" and report.failed and (
            getattr(report, "cocolab_rig_failure", False)
            or getattr(report, "cocolab_precondition", False)):
        return "error", "E", ("ERROR", {"red": True})
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """A selected test that never reached the `vm` fixture (a skip mark, a failed fixture
    before it) gives back its share of the VM here; the fixture gives back everyone else's."""
    try:
        return (yield)
    finally:
        if ITEM_REQUEST in item.stash:
            give_back(item, item.config.stash[POOL], item.stash[ITEM_REQUEST])


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("destructive") and not item.config.getoption(
            "cocolab_destructive"):
        pytest.skip("destructive: this test kills its guest on purpose; pass --destructive "
                    "to run it")


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
    allowed = allowed_kernel_reports(item)
    if allowed and all(w.kind in allowed for w in found):  # a denial of service, recorded
        item.add_report_section("call", "cocolab kernel reports (allowed: "
                                + ", ".join(sorted(allowed)) + ")",
                                "\n\n".join(w.report for w in found))
        return
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
    if is_rig_failure(item, report, call):  # a fixture that asked for vm by name, too
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
