"""KUnit's cases as items, without a kernel: the list a `kunit.action=list` boot prints (as
kunit_exec_list_tests() prints it, other kernel messages between), the suites file, and each
case's result read from a boot log: ok, not ok, skip, a warning inside a case, a suite that
never reported, a case missing from its suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocolab.errors import ConfigError, KernelTestDidNotReport
from cocolab.pytest_plugin.kunit import (
    KunitCase,
    outcome,
    parse_list,
    read_suites,
    result,
)
from cocolab.results.ktap import Status, parse

LIST_CONSOLE = """\
[    0.912345] Run /init as init process
[    0.41] KTAP version 1
[    0.41] resource_test
[    0.41] resource_test.test_union
[    0.41] resource_test.test_intersection
[    0.42] random: crng init done
[    0.42] list-kernel-test
[    0.42] list-kernel-test.list_test_list_init
[    0.43] devm-inconsistent-test
"""


def test_the_list_boot_gives_suite_and_case() -> None:
    assert parse_list(LIST_CONSOLE) == [
        ("resource_test", "test_union"), ("resource_test", "test_intersection"),
        ("list-kernel-test", "list_test_list_init")]
    assert parse_list("no KTAP here\nresource_test.test_union\n") == []


def test_suites_file(tmp_path: Path) -> None:
    path = tmp_path / "suites.toml"
    path.write_text('options = ["LIST_KUNIT_TEST=y", "KUNIT=y", "DM_KUNIT_TEST"]\n')
    assert read_suites(path) == ("KUNIT=y", "LIST_KUNIT_TEST=y", "DM_KUNIT_TEST")
    for text in ('options = ["not an option!"]\n', 'suites = []\n', 'options = "X"\n', '['):
        path.write_text(text)
        with pytest.raises(ConfigError):
            read_suites(path)


BOOT = """\
[    1.00] KTAP version 1
[    1.00] 1..2
[    1.01]     KTAP version 1
[    1.01]     # Subtest: resource_test
[    1.01]     1..3
[    1.02]     ok 1 test_union
[    1.03] ------------[ cut here ]------------
[    1.03] WARNING: CPU: 0 PID: 1 at kernel/resource.c:99 __request_region+0x1/0x2
[    1.03] ---[ end trace 0000000000000000 ]---
[    1.04]     ok 2 test_intersection
[    1.05]     # test_skip: not on this arch
[    1.05]     ok 3 test_skip # SKIP not on this arch
[    1.06] ok 1 resource_test
[    1.07]     KTAP version 1
[    1.07]     # Subtest: list-kernel-test
[    1.07]     1..2
[    1.08]     # list_test_list_init: EXPECTATION FAILED at lib/list-test.c:30
[    1.08]     not ok 1 list_test_list_init
"""


@pytest.fixture
def boot() -> list:
    return parse(BOOT.splitlines())


def case(suite: str, name: str) -> KunitCase:
    return KunitCase(suite, name)


def test_ok_passes(boot: list) -> None:
    outcome(case("resource_test", "test_union"), result(case("resource_test", "test_union"),
                                                        boot))


def test_a_warning_inside_a_case_fails_it_though_ok(boot: list) -> None:
    c = case("resource_test", "test_intersection")
    assert result(c, boot).status is Status.PASSED
    with pytest.raises(AssertionError, match="WARN_ON: WARNING: CPU: 0 PID: 1 at kernel/"):
        outcome(c, result(c, boot))


def test_skip_and_failure(boot: list) -> None:
    c = case("resource_test", "test_skip")
    with pytest.raises(pytest.skip.Exception, match="not on this arch"):
        outcome(c, result(c, boot))
    c = case("list-kernel-test", "list_test_list_init")
    with pytest.raises(AssertionError, match=r"EXPECTATION FAILED at lib/list-test\.c:30"):
        outcome(c, result(c, boot))


@pytest.mark.parametrize("suite, name, words", [
    ("list-kernel-test", "list_test_list_del", "did not report"),  # the log ended first
    ("devm-inconsistent-test", "x", "suite devm-inconsistent-test did not report"),
    ("resource_test", "test_gone", "did not report .suite resource_test: passed"),
])
def test_a_case_the_log_never_reported_is_an_error(boot: list, suite: str, name: str,
                                                  words: str) -> None:
    c = case(suite, name)
    assert result(c, boot).status is Status.ERROR
    with pytest.raises(KernelTestDidNotReport, match=words):
        outcome(c, result(c, boot))


def test_paths() -> None:
    assert case("list-kernel-test", "list_test_list_init").ktap_path == \
        "kunit.list-kernel-test.list_test_list_init"
    assert case("a", "b").ident == "a/b"
