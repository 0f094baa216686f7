"""The matrix page's content, without a browser: a column per run, a row per test, each cell's
verdict, reason and bundle link, baselines apart, and what changed since earlier results.
(tests/rig/test_report_browser.py renders it in Chromium.)"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from cocolab.results import RunFacts, RunResults, TestResult
from cocolab.results.report import changes, render

FACTS = RunFacts(lane="default", kernel="debian:trixie", kernel_release="6.12.1",
                 kernel_config_sha256="ab" * 32, qemu="qemu 10.0.2", accel="tcg", cc="none",
                 host_cpu="cpu", started="2026-12-03T00:00:00+00:00", selected=3)


def runs(tmp: Path) -> tuple[RunResults, RunResults, RunResults]:
    bundle = tmp / "results/failures/t_b"
    old = RunResults(FACTS, [TestResult("t::a", "passed", 1.0), TestResult("t::b", "passed", 1.0),
                             TestResult("t::c", "skipped", 0.0, "needs X")])
    new = RunResults(dataclasses.replace(FACTS, kernel="debian:sid", kernel_release="7.3.4",
                                         started="2026-12-03T01:00:00+00:00"),
                     [TestResult("t::a", "passed", 1.0),
                      TestResult("t::b", "failed", 2.0, "assert 'denied' in '<ok>'",
                                 bundle=str(bundle)),
                      TestResult("t::c", "xfailed", 0.5, "not in 7.3",
                                 baseline="default: the CC rule is out of tree")])
    cc = RunResults(dataclasses.replace(FACTS, lane="cc-sim-tdx", cc="simulated TDX guest",
                                        simulated=True, patches=("ab" * 32 + " /p/cc-sim.patch",)),
                    [TestResult("t::a", "error", 3.0, "BootError: no READY", rig_failure=True)])
    return old, new, cc


def cell(page: str, nodeid: str, column: int) -> str:
    row = re.search(rf"<tr><td class=test>{re.escape(nodeid)}</td>(.*?)</tr>", page, re.S)
    assert row, nodeid
    return re.findall(r"<td class=\"cell[^>]*>.*?</td>", row.group(1), re.S)[column]


def test_a_column_per_run_a_row_per_test_and_each_verdict_coloured(tmp_path: Path) -> None:
    old, new, cc = runs(tmp_path)
    page = render([new, old, cc], tmp_path / "results/report.html")
    columns = re.findall(r"<th class=run [^>]*>(.*?)</th>", page, re.S)
    assert columns == ["6.12.1 +1 patch(es)<br><small>cc-sim-tdx</small> "
                       "<b class=simulated>SIMULATED</b>", "6.12.1<br><small>default</small>",
                       "7.3.4<br><small>default</small>"]
    assert 'data-outcome="rig"' in cell(page, "t::a", 0) and ">RIG<" in cell(page, "t::a", 0)
    assert "rig failure" in cell(page, "t::a", 0)
    assert 'data-outcome="none"' in cell(page, "t::b", 0)  # not run on that lane
    b = cell(page, "t::b", 2)
    assert 'data-outcome="fail"' in b and "assert &#x27;denied&#x27; in &#x27;&lt;ok&gt;" in b
    assert '<a href="failures/t_b">FAIL</a>' in b  # beside the page: relative
    c = cell(page, "t::c", 2)
    assert 'data-outcome="baseline"' in c and "baseline: default: the CC rule" in c
    assert ".baseline { background: #f9a825; }" in page
    assert 'title="kernel debian:sid (7.3.4)' in page  # the column's facts on hover
    assert "<script src" not in page and "http" not in page  # loads nothing


def test_changes_since_earlier_results_are_marked_and_listed(tmp_path: Path) -> None:
    old, new, cc = runs(tmp_path)
    found = changes([new, cc], [old])
    assert [(c.nodeid, c.was, c.now) for c in found] == [("t::b", "pass", "fail"),
                                                          ("t::c", "skip", "baseline")]
    page = render([new, cc], tmp_path / "report.html", since=[old])
    assert "Changed since the earlier results: 2" in page
    assert "t::b on 7.3.4 on default: PASS &rarr; FAIL" in page
    assert 'class="cell fail changed"' in cell(page, "t::b", 1)
    assert "changed" not in cell(page, "t::a", 1)


def test_a_bundle_elsewhere_is_linked_by_its_absolute_path(tmp_path: Path) -> None:
    _, new, _ = runs(tmp_path)
    page = render([new], Path("/srv/pages/report.html"))
    assert f'<a href="file://{tmp_path}/results/failures/t_b">FAIL</a>' in cell(page, "t::b", 0)


@pytest.mark.parametrize("bundle", ["javascript:alert(1)", "data:text/html,x", "relative/dir",
                                    "vbscript:x"])
def test_a_bundle_that_is_no_file_path_or_http_url_is_no_link(tmp_path: Path,
                                                              bundle: str) -> None:
    run = RunResults(FACTS, [TestResult("t::a", "failed", 1.0, "x", bundle=bundle)])
    page = render([run], tmp_path / "report.html")
    assert "<a " not in cell(page, "t::a", 0) and "javascript:" not in page.split("<script>")[0]


def test_an_http_bundle_is_linked_as_given(tmp_path: Path) -> None:
    run = RunResults(FACTS, [TestResult("t::a", "failed", 1.0, "x", bundle="https://ci/b/1")])
    assert '<a href="https://ci/b/1">FAIL</a>' in cell(render([run], tmp_path / "r.html"),
                                                       "t::a", 0)
