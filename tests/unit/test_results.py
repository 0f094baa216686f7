"""The results file: written and read back, every malformed one a line, shards merged only
when they make one whole run; and the verdict of a test from pytest's reports."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from edited import REMOVED, edited

from cocolab.pytest_plugin.record import verdict
from cocolab.results import ResultsError, RunFacts, RunResults, TestResult, load, merge

FACTS = RunFacts(lane="default", kernel="debian:trixie", kernel_release="6.12.1",
                 kernel_config_sha256="ab" * 32, qemu="qemu 10.0.2", accel="tcg", cc="none",
                 host_cpu="cpu", started="2026-12-03T00:00:00+00:00", selected=4)


def shard(index: int, count: int, tests: list[str], partition: str = "p1") -> RunResults:
    facts = dataclasses.replace(FACTS, shard=f"{index}/{count}", partition=partition,
                                started=f"2026-12-03T00:0{index}:00+00:00")
    return RunResults(facts, [TestResult(n, "passed", 1.0) for n in tests], [f"{index}/{count}"])


def test_a_results_file_reads_back_as_written(tmp_path: Path) -> None:
    run = RunResults(FACTS, [TestResult("a", "failed", 1.5, "assert 1 == 2", bundle="/b"),
                             TestResult("b", "xfailed", 0.2, baseline="default: known")])
    run.write(tmp_path / "cocolab-results.json")
    assert load(tmp_path) == run
    assert load(tmp_path / "cocolab-results.json").verdicts() == {"a": "failed", "b": "xfailed"}


GOOD = RunResults(FACTS, [TestResult("a", "passed", 1.0)]).to_json()


@pytest.mark.parametrize("path, value, says", [
    ("format", "junit", "not a cocolab results file (format 'junit'"),
    ("facts", [], "facts: not a JSON object"),
    ("facts.lane", REMOVED, "facts: no 'lane'"),
    ("facts.selected", "4", "facts: 'selected' is '4', not a int"),
    ("facts.colour", "red", "facts: unknown field 'colour'"),
    ("tests", {}, "'tests' is not a list"),
    ("tests.0.outcome", "green", "tests[0] (a): outcome 'green' is not one of passed"),
    ("tests.0.duration", True, "'duration' is True, not a float"),
    ("shards", "1/2", "'shards' is not a list of I/N"),
    ("shards", ["3"], "shard '3' is not I/N"),  # was an IndexError in merge
    ("shards", ["3/2"], "shard '3/2' is not I/N"),
    ("facts.shard", "x/y", "shard 'x/y' is not I/N"),
])
def test_a_malformed_results_file_is_one_line(tmp_path: Path, path: str, value: Any,
                                              says: str) -> None:
    f = tmp_path / "r.json"
    f.write_text(json.dumps(edited(GOOD, path, value)))
    with pytest.raises(ResultsError, match="^" + str(f).replace(".", r"\.")) as info:
        load(f)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_no_file_and_no_json_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such results file"):
        load(tmp_path)
    (tmp_path / "cocolab-results.json").write_text("{")
    with pytest.raises(ResultsError, match="Expecting property name"):
        load(tmp_path)


def test_shards_merge_into_the_whole_run() -> None:
    merged = merge([shard(2, 2, ["c", "d"]), shard(1, 2, ["a", "b"])])
    assert merged.shards == ["1/2", "2/2"]
    assert merged.facts.shard is None and merged.facts.started.endswith("00:01:00+00:00")
    assert sorted(merged.verdicts()) == ["a", "b", "c", "d"]
    again = merge([merged])  # a merged run is a shard set of its own
    assert again.verdicts() == merged.verdicts()


@pytest.mark.parametrize("runs, says", [
    ([shard(1, 2, ["a", "b"])], "2/2 missing"),
    ([shard(1, 2, ["a", "b"]), shard(1, 2, ["c", "d"])], "shard 1/2 is given twice"),
    ([shard(1, 2, ["a", "b"]), shard(2, 2, ["b", "c"])], "b ran in two shards"),
    ([shard(1, 2, ["a"]), shard(2, 2, ["c", "d"])], "hold 3 tests, the run selected 4"),
    ([shard(1, 2, ["a", "b"]), shard(2, 2, ["c", "d"], partition="p2")],
     "partition is 'p2' there, 'p1' here"),
    ([RunResults(FACTS, [])], "a whole run, not a shard"),
    ([], "nothing to merge"),
])
def test_shards_that_do_not_make_one_run_are_refused(runs: list[RunResults], says: str) -> None:
    with pytest.raises(ResultsError, match=re.escape(says)):
        merge(runs)


def test_a_shard_of_another_kernel_is_refused() -> None:
    other = shard(2, 2, ["c", "d"])
    other = RunResults(dataclasses.replace(other.facts, kernel_release="7.3.4"), other.tests,
                       other.shards)
    with pytest.raises(ResultsError, match=re.escape("kernel_release is '7.3.4' there, "
                                                     "'6.12.1' here")):
        merge([shard(1, 2, ["a", "b"]), other], ["one.json", "two.json"])


@dataclasses.dataclass
class Report:
    when: str
    outcome: str
    longreprtext: str = ""
    longrepr: Any = None
    cocolab_rig_failure: bool = False
    duration: float = 0.0
    user_properties: list[tuple[str, object]] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    @property
    def skipped(self) -> bool:
        return self.outcome == "skipped"


def xfail(report: Report, reason: str) -> Report:
    report.wasxfail = reason  # type: ignore[attr-defined]
    return report


E = "def test():\n>   assert 1 == 2\nE   assert 1 == 2\n"


@pytest.mark.parametrize("reports, expected", [
    ([Report("setup", "passed"), Report("call", "passed"), Report("teardown", "passed")],
     ("passed", "", False)),
    ([Report("setup", "passed"), Report("call", "failed", E), Report("teardown", "passed")],
     ("failed", "assert 1 == 2", False)),
    ([Report("setup", "passed"), Report("call", "failed", "E   GuestStopped: gone",
                                        cocolab_rig_failure=True)],
     ("error", "GuestStopped: gone", True)),
    ([Report("setup", "failed", "E   BootError: no READY")], ("error", "BootError: no READY",
                                                            False)),
    ([Report("setup", "skipped", longrepr=("f.py", 3, "Skipped: needs X"))],
     ("skipped", "needs X", False)),
    ([Report("setup", "passed"), xfail(Report("call", "skipped"), "default: known bug")],
     ("xfailed", "default: known bug", False)),
    ([Report("setup", "passed"), xfail(Report("call", "passed"), "known"),
      Report("teardown", "passed")], ("xpassed", "known", False)),
    ([Report("setup", "passed"), Report("call", "passed"),
      Report("teardown", "failed", "E   RuntimeError: stuck")],
     ("error", "RuntimeError: stuck", False)),
])
def test_a_tests_verdict_from_its_reports(reports: list[Report],
                                          expected: tuple[str, str, bool]) -> None:
    assert verdict(reports) == expected  # type: ignore[arg-type]
