"""The avocado bridge without QEMU: the verdict table, the bridge plugin's reports and tags from
a real inner pytest, the resolver and the runner (when avocado is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cocolab.avocado.verdict import (
    CANCEL,
    ERROR,
    FAIL,
    PASS,
    SKIP,
    WARN,
    Phase,
    outcome,
    pytest_said,
    verdict,
)

pytest_plugins = ["pytester"]
NO_QEMU = (f"--qemu={Path(__file__).with_name('fake_qemu.py')}", "--accel=tcg",
           "-p", "no:cacheprovider")
"""As test_plugin's, with each value joined to its option: pytest takes the value of an option
it does not know yet for a path when it looks for the rootdir."""

OK_SETUP, OK_TEARDOWN = Phase("setup", "passed"), Phase("teardown", "passed")


@pytest.mark.parametrize("phases, expected", [
    ([OK_SETUP, Phase("call", "passed"), OK_TEARDOWN], (PASS, "")),
    ([OK_SETUP, Phase("call", "failed", "assert 1 == 2"), OK_TEARDOWN],
     (FAIL, "assert 1 == 2")),
    ([OK_SETUP, Phase("call", "failed", "VMError: gone", rig_failure=True), OK_TEARDOWN],
     (ERROR, "VMError: gone")),
    ([Phase("setup", "failed", "did not boot"), OK_TEARDOWN], (ERROR, "did not boot")),
    ([Phase("setup", "skipped", "needs CONFIG_X"), OK_TEARDOWN], (SKIP, "needs CONFIG_X")),
    ([OK_SETUP, Phase("call", "skipped", "no BAR"), OK_TEARDOWN], (CANCEL, "no BAR")),
    ([OK_SETUP, Phase("call", "skipped", "bug 1", xfail=True), OK_TEARDOWN],
     (PASS, "xfail: bug 1")),
    ([Phase("setup", "skipped", "bug 2", xfail=True), OK_TEARDOWN], (PASS, "xfail: bug 2")),
    ([OK_SETUP, Phase("call", "passed", "bug 3", xfail=True), OK_TEARDOWN],
     (WARN, "xpass: marked xfail (bug 3) but passed")),
    ([OK_SETUP, Phase("call", "passed"), Phase("teardown", "failed", "leak")],
     (ERROR, "teardown: leak")),
    ([OK_SETUP, Phase("call", "failed", "assert"), Phase("teardown", "failed", "leak")],
     (FAIL, "assert")),
    ([Phase("setup", "skipped", "skip"), Phase("teardown", "failed", "leak")],
     (ERROR, "teardown: leak")),
    ([], (ERROR, "pytest ran no setup for this item")),
    ([OK_SETUP], (ERROR, "pytest ran the setup but not the test body")),
])
def test_verdict_table(phases: list[Phase], expected: tuple[str, str]) -> None:
    assert verdict(phases) == expected


def test_an_item_pytest_never_ran_is_an_error_saying_why() -> None:
    output = "ERROR: file or directory not found: tests/x.py::y\n\nno tests ran in 0.01s\n"
    status, reason, bundle = outcome("tests/x.py::y", [], 4, output)
    assert (status, bundle) == (ERROR, None)
    assert reason == ("pytest ran no test tests/x.py::y (exit 4): ERROR: file or directory not "
                      "found: tests/x.py::y")
    assert pytest_said("a\n\nlast words\n") == "last words"


SAMPLE = """
    import pytest

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture broke")

    @pytest.fixture
    def leaky():
        yield
        raise RuntimeError("teardown broke")

    def test_pass(): pass
    def test_fail(): assert 1 == 2, "one is not two"
    def test_setup_error(broken): pass
    def test_teardown_error(leaky): pass
    @pytest.mark.skip(reason="not on this host")
    def test_skip_mark(): pass
    def test_skip_in_body(): pytest.skip("gave up inside")
    @pytest.mark.xfail(reason="known bug")
    def test_xfail(): assert 0
    @pytest.mark.xfail(reason="fixed since")
    def test_xpass(): pass
    @pytest.mark.xfail(reason="must fail", strict=True)
    def test_xpass_strict(): pass
