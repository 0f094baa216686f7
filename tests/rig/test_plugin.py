"""The pytest plugin, black-box with pytester; nothing here boots a VM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
NO_QEMU = ("--qemu", str(Path(__file__).with_name("fake_qemu.py")), "--accel", "tcg",
           "-p", "no:cacheprovider")
"""A QEMU that answers cocolab's probe and boots nothing (tests that must not boot)."""


@pytest.fixture(autouse=True)
def _fake_qemu_boots_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_OUTCOME", "abort")  # any boot, the accelerator's proof too


def test_markers_are_registered_with_their_signature(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.cmdline(*words):*",
                                 "@pytest.mark.kconfig(*options):*"])


def test_options_are_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--kernel=SPEC*", "*--accel=*", "*--append=WORDS*"])


def test_a_bad_marker_argument_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.cmdline(1)
        def test_x(vm): pass
    """)
    result = pytester.runpytest("--collect-only", *NO_QEMU)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*takes strings only: @pytest.mark.cmdline(*words)*"])


def test_a_malformed_kconfig_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.kconfig("strict-devmem")
        def test_x(vm): pass
    """)
    result = pytester.runpytest("--collect-only", *NO_QEMU)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'strict-devmem' is not NAME, NAME=y, NAME=m or NAME=n*"])


def test_an_unknown_lane_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--lane", "nosuchlane", *NO_QEMU)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lane nosuchlane: no such lane; choose one of*"])


def test_a_chosen_qemu_that_is_no_qemu_is_one_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    no_qemu = Path(__file__).with_name("no-qemu")
    result = pytester.runpytest("--qemu", str(no_qemu), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --qemu {no_qemu}: {no_qemu} is not a working QEMU: "
                                 "it exited with status 1*"])


def test_header_names_lane_and_kernel_and_probes_nothing_without_a_vm(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain(): assert True")
    result = pytester.runpytest(*NO_QEMU)
    result.stdout.fnmatch_lines(["cocolab lane: default*", "cocolab kernel: debian:*"])
    result.stdout.no_fnmatch_line("cocolab QEMU*")  # QEMU never started, no kernel fetched
    result.stdout.no_fnmatch_line("cocolab accelerator*")
    result.assert_outcomes(passed=1)


def test_qemu_and_accelerator_are_said_once_a_selected_test_boots_a_vm(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.skip("selected, and wants a VM, but boots none here")
        def test_guest(vm): pass
        def test_plain(): pass
    """)
    result = pytester.runpytest(*NO_QEMU, "-k", "test_guest")
    result.stdout.fnmatch_lines(["collected 2 items / 1 deselected / 1 selected",
                                 "cocolab QEMU: *fake_qemu.py 7.2.0"])
    result = pytester.runpytest(*NO_QEMU, "-k", "test_plain")
    result.stdout.no_fnmatch_line("cocolab QEMU*")
    result = pytester.runpytest(*NO_QEMU, "--collect-only", "-k", "test_guest")
    result.stdout.no_fnmatch_line("cocolab QEMU*")  # collecting boots nothing


@pytest.mark.parametrize(("args", "line"), [
    (("--results", "{file}/sub"), "*--results {file}/sub: {file} is a file, not a directory*"),
    (("--boot-timeout", "nan"), "*--boot-timeout nan: give seconds above 0*"),
    (("--append", 'x="a'), "*--append 'x=\"a': No closing quotation*"),
    (("--boot-ahead", "-1"), "*--boot-ahead -1: give 0 (off) or more VMs*"),
])
def test_bad_options_are_one_usage_error(pytester: pytest.Pytester, args: tuple[str, ...],
                                         line: str) -> None:
    blocker = pytester.path / "afile"
    blocker.write_text("")
    result = pytester.runpytest(*(a.format(file=blocker) for a in args), *NO_QEMU)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([line.format(file=blocker)])
    assert "Traceback" not in result.stderr.str()


def test_a_qemu_args_marker_that_reaches_outside_is_a_usage_error(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.qemu_args("-netdev", "user,id=x")
        def test_x(vm): pass
    """)
    result = pytester.runpytest(*NO_QEMU)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x: @pytest.mark.qemu_args: -netdev 'user,id=x': user "
                                 "networking needs restrict=on*"])


