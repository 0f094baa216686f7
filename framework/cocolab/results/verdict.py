"""The one table that says what a test's verdict is called wherever it leaves the host.

A test ends as one `Verdict`, decided from its results-file entry (`of`). Every exporter
reads its own column of the verdict's `words`: the results file (pytest's words), KCIDB's
status, the PULL_LABS callback's status (kernelci-core `kernelci/runtime/pull_labs.py`
`Callback`), and the report's cell. No other module maps an outcome to an external word.

    verdict  results file          KCIDB  PULL_LABS  report   the kernel's?
    PASS     passed                PASS   pass       PASS     yes
    XPASS    xpassed (not strict)  PASS   pass       PASS     yes
    FAIL     failed                FAIL   fail       FAIL     yes
    KNOWN    xfailed + baseline    FAIL   fail       KNOWN    yes: a known issue
    XFAIL    xfailed               FAIL   fail       XFAIL    yes: a known finding
    SKIP     skipped               SKIP   skip       SKIP     no verdict
    ERROR    error                 ERROR  error      ERROR    no: the test's own error
    RIG      error + rig_failure   MISS   error      RIG      no: the rig's (infrastructure)

A known issue (a lane baseline) and a known finding (a test's own strict xfail) are the
kernel failing the assertion: FAIL wherever the vocabulary has no word for "known", with the
baseline said beside it (KCIDB `misc`, the report's colour). So a job with one is a failed
job everywhere, as its suites are. A rig failure is never the kernel's: KCIDB's MISS
("the harness could not run it"), and for a pull lab an infrastructure error on the job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cocolab.results.model import TestResult


@dataclass(frozen=True)
class Words:
    results: str
    """The results file's outcome (pytest's word)."""
    kcidb: str
    pull_labs: str
    report: str
    """The report's cell class (its colour) and the word shown in it."""
    shown: str
    failed: bool
    """Counts as a failure of the kernel (a job with one is a failed job)."""


class Verdict(enum.Enum):
    PASS = Words("passed", "PASS", "pass", "pass", "PASS", failed=False)
    XPASS = Words("xpassed", "PASS", "pass", "pass", "PASS", failed=False)
    FAIL = Words("failed", "FAIL", "fail", "fail", "FAIL", failed=True)
    KNOWN = Words("xfailed", "FAIL", "fail", "baseline", "KNOWN", failed=True)
    XFAIL = Words("xfailed", "FAIL", "fail", "xfail", "XFAIL", failed=True)
    SKIP = Words("skipped", "SKIP", "skip", "skip", "SKIP", failed=False)
    ERROR = Words("error", "ERROR", "error", "error", "ERROR", failed=False)
    RIG = Words("error", "MISS", "error", "rig", "RIG", failed=False)

    @property
    def words(self) -> Words:
        return self.value


_BY_OUTCOME = {v.words.results: v for v in (Verdict.PASS, Verdict.XPASS, Verdict.FAIL,
                                            Verdict.XFAIL, Verdict.SKIP, Verdict.ERROR)}


def of(test: TestResult) -> Verdict:
    """A test's verdict. A rig failure is RIG whatever phase it came from; an xfail under a
    lane baseline is KNOWN."""
    if test.rig_failure:
        return Verdict.RIG
    if test.outcome == "xfailed" and test.baseline:
        return Verdict.KNOWN
    return _BY_OUTCOME[test.outcome]


def worst(verdicts: list[Verdict]) -> Verdict | None:
    """A suite's or job's verdict from its tests': the rig's failure first (nothing below it
    is a verdict on the kernel), then the kernel's, then an error, then a pass; all skipped
    is a skip, nothing at all None."""
    for kind in (Verdict.RIG, Verdict.FAIL, Verdict.KNOWN, Verdict.XFAIL, Verdict.ERROR,
                 Verdict.PASS, Verdict.XPASS, Verdict.SKIP):
        if kind in verdicts:
            return kind
    return None