"""
EXPECTED = {
    "test_pass": (PASS, ""),
    "test_fail": (FAIL, "AssertionError: one is not two\nassert 1 == 2"),
    "test_setup_error": (ERROR, "RuntimeError: fixture broke"),
    "test_teardown_error": (ERROR, "teardown: RuntimeError: teardown broke"),
    "test_skip_mark": (SKIP, "not on this host"),
    "test_skip_in_body": (CANCEL, "gave up inside"),
    "test_xfail": (PASS, "xfail: known bug"),
    "test_xpass": (WARN, "xpass: marked xfail (fixed since) but passed"),
    "test_xpass_strict": (FAIL, "[XPASS(strict)] must fail"),
}


def test_the_bridge_reports_every_outcome_as_avocado_expects(pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(test_sample=SAMPLE)
    report = pytester.path / "report.json"
    pytester.runpytest("-p", "cocolab.avocado.bridge", "--cocolab-avocado-report", str(report),
                       *NO_QEMU)
    reports = json.loads(report.read_text())
    got = {name: outcome(f"{path.name}::{name}", reports, 1, "")[:2] for name in EXPECTED}
    assert got == EXPECTED


def test_the_bridge_tags_items_from_their_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_tags="""
        import pytest
        def test_plain(): pass
        def test_on_the_lane_machine(vm): pass
        @pytest.mark.topology("shared-group")
        @pytest.mark.kconfig("VFIO_PCI", "CONFIG_IOMMUFD=y")
        def test_topology(vm): pass
        @pytest.mark.machine("q35-intel-iommu")
        @pytest.mark.fresh_vm
        def test_machine(vm): pass
        def test_confidential(vm, cc_guest): pass
    """)
    out = pytester.path / "collected.json"
    result = pytester.runpytest("--collect-only", "-q", "-p", "cocolab.avocado.bridge",
                                "--cocolab-avocado-collect", str(out), *NO_QEMU)
    assert result.ret == 0
    collected = json.loads(out.read_text())
    assert collected["rootdir"] == str(pytester.path)
    tags = {item["nodeid"].split("::")[1]: item["tags"] for item in collected["items"]}
    every_lane = ["cc-sim-tdx", "default", "hardening", "snp", "tdx"]
    cc_lanes = ["cc-sim-tdx", "snp", "tdx"]
    assert tags == {
        "test_plain": {"lane": every_lane},
        "test_on_the_lane_machine": {"vm": None, "machine": ["q35"], "lane": every_lane},
        "test_topology": {"vm": None, "machine": ["q35-intel-iommu"],
                          "topology": ["shared-group"],
                          "kconfig": ["INTEL_IOMMU", "IOMMUFD", "IRQ_REMAP", "VFIO_PCI"],
                          "lane": every_lane},
        "test_machine": {"vm": None, "machine": ["q35-intel-iommu"], "lane": every_lane,
                         "kconfig": ["INTEL_IOMMU", "IRQ_REMAP"], "fresh_vm": None},
        "test_confidential": {"vm": None, "machine": ["q35"], "lane": cc_lanes},
    }


# --- with avocado installed (the extra cocolab[avocado]) ---

def test_the_resolver_claims_pytest_references_only(tmp_path: Path) -> None:
    resolver = pytest.importorskip("cocolab.avocado.resolver", reason="avocado not installed: "
                                   "pip install -e '.[avocado]'")
    (tmp_path / "sub").mkdir()
    assert resolver.claims("tests/devmem/test_lockdown.py")
    assert resolver.claims("tests/devmem/test_lockdown.py::test_x[a::b]")
    assert resolver.claims("tests/x/check_test.py")
    assert resolver.claims(str(tmp_path / "sub"))
    assert not resolver.claims("tests/devmem/conftest.py")
    assert not resolver.claims("tests/devmem/__pycache__/test_lockdown.cpython-311.pyc")
    assert not resolver.claims("README.md::x")


@pytest.fixture
def addopts(monkeypatch: pytest.MonkeyPatch) -> None:
    """cocolab options reach the resolver's and the runner's pytest as a user's would; a user's
    -n is overridden (the bridge sees the reports of the process that runs the item)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", " ".join((*NO_QEMU, "-n", "2")))
    monkeypatch.setenv("FAKE_QEMU_OUTCOME", "abort")