def test_a_host_file_in_qemu_args_needs_allow_host_paths(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.qemu_args("-drive", "file=/srv/img/a.raw,if=none,format=raw")
        def test_undeclared(vm): pass
    """)
    result = pytester.runpytest(*NO_QEMU, "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_undeclared: @pytest.mark.qemu_args: -drive *file "
                                 "'/srv/img/a.raw' is a host path outside the VM's own "
                                 "directory*allow_host_paths*"])
    pytester.makepyfile("""
        import pytest
        @pytest.mark.allow_host_paths("/srv/img")
        @pytest.mark.qemu_args("-drive", "file=/srv/img/a.raw,if=none,format=raw")
        def test_declared(vm): pass
    """)
    assert pytester.runpytest(*NO_QEMU, "--collect-only").ret == pytest.ExitCode.OK


_SHARES = """
    import pytest

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(session):
        pool = session.config.stash[plugin.POOL]
        print("wanted at collection:", sorted(pool.wanted.values()))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(session):
        pool = session.config.stash[plugin.POOL]
        print("wanted at the end:", sorted(pool.wanted.values()))

    from cocolab.pytest_plugin import plugin
"""


def test_vm_shares_are_counted_after_deselection_and_given_back_by_skips(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(_SHARES)
    pytester.makepyfile("""
        import pytest
        def test_one(vm): pass
        def test_two(vm): pass
        @pytest.mark.skip(reason="never reaches the fixture")
        def test_skipped(vm): pass
        @pytest.mark.cmdline("quiet")
        @pytest.mark.skip(reason="never reaches the fixture either")
        def test_other_vm(vm): pass
    """)
    result = pytester.runpytest("-s", "-k", "skipped or other", *NO_QEMU)
    result.assert_outcomes(skipped=2, deselected=2)
    out = result.stdout.str()
    assert "wanted at collection: [1, 1]" in out and "wanted at the end: [0, 0]" in out, out


@pytest.mark.parametrize("dist", [("--dist", "loadgroup"), ()], ids=["loadgroup", "implied"])
def test_loadgroup_sends_tests_of_one_vm_to_one_worker(pytester: pytest.Pytester,
                                                       dist: tuple[str, ...]) -> None:
    """The xdist_group mark is added before xdist's own hook turns it into the nodeid suffix
    that `--dist loadgroup` schedules by (pytest < 9.2: see pyproject.toml); `-n 2` alone
    implies loadgroup."""
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.skip(reason="collection is what is checked")
        def test_a(vm): pass
        def test_b(vm): pass
        @pytest.mark.cmdline("quiet")
        def test_c(vm): pass
    """)
    result = pytester.runpytest_subprocess("-n", "2", *dist, "-v", *NO_QEMU)
    # '[gw0] [ 33%] SKIPPED test_x.py::test_a@vm-0123456789'
    found = re.findall(r"\[(gw\d)\] .*SKIPPED \S+::(test_\w)@(vm-\w+)", result.stdout.str())
    assert len(found) == 3, result.stdout.str()
    worker = {test: w for w, test, _ in found}
    group = {test: g for _, test, g in found}
    assert group["test_a"] == group["test_b"] != group["test_c"]
    assert worker["test_a"] == worker["test_b"]


def test_a_dist_the_user_chose_is_kept(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(vm): pass\ndef test_b(vm): pass")
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "load", "--collect-only",
                                           "-q", *NO_QEMU)
    assert "@vm-" not in result.stdout.str()  # load: no group suffix scheduling


BASELINE_LANE = """\
description = "a lane with known issues"
kernel = "debian:trixie"
[[expected_failure]]
test = "test_known.py::test_{name}"
reason = "the kernel lacks the rule"
reference = "lore <msgid>"
until = "the rule is merged"
"""


@pytest.mark.parametrize(("body", "outcome", "line"), [
    ("assert False, 'the kernel allowed it'", {"xfailed": 1},
     "XFAIL *test_known.py::test_it - lane: known issue: the kernel lacks the rule (lore "
     "<msgid>); expected until the rule is merged"),
    ("pass", {"failed": 1}, "*[[]XPASS(strict)[]] lane: known issue: the kernel lacks the rule*"),
    ("raise RuntimeError('the rig broke')", {"failed": 1}, "*RuntimeError: the rig broke*"),
])
def test_a_lane_baseline_is_strict_and_covers_kernel_assertions_only(
        pytester: pytest.Pytester, body: str, outcome: dict[str, int], line: str) -> None:
    """A baseline test failing an assertion is the known issue; passing is red (update the
    baseline); failing any other way (the rig) stays red."""
    lane = pytester.path / "lane.toml"
    lane.write_text(BASELINE_LANE.format(name="it"))
    pytester.makepyfile(test_known=f"def test_it():\n    {body}\n")
    pytester.makeconftest("def pytest_runtest_logreport(report):\n"
                          "    if report.when == 'call':\n"
                          "        print('PROPERTIES', report.user_properties)\n")
    result = pytester.runpytest("--lane", str(lane), "-rxX", "-s", *NO_QEMU)
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([line])
    # what JUnit writes as the test case's <property name="cocolab.baseline" ...>
    result.stdout.fnmatch_lines(["*PROPERTIES [[]('cocolab.baseline', 'lane: known issue: the "
                                 "kernel lacks the rule (lore <msgid>); expected until the rule "
                                 "is merged')[]]"])


