"""The kernel's selftests as items, without a kernel or a guest: a harness program's `-l`
columns read into the cases its `-r` runs, a target's `config` as gates, the targets list,
and each KTAP result a case's run can give (a pass, a failure, a skip, kselftest's XFAIL,
a hang, a crash, noise) turned into the pytest outcome."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cocolab.errors import ConfigError, KernelTestDidNotReport
from cocolab.guest.kselftest import SelftestRun
from cocolab.kernel.selftests import (
    Installed,
    SelftestError,
    check_target,
    config_requirements,
    list_programs,
    parse_harness_list,
)
from cocolab.pytest_plugin.kernel_tests import (
    SelftestCase,
    Target,
    outcome,
    read_targets,
    reported,
)
from cocolab.results.ktap import Status


def row(fixture: str, variant: str, test: str) -> str:
    """One row as test_harness_list_tests() prints it: "%-20s %-25s %s"."""
    return f"{fixture:<20} {variant:<25} {test}"


RULE = "-" * 80
# iommufd -l's rows (7.3), with a fixture and a variant longer than their columns
LISTING = "\n".join([
    row("# FIXTURE", "VARIANT", "TEST"), row("global", "", ""), RULE,
    row("iommufd", "", "simple_close"), row("", "", "cmd_fail"), RULE,
    row("change_process", "account_none", "basic"), row("", "account_user", ""), RULE,
    row("a_fixture_longer_than_twenty", "a_variant_longer_than_25_columns", "first"),
    row("", "short", "second")]) + "\n"


def test_harness_listing_is_every_variant_with_every_test_in_run_order() -> None:
    assert parse_harness_list(LISTING) == (
        "iommufd.simple_close", "iommufd.cmd_fail",
        "change_process.account_none.basic", "change_process.account_user.basic",
        "a_fixture_longer_than_twenty.a_variant_longer_than_25_columns.first",
        "a_fixture_longer_than_twenty.a_variant_longer_than_25_columns.second",
        "a_fixture_longer_than_twenty.short.first", "a_fixture_longer_than_twenty.short.second")


def test_a_listing_that_is_no_listing_gives_no_cases() -> None:
    assert parse_harness_list("") == ()
    assert parse_harness_list("Usage: x [-h]\n\tsomething\n") == ()


def test_config_file_as_gates(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("CONFIG_IOMMUFD=y\nCONFIG_FAILSLAB=m\n# CONFIG_X is not set\n"
                      "CONFIG_LOG_BUF_SHIFT=18\nCONFIG_CMDLINE=\"a\"\ngarbage\n")
    assert config_requirements(config) == ["IOMMUFD=y", "FAILSLAB", "X=n"]
    assert config_requirements(tmp_path / "absent") == []


@pytest.mark.parametrize("bad", ["../etc", "a/../../b", "", "a b", "/abs"])
def test_a_target_is_a_directory_below_selftests(bad: str) -> None:
    with pytest.raises(SelftestError, match="selftest target"):
        check_target(bad)


def test_only_harness_programs_are_asked_to_list(tmp_path: Path) -> None:
    """A script, or an ELF without the harness's usage text, is never run on the host: it is
    one item, run whole in the guest."""
    (tmp_path / "t").mkdir()
    (tmp_path / "kselftest-list.txt").write_text("t:script.sh\nt:plain\nnot a line\n")
    script = tmp_path / "t/script.sh"
    script.write_text("#!/bin/sh\ntouch ran\n")
    plain = tmp_path / "t/plain"
    plain.write_bytes(b"\x7fELF" + b"\0" * 64)
    for path in (script, plain):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    programs = list_programs(tmp_path)
    assert [(p.ident, p.cases) for p in programs] == [("t:script.sh", None), ("t:plain", None)]
    assert not (tmp_path / "t/ran").exists()


def test_targets_toml(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[target.iommu]\ntimeout = 600\n[target.net]\n'
                    'leave_out = ["a/b"]\nkconfig = ["HUGETLBFS=y"]\ncmdline = ["hugepages=4"]\n'
                    'why = "slow, and hugepages"\n')
    assert read_targets(good) == [Target("iommu", 600.0),
                                  Target("net", 300.0, ("a/b",), ("HUGETLBFS=y",),
                                         ("hugepages=4",))]
    for text, words in (('[target.x]\ntimeout = 0\n', "timeout"),
                        ('[target.x]\nleave_out = ["a"]\n', "say why"),
                        ('[target.x]\ncmdline = ["a=1"]\n', "sets cmdline: say why"),
                        ('[target.x]\nkconfig = ["not an option"]\nwhy = "w"\n', "each NAME"),
                        ('[target.x]\nkconfig = "HUGETLBFS"\nwhy = "w"\n', "list of strings"),
                        ('[target.x]\ntimout = 5\n', "unknown key"),
                        ('[target."../x"]\n', "selftest target"),
                        ('[target.x\n', "Expected")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=words):
            read_targets(bad)


CASE = SelftestCase(Target("iommu", 60.0), "iommufd", "iommufd.simple_close",
                    Installed(Path("/nonexistent"), ()))


def run(output: str, returncode: int = 0, timed_out: bool = False) -> SelftestRun:
    return SelftestRun("./iommufd -r iommufd.simple_close", returncode, output, timed_out)


def harness(line: str) -> str:
    return ("TAP version 13\n1..1\n# Starting 1 tests from 1 test cases.\n"
            "#  RUN           iommufd.simple_close ...\n" + line + "\n# Totals: ...\n")


class Node:
    def __init__(self) -> None:
        self.user_properties: list[tuple[str, object]] = []


def test_ok_passes() -> None:
    node = Node()
    outcome(CASE, run(harness("ok 1 iommufd.simple_close")), node)  # type: ignore[arg-type]
    assert node.user_properties == []


def test_not_ok_is_the_kernels_assertion_with_the_output() -> None:
    with pytest.raises(AssertionError, match=r"(?s)not ok.*iommufd.c:42:.*Expected"):
        outcome(CASE, run(harness("# iommufd.c:42:simple_close:Expected 0 (0) == 1 (1)\n"
                                  "not ok 1 iommufd.simple_close"), 1), Node())  # type: ignore


def test_skip_carries_the_selftests_reason() -> None:
    with pytest.raises(pytest.skip.Exception, match="no /dev/iommu"):
        outcome(CASE, run(harness("ok 1 iommufd.simple_close # SKIP no /dev/iommu"), 4),
                Node())  # type: ignore[arg-type]


def test_kselftest_xfail_is_no_failure_and_is_kept() -> None:
    node = Node()
    outcome(CASE, run(harness("ok 1 iommufd.simple_close # XFAIL no mock")), node)  # type: ignore
    assert node.user_properties == [("cocolab.ktap", "XFAIL no mock")]


@pytest.mark.parametrize("output, returncode, timed_out, words", [
    ("", 137, True, "killed after 60 s"),
    ("TAP version 13\n1..1\n#  RUN  iommufd.simple_close ...\n", 139, False,
     "did not report"),
    ("Segmentation fault\n", 139, False, "did not report .exit 139.: no KTAP"),
    (harness("ok 1 another.case"), 0, False, "reported 'another.case' where"),
    ("TAP version 13\n1..2\nok 1 a\nok 2 b\n", 0, False, "2 results where one"),
])
def test_a_case_without_its_own_result_is_an_error_not_a_verdict(
        output: str, returncode: int, timed_out: bool, words: str) -> None:
    assert reported(CASE, run(output, returncode, timed_out)).status is Status.ERROR
    with pytest.raises(KernelTestDidNotReport, match=words):
        outcome(CASE, run(output, returncode, timed_out), Node())  # type: ignore[arg-type]


def test_paths_and_ids() -> None:
    assert CASE.ident == "iommu/iommufd/iommufd.simple_close"
    assert CASE.ktap_path == "kselftest.iommu.iommufd.iommufd.simple_close"
    whole = SelftestCase(Target("net/forwarding"), "router.sh")
    assert whole.ident == "net/forwarding/router.sh"
    assert whole.ktap_path == "kselftest.net.forwarding.router.sh"