def test_the_resolver_gives_one_tagged_runnable_per_item(
        pytester: pytest.Pytester, addopts: None) -> None:
    resolver = pytest.importorskip("cocolab.avocado.resolver")
    from avocado.core.resolver import ReferenceResolutionResult

    path = pytester.makepyfile(test_two="""
        import pytest
        @pytest.mark.parametrize("n", [1, 2])
        @pytest.mark.kconfig("DEVMEM")
        def test_n(n, vm): pass
    """)
    resolution = resolver.PytestResolver().resolve(str(path))
    assert resolution.result == ReferenceResolutionResult.SUCCESS
    assert [(r.kind, r.uri, r.kwargs) for r in resolution.resolutions] == [
        ("cocolab-pytest", f"test_two.py::test_n[{n}]", {"rootdir": str(pytester.path)})
        for n in (1, 2)]
    assert resolution.resolutions[0].tags == {"vm": None, "machine": {"q35"},
                                              "kconfig": {"DEVMEM"},
                                              "lane": {"cc-sim-tdx", "default",
                                                       "hardening", "snp", "tdx"}}


def test_names_do_not_depend_on_where_avocado_was_started(
        pytester: pytest.Pytester, addopts: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout beside the tests (both under /tmp) once made pytest's rootdir their common
    parent, and every name 'pytest-of-root/.../test_x.py::test_y'."""
    resolver = pytest.importorskip("cocolab.avocado.resolver")
    path = pytester.makepyfile(test_one="def test_it(): pass")
    checkout = pytester.path.parent / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    resolution = resolver.PytestResolver().resolve(str(path))
    assert [(r.uri, r.kwargs) for r in resolution.resolutions] == [
        ("test_one.py::test_it", {"rootdir": str(pytester.path)})]
    relative = resolver.PytestResolver().resolve(f"../{pytester.path.name}/test_one.py")
    assert [r.uri for r in relative.resolutions] == ["test_one.py::test_it"]


def test_a_reference_pytest_refuses_is_an_error_with_pytest_s_line(
        pytester: pytest.Pytester, addopts: None) -> None:
    resolver = pytest.importorskip("cocolab.avocado.resolver")
    from avocado.core.resolver import ReferenceResolutionResult

    path = pytester.makepyfile(test_bad="""
        import pytest
        @pytest.mark.kconfig("lower case")
        def test_x(vm): pass
    """)
    resolution = resolver.PytestResolver().resolve(str(path))
    assert resolution.result == ReferenceResolutionResult.ERROR
    assert resolution.info == ("pytest could not collect it (exit 4): ERROR: test_bad.py::test_x: "
                               "kconfig option 'lower case' is not NAME, NAME=y, NAME=m or NAME=n")
    empty = pytester.makepyfile(test_empty="x = 1")
    assert resolver.PytestResolver().resolve(str(empty)).result == \
        ReferenceResolutionResult.NOTFOUND


def test_the_runner_runs_one_item_and_reports_its_verdict(
        pytester: pytest.Pytester, addopts: None, tmp_path: Path) -> None:
    runner = pytest.importorskip("cocolab.avocado.runner")
    from avocado.core.nrunner.runnable import Runnable

    pytester.makepyfile(test_sample=SAMPLE)
    for name in ("test_fail", "test_skip_in_body", "test_xpass"):
        output_dir = tmp_path / name
        output_dir.mkdir()
        runnable = Runnable("cocolab-pytest", f"test_sample.py::{name}",
                            rootdir=str(pytester.path), output_dir=str(output_dir))
        messages = list(runner.PytestRunner().run(runnable))
        assert messages[0]["status"] == "started"
        final = messages[-1]
        assert final["status"] == "finished"
        assert (final["result"], final["fail_reason"] or "") == EXPECTED[name], name
        stdout = b"".join(m["log"] for m in messages if m.get("type") == "stdout").decode()
        assert f"test_sample.py::{name}" in stdout  # pytest's own verbose line, for the log
    missing = Runnable("cocolab-pytest", "test_sample.py::test_gone", rootdir=str(pytester.path))
    final = list(runner.PytestRunner().run(missing))[-1]
    assert final["result"] == ERROR
    assert final["fail_reason"].startswith("pytest ran no test test_sample.py::test_gone (exit 4)")