def test_a_test_without_a_baseline_fails_as_it_always_did(pytester: pytest.Pytester) -> None:
    lane = pytester.path / "lane.toml"
    lane.write_text(BASELINE_LANE.format(name="other"))
    pytester.makepyfile(test_known="def test_it():\n    assert False\n")
    result = pytester.runpytest("--lane", str(lane), *NO_QEMU)
    result.assert_outcomes(failed=1)


@pytest.mark.parametrize("raised", [
    "QMPCommandFailed('stop', 'GenericError', 'the guest is not running')",
    "MonitorError('QMP did not answer within 10s')",
])
def test_a_qmp_failure_in_a_test_body_is_a_rig_failure(pytester: pytest.Pytester,
                                                       raised: str) -> None:
    pytester.makeconftest("""
        import pytest
        @pytest.fixture
        def vm():  # stands in for the booted VM the plugin would give
            return None
    """)
    pytester.makepyfile(f"""
        from cocolab.errors import MonitorError, QMPCommandFailed
        def test_it(vm):
            raise {raised}
    """)
    result = pytester.runpytest(*NO_QEMU)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*RIG FAILURE: not a kernel verdict*"])


def test_a_kernel_the_rig_cannot_use_is_a_rig_failure_in_the_results(
        pytester: pytest.Pytester) -> None:
    """A setup problem that is not the kernel's verdict (here: a kernel the rig cannot boot,
    refused before any boot) and a later test of the same VM are rig failures in the results
    file, so KCIDB says MISS and a pull lab an infrastructure error, never FAIL."""
    from fake_kernel import fake_bzimage

    image = fake_bzimage(pytester.path / "bzImage")
    (pytester.path / "config").write_text("CONFIG_MODULES=y\n")
    pytester.makepyfile("def test_one(vm): pass\ndef test_two(vm): pass\n")
    result = pytester.runpytest(*NO_QEMU, "--kernel", str(image), "--results", "out")
    result.assert_outcomes(errors=2)
    tests = json.loads((pytester.path / "out/cocolab-results.json").read_text())["tests"]
    assert [(t["outcome"], t["rig_failure"]) for t in tests] == [("error", True)] * 2


def test_an_unmet_precondition_is_an_error_never_a_failure(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        @pytest.fixture
        def vm():  # stands in for the booted VM the plugin would give
            return None
    """)
    pytester.makepyfile("""
        from cocolab.assertions import require
        def test_it(vm):
            require(False, "debugfs is not mounted")
            assert False, "never reached: the kernel's assertion"
    """)
    result = pytester.runpytest(*NO_QEMU, "--results", "out")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*PRECONDITION UNMET*"])
    tests = json.loads((pytester.path / "out/cocolab-results.json").read_text())["tests"]
    assert [(t["outcome"], t["rig_failure"], t["reason"]) for t in tests] == [
        ("error", False, "cocolab.errors.PreconditionUnmet: debugfs is not mounted")]


def test_a_finding_is_only_the_kernel_failing_its_assertion(pytester: pytest.Pytester) -> None:
    """@pytest.mark.finding: an AssertionError is the finding (xfailed, its class recorded);
    anything else raised is not (a failure of its own), and a pass is red (strict)."""
    pytester.makepyfile("""
        import pytest
        finding = pytest.mark.finding("dos", "the reader waits for ever")
        @finding
        def test_shows_it(): assert False, "still stuck"
        @finding
        def test_breaks_otherwise(): raise TimeoutError("ssh")
        @finding
        def test_no_longer_shows_it(): pass
    """)
    result = pytester.runpytest(*NO_QEMU, "--results", "out")
    result.assert_outcomes(xfailed=1, failed=2)
    tests = {t["nodeid"].split("::")[1]: t for t in json.loads(
        (pytester.path / "out/cocolab-results.json").read_text())["tests"]}
    assert (tests["test_shows_it"]["outcome"], tests["test_shows_it"]["finding"]) == \
        ("xfailed", "dos")
    assert tests["test_breaks_otherwise"]["outcome"] == "failed"
    assert "XPASS(strict)" in tests["test_no_longer_shows_it"]["reason"]


def test_a_finding_of_no_known_kind_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.finding("scary", "x")
        def test_x(): pass
    """)
    result = pytester.runpytest(*NO_QEMU)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*finding kind 'scary': choose one of memory-safety, "
                                 "info-leak, dos*"])
