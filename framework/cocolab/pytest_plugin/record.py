"""What each test did, from pytest's reports, for the results file (cocolab.results).

One verdict per test from its setup, call and teardown reports, in pytest's own words: a
failing setup or teardown is an error, as is a call that failed because the VM misbehaved or
a precondition was unmet (the plugin marks those reports); an xfail that failed is xfailed,
one that passed xpassed. Reports reach the xdist controller from every worker, so the
controller records the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from cocolab.pytest_plugin.markers import FINDING, KTAP_PATH
from cocolab.results import RunFacts, RunResults, TestResult, plain_nodeid

BASELINE = "cocolab.baseline"
BUNDLE = "cocolab.bundle"
"""user_properties names: a lane's baseline for the test, its failure bundle."""


def _reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    wasxfail = getattr(report, "wasxfail", "")
    if wasxfail:
        return str(wasxfail).removeprefix("reason: ")
    text = report.longreprtext.strip()
    # the exception's line (pytest's "E   ..." lines), else the message's first line (a
    # pytest.fail(pytrace=False) message: its first line says what, the rest is evidence,
    # such as the kernel's report, whose last line is a stack frame)
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    return (lines[0] if lines else text.splitlines()[0] if text else "")[:500]


def verdict(reports: Iterable[pytest.TestReport]) -> tuple[str, str, bool]:
    """(outcome, reason, rig_failure) of one test from its reports: the first phase that did
    not pass decides; a call that passed an xfail is xpassed."""
    by_when = {r.when: r for r in reports}
    for when in ("setup", "call", "teardown"):
        report = by_when.get(when)
        if report is None or report.passed:
            continue
        rig = bool(getattr(report, "cocolab_rig_failure", False))
        unmet = bool(getattr(report, "cocolab_precondition", False))
        if report.failed:
            kernel = when == "call" and not rig and not unmet
            return ("failed" if kernel else "error"), _reason(report), rig
        return ("xfailed" if hasattr(report, "wasxfail") else "skipped"), _reason(report), False
    call = by_when.get("call")
    if call is not None and hasattr(call, "wasxfail"):
        return "xpassed", _reason(call), False
    return "passed", "", False


class Recorder:
    """Collects the reports of a run, in the order the tests ran."""

    def __init__(self) -> None:
        self._reports: dict[str, list[pytest.TestReport]] = {}

    def add(self, report: pytest.TestReport) -> None:
        self._reports.setdefault(plain_nodeid(report.nodeid), []).append(report)

    def results(self, facts: RunFacts) -> RunResults:
        tests = []
        for nodeid, reports in self._reports.items():
            outcome, reason, rig = verdict(reports)
            props = dict(p for r in reports for p in r.user_properties)
            tests.append(TestResult(
                nodeid=nodeid, outcome=outcome,
                duration=round(sum(r.duration for r in reports), 3), reason=reason,
                rig_failure=rig,
                baseline=str(props[BASELINE]) if BASELINE in props else None,
                bundle=str(props[BUNDLE]) if BUNDLE in props else None,
                finding=str(props[FINDING]) if FINDING in props else None,
                ktap_path=str(props[KTAP_PATH]) if KTAP_PATH in props else None))
        return RunResults(facts, tests, [facts.shard] if facts.shard else [])


class ResultsPlugin:
    """Registered by the plugin on the run's controller (not on xdist workers): records every
    report, then writes RESULTS/cocolab-results.json."""

    def __init__(self, results: Path, facts: Callable[[], RunFacts]):
        self.path = results / "cocolab-results.json"
        self.facts = facts
        self.recorder = Recorder()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.recorder.add(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if session.config.option.collectonly:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recorder.results(self.facts()).write(self.path)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.path.exists():
            terminalreporter.write_line(f"cocolab results: {self.path}")
