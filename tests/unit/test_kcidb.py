"""KCIDB identities carry what was tested: the patch set, the lane and the kind of guest. A
simulated confidential run, a hardware one and a plain one of the same kernel never share an
id or a path, and say which they are in the environment, not only in free text."""

from __future__ import annotations

import dataclasses
import hashlib

from cocolab.results import RunFacts, RunResults, TestResult
from cocolab.results.kcidb import guest_kind, patchset, report

PATCH = "ab" * 32 + " /src/cc-sim-tdx.patch"
PLAIN = RunFacts(lane="default", kernel="build:debian:7.3", kernel_release="7.3.4",
                 kernel_config_sha256="cd" * 32, qemu="qemu", accel="tcg", cc="none",
                 host_cpu="cpu", started="2026-12-03T00:00:00+00:00", selected=1)
SIM = dataclasses.replace(PLAIN, lane="cc-sim-tdx", cc="simulated TDX guest", simulated=True,
                          patches=(PATCH,))
HW = dataclasses.replace(PLAIN, lane="tdx", cc="tdx")
TEST = TestResult("tests/devmem/test_cc.py::test_devmem_closed", "passed", 1.0)


def doc(facts: RunFacts) -> dict:
    return report([RunResults(facts, [TEST])], "cocolab_test")


def test_a_simulated_run_cannot_be_taken_for_a_hardware_or_plain_one() -> None:
    plain, sim, hw = doc(PLAIN), doc(SIM), doc(HW)
    ids = [{d[k][0]["id"] for d in (plain, sim, hw)} for k in ("checkouts", "builds", "tests")]
    assert [len(i) for i in ids] == [2, 2, 3]  # hw and plain: one kernel; sim: patched
    assert [d["tests"][0]["path"] for d in (plain, sim, hw)] == [
        "cocolab.default.devmem.test_cc.test_devmem_closed",
        "cocolab.cc-sim-tdx.devmem.test_cc.test_devmem_closed",
        "cocolab.tdx.devmem.test_cc.test_devmem_closed"]
    envs = [d["tests"][0]["environment"]["misc"] for d in (plain, sim, hw)]
    assert [(e["guest"], e["simulated"]) for e in envs] == [
        ("plain", False), ("sim-tdx", True), ("hw-tdx", False)]
    assert "SIMULATED TDX guest (not confidential)" in sim["tests"][0]["environment"]["comment"]


def test_the_patchset_hash_is_kcidbs_over_each_patchs_sha256() -> None:
    pset, files = patchset((PATCH, "ef" * 32 + " /src/two.patch"))
    assert pset == hashlib.sha256(("ab" * 32 + "\n" + "ef" * 32 + "\n").encode()).hexdigest()
    assert files == [{"name": "cc-sim-tdx.patch", "url": "file:///src/cc-sim-tdx.patch"},
                     {"name": "two.patch", "url": "file:///src/two.patch"}]
    assert patchset(()) == ("", [])
    checkout = doc(SIM)["checkouts"][0]
    assert checkout["patchset_hash"] == patchset((PATCH,))[0]
    assert checkout["patchset_files"][0]["name"] == "cc-sim-tdx.patch"
    assert doc(PLAIN)["checkouts"][0]["patchset_hash"] == ""


def test_a_known_issue_is_a_kcidb_issue_with_an_incident() -> None:
    known = TestResult("tests/devmem/test_cc.py::t", "xfailed", 1.0, "not in 7.3",
                       baseline="cc-sim-tdx: the /dev/mem CC rule is out of tree")
    d = report([RunResults(SIM, [known])], "cocolab_test")
    assert d["tests"][0]["status"] == "FAIL"
    assert d["issues"][0]["comment"].startswith("cc-sim-tdx: the /dev/mem CC rule")
    assert d["incidents"][0]["test_id"] == d["tests"][0]["id"]
    assert d["incidents"][0]["issue_id"] == d["issues"][0]["id"]


def test_guest_kinds() -> None:
    assert guest_kind("none", False) == "plain"
    assert guest_kind("tdx", False) == "hw-tdx"
    assert guest_kind("simulated TDX guest", True) == "sim-tdx"


def test_a_kernel_test_is_named_by_its_ktap_path() -> None:
    """A kselftest case or KUnit case keeps the path other labs report it under (validated
    against KCIDB's schema by report())."""
    tests = [TestResult("tests/kselftest/test_kselftest.py::test_kselftest[iommu/iommufd/"
                        "iommufd_ioas.mock_domain.area]", "passed", 0.4,
                        ktap_path="kselftest.iommu.iommufd.iommufd_ioas.mock_domain.area"),
             TestResult("tests/kunit/test_kunit.py::test_kunit[list-kernel-test/"
                        "list_test_list_init]", "failed", 0.1,
                        ktap_path="kunit.list-kernel-test.list_test_list_init")]
    d = report([RunResults(SIM, tests)], "cocolab_test")
    assert [t["path"] for t in d["tests"]] == [
        "cocolab.cc-sim-tdx.kselftest.iommu.iommufd.iommufd_ioas.mock_domain.area",
        "cocolab.cc-sim-tdx.kunit.list-kernel-test.list_test_list_init"]
    assert [t["status"] for t in d["tests"]] == ["PASS", "FAIL"]
