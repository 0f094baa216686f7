"""KTAP in, items out (results/ktap.py): flat and nested logs, KUnit's tab-indented print and
kselftest's `# `-prefixed nesting, console prefixes, directives, a crash or truncation
mid-run (an error on each test that did not report), a bail-out, and logs that are no KTAP.
Malformed input never raises. (The kernel's own kunit_tool test_data logs were also read by
`cocolab ktap` and `kunit.py parse` from linux-source-7.3: the closing note has both.)"""

from __future__ import annotations

import pytest

from cocolab import cli
from cocolab.results.ktap import Status, items, parse, summary


def outcome(log: str) -> dict[str, tuple[Status, str]]:
    return {nodeid: (t.status, t.reason) for nodeid, t in items(parse(log.splitlines()))}


FLAT = """\
KTAP version 1
1..6
ok 1 test_a
not ok 2 test_b
ok 3 test_c # SKIP no /dev/tdx_guest
not ok 4 - test_d # XFAIL known
not ok 5 test_e # TODO not yet
ok 6 test_f # TIMEOUT
"""


def test_a_flat_log_and_its_directives() -> None:
    assert outcome(FLAT) == {
        "test_a": (Status.PASSED, ""), "test_b": (Status.FAILED, ""),
        "test_c": (Status.SKIPPED, "no /dev/tdx_guest"), "test_d": (Status.XFAILED, "known"),
        "test_e": (Status.XFAILED, "not yet"), "test_f": (Status.ERROR, "")}
    assert summary(parse(FLAT.splitlines())) == "1 passed, 1 failed, 1 skipped, 1 error, " \
        "2 xfailed"


NESTED = """\
KTAP version 1
1..2
  KTAP version 1
  # Subtest: iommufd
  1..2
  ok 1 ioas_alloc
  not ok 2 ioas_map
not ok 1 iommufd
  KTAP version 1
  1..1
  ok 1 case
ok 2 other
"""


def test_nested_subtests_are_items_by_their_path() -> None:
    assert outcome(NESTED) == {"iommufd::ioas_alloc": (Status.PASSED, ""),
                               "iommufd::ioas_map": (Status.FAILED, ""),
                               "other::case": (Status.PASSED, "")}


KUNIT = """\
[    0.010000] Linux version 7.3.4
[    0.050000] TAP version 14
[    0.050000] 1..2
[    0.050000] \t# Subtest: example
[    0.050000] \t1..2
[    0.050000] \tok 1 - example_simple_test
[    0.050000]  driver noise  \t# not KTAP
[    0.050000] \tok 2 - example_skip_test # SKIP this test should be skipped
[    0.050000] ok 1 - example
[    0.060000][    T1] \t# Subtest: other
[    0.060000][    T1] \t1..1
[    0.060000][    T1] \tok 1 - other_test
[    0.060000][    T1] ok 2 - other
[    0.070000] reboot: System halted
"""


def test_kunit_print_with_console_prefixes_and_noise_between() -> None:
    assert outcome(KUNIT) == {
        "example::example_simple_test": (Status.PASSED, ""),
        "example::example_skip_test": (Status.SKIPPED, "this test should be skipped"),
        "other::other_test": (Status.PASSED, "")}


CRASHED = """\
KTAP version 1
1..2
  # Subtest: first
  1..1
  ok 1 one
ok 1 first
  # Subtest: second
  1..3
  ok 1 a
  BUG: kernel NULL pointer dereference, address: 0000000000000008
Kernel panic - not syncing: Fatal exception
"""


def test_a_crash_mid_run_is_an_error_on_each_test_that_did_not_report() -> None:
    got = outcome(CRASHED)
    assert got["first::one"] == (Status.PASSED, "")
    assert got["second::a"] == (Status.PASSED, "")
    assert got["second::#2"][0] is Status.ERROR and got["second::#3"][0] is Status.ERROR
    assert "did not report" in got["second::#2"][1]
    assert summary(parse(CRASHED.splitlines())) == "2 passed, 0 failed, 0 skipped, 2 error"


def test_a_truncated_flat_log_errs_on_what_is_missing() -> None:
    got = outcome("KTAP version 1\n1..3\nok 1 a\n")
    assert got == {"a": (Status.PASSED, ""),
                   "#2": (Status.ERROR, "did not report (the log ends)"),
                   "#3": (Status.ERROR, "did not report (the log ends)")}


def test_a_bail_out_stops_the_log_and_the_rest_did_not_report() -> None:
    got = outcome("TAP version 13\n1..2\nok 1 a\nBail out! no hardware\nok 2 b\n")
    assert got == {"a": (Status.PASSED, ""),
                   "#2": (Status.ERROR, "did not report (the log ends)")}


def test_kselftest_nesting_is_diagnostics_as_kunit_tool_reads_it() -> None:
    log = ("TAP version 13\n1..2\n# selftests: iommu: iommufd\n# TAP version 13\n# 1..1\n"
           "# ok 1 inner\nok 1 selftests: iommu: iommufd\n"
           "not ok 2 selftests: iommu: iommufd_fail_nth # exit=1\n")
    assert outcome(log) == {"selftests: iommu: iommufd": (Status.PASSED, ""),
                            "selftests: iommu: iommufd_fail_nth": (Status.FAILED, "exit=1")}


def test_a_parent_that_failed_on_its_own_is_an_item() -> None:
    log = "KTAP version 1\n1..1\n  KTAP version 1\n  1..1\n  ok 1 case\nnot ok 1 suite\n"
    assert outcome(log) == {"suite": (Status.FAILED, ""), "suite::case": (Status.PASSED, "")}


@pytest.mark.parametrize("log", ["", "hello\nworld\n", "ok 1 no header\n",
                                 "KTAP version 1\n", "KTAP version 1\n1..0\n"])
def test_a_log_without_tests_is_one_error(log: str) -> None:
    got = list(outcome(log).values())
    assert len(got) == 1 and got[0][0] is Status.ERROR


@pytest.mark.parametrize("line", ["ok", "ok x name", "not ok -1 n", "1..x", "\x00\xff",
                                  "  \t  ", "ok 1 a # SKIP", "ok 99999999999999999999 big"])
def test_malformed_lines_never_raise(line: str) -> None:
    parse(["KTAP version 1", "1..1", line, "ok 1 last"])


def test_cocolab_ktap_prints_an_item_a_line_then_the_counts(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "console.log").write_text(FLAT)
    assert cli.main(["ktap", str(tmp_path / "console.log")]) == 1  # a failure: exit 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["PASSED   test_a", "FAILED   test_b"]
    assert lines[-1] == "1 passed, 1 failed, 1 skipped, 1 error, 2 xfailed"
    (tmp_path / "good.log").write_text("KTAP version 1\n1..1\nok 1 a\n")
    assert cli.main(["ktap", str(tmp_path / "good.log")]) == 0


def test_a_last_line_cut_mid_write_is_not_a_result() -> None:
    """A file truncated inside `ok 2 - name` reads as: test 2 did not report (its partial
    line is log), not as a pass of a test named by what was left."""
    cut = ["KTAP version 1\n", "1..2\n", "ok 1 - first\n", "ok 2 - sec"]
    found = parse(cut)  # as a file reads it: its lines with their newlines
    assert [(t.name, t.status) for t in found] == [("first", Status.PASSED),
                                                   ("#2", Status.ERROR)]
