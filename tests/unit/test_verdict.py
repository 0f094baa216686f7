"""One verdict table (results/verdict.py): every exporter says what the table says, so the
results file, KCIDB, a pull lab's body and the report never disagree about one test."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocolab.lab.job import outcome
from cocolab.results import RunFacts, RunResults, TestResult
from cocolab.results.kcidb import report as kcidb_report
from cocolab.results.report import cell_class
from cocolab.results.verdict import Verdict, of, worst

FACTS = RunFacts(lane="default", kernel="k", kernel_release="6.12.1",
                 kernel_config_sha256="cd" * 32, qemu="qemu", accel="tcg", cc="none",
                 host_cpu="cpu", started="2026-12-03T00:00:00+00:00", selected=1)

CASES = [
    (TestResult("tests/s/test_a.py::p", "passed", 1.0), Verdict.PASS, "PASS", "pass", "pass"),
    (TestResult("tests/s/test_a.py::x", "xpassed", 1.0), Verdict.XPASS, "PASS", "pass", "pass"),
    (TestResult("tests/s/test_a.py::f", "failed", 1.0), Verdict.FAIL, "FAIL", "fail", "fail"),
    (TestResult("tests/s/test_a.py::k", "xfailed", 1.0, baseline="lane: known"),
     Verdict.KNOWN, "FAIL", "fail", "baseline"),
    (TestResult("tests/s/test_a.py::y", "xfailed", 1.0), Verdict.XFAIL, "FAIL", "fail", "xfail"),
    (TestResult("tests/s/test_a.py::s", "skipped", 0.0), Verdict.SKIP, "SKIP", "skip", "skip"),
    (TestResult("tests/s/test_a.py::e", "error", 1.0), Verdict.ERROR, "ERROR", "error",
     "error"),
    (TestResult("tests/s/test_a.py::r", "error", 1.0, rig_failure=True), Verdict.RIG, "MISS",
     "error", "rig"),
]


@pytest.mark.parametrize("test, verdict, kcidb, pull_labs, cell", CASES,
                         ids=[c[1].name for c in CASES])
def test_every_exporter_reads_the_one_table(test: TestResult, verdict: Verdict, kcidb: str,
                                            pull_labs: str, cell: str) -> None:
    assert of(test) is verdict
    assert verdict.words.results == test.outcome
    document = kcidb_report([RunResults(FACTS, [test])], "cocolab_test")
    assert document["tests"][0]["status"] == kcidb
    assert outcome(RunResults(FACTS, [test])).body()["tests"]["s"]["subtests"][
        "test_a.py::" + test.nodeid.rsplit("::", 1)[1]]["status"] == pull_labs
    assert cell_class(test) == cell


def test_a_rig_failure_outranks_every_kernel_verdict_in_a_suite() -> None:
    assert worst([Verdict.PASS, Verdict.FAIL, Verdict.RIG]) is Verdict.RIG
    assert worst([Verdict.PASS, Verdict.KNOWN, Verdict.SKIP]) is Verdict.KNOWN
    assert worst([Verdict.SKIP, Verdict.SKIP]) is Verdict.SKIP
    assert worst([]) is None


def test_no_module_keeps_a_verdict_table_of_its_own() -> None:
    """The old tables (STATUS, RESULT, CLASSES) are gone: a second table is how they drifted."""
    root = Path(__file__).resolve().parents[2] / "framework/cocolab"
    for path in root.rglob("*.py"):
        if path.name == "verdict.py":
            continue
        text = path.read_text()
        assert '"xfailed": "' not in text and "'xfailed': '" not in text, path
