"""A pull-lab job definition read and checked (each problem one line), and a run's results as
KernelCI nodes: a kernel failure fails the job, a VM that would not boot makes it an
infrastructure error, never a kernel failure."""

from __future__ import annotations

from typing import Any

import pytest
from edited import REMOVED, edited

from cocolab.lab.job import INFRA, Job, JobError, outcome
from cocolab.results import RunFacts, RunResults, TestResult

GOOD: dict[str, Any] = {
    "artifacts": {"kernel": "http://h/bzImage", "config": "http://h/config",
                  "modules": "http://h/modules.tar.xz", "dtb": "http://h/x.dtb"},
    "tests": [{"id": "t1", "type": "cocolab", "depends": [], "timeout_s": 900,
               "parameters": "tests/devmem tests/cc/test_x.py::test_y[a]"},
              {"id": "boot", "type": "boot", "timeout_s": 60}],
    "environment": {"platform": "qemu-x86_64", "arch": "x86_64"},
    "callback": {"url": "http://h/node/n1", "token_name": "lab"},
    "integrity": {"sha256": {"kernel": "ab" * 32, "_comment": "x"}},
}


def test_a_good_job_reads_as_its_selection_timeout_and_checksums() -> None:
    job = Job.parse("n1", GOOD)
    assert job.selection == ("tests/devmem", "tests/cc/test_x.py::test_y[a]")
    assert job.timeout_s == 900 and job.callback_url == "http://h/node/n1"
    assert job.sha256 == {"kernel": "ab" * 32}
    assert sorted(job.artifacts) == ["config", "kernel", "modules"]  # not the dtb


def changed(path: str, value: Any) -> dict[str, Any]:
    return edited(GOOD, path, value)


@pytest.mark.parametrize("data, says", [
    ([], "not a JSON object"),
    (changed("artifacts", "x"), "no artifacts object of URLs"),
    (changed("artifacts.config", REMOVED), "no 'config' artifact"),
    (changed("artifacts.kernel", "file:///etc/shadow"), "kernel artifact 'file:///etc/shadow' "
     "is not an http(s) URL"),
    (changed("environment.arch", "arm64"), "arch 'arm64'; this lab runs x86_64"),
    (changed("tests.0.type", "ltp"), "no test of type 'cocolab' (it has boot, ltp)"),
    (changed("tests.0.parameters", "/etc/passwd"), "must name test paths under tests/"),
    (changed("tests.0.parameters", "tests/../../x"), "must name test paths under tests/"),
    (changed("tests.0.parameters", "tests/devmem; rm -rf /"), "must name test paths"),
    (changed("tests.0.parameters", ""), "must name test paths"),
    (changed("tests.0.timeout_s", "soon"), "timeout_s 'soon' is not seconds"),
    (changed("callback", REMOVED), "no callback url"),
])
def test_a_bad_job_definition_is_one_line(data: Any, says: str) -> None:
    with pytest.raises(JobError) as info:
        Job.parse("n1", data)
    assert says in str(info.value) and "\n" not in str(info.value)


FACTS = RunFacts(lane="default", kernel="/lab/bzImage", kernel_release="6.12.1",
                 kernel_config_sha256="cd" * 32, qemu="qemu", accel="tcg", cc="none",
                 host_cpu="cpu", started="2026-12-03T00:00:00+00:00", selected=3)


def run(*tests: TestResult) -> RunResults:
    return RunResults(FACTS, list(tests))


def test_all_passed_is_a_passing_job_with_a_node_per_test_suite_and_boot() -> None:
    got = outcome(run(TestResult("tests/devmem/test_a.py::test_x", "passed", 1.0),
                      TestResult("tests/devmem/test_a.py::test_y", "xfailed", 1.0, "known",
                                 baseline="default: out of tree"),
                      TestResult("tests/devmem/test_b.py::test_z", "skipped", 0.0, "needs X")))
    assert got.result == "pass" and not got.error
    by_name = {n["name"]: n for n in got.nodes}
    assert by_name["boot"]["result"] == "pass"
    assert by_name["devmem"]["result"] == "fail"  # the known failure is still a failure
    assert by_name["test_a.py::test_y"]["data"]["baseline"] == "default: out of tree"
    assert by_name["test_b.py::test_z"]["result"] == "skip"
    assert got.job_node()["data"]["outcomes"] == {"passed": 1, "xfailed": 1, "skipped": 1}


def test_a_kernel_failure_fails_the_job() -> None:
    got = outcome(run(TestResult("tests/devmem/test_a.py::test_x", "failed", 1.0, "assert")))
    assert got.result == "fail" and "error_code" not in got.job_node()["data"]


def test_a_vm_that_would_not_boot_is_an_infrastructure_error() -> None:
    got = outcome(run(TestResult("tests/devmem/test_a.py::test_x", "error", 9.0,
                                 "BootError: no READY", rig_failure=True),
                      TestResult("tests/devmem/test_a.py::test_y", "failed", 1.0, "assert")))
    node = got.job_node()
    assert node["result"] == "incomplete" and node["data"]["error_code"] == INFRA
    assert "lost their VM" in node["data"]["error_msg"]
    boot = next(n for n in got.nodes if n["name"] == "boot")
    assert boot["result"] == "incomplete" and boot["data"]["error_code"] == INFRA


def test_a_run_without_tests_is_an_infrastructure_error() -> None:
    assert outcome(run()).job_node()["data"]["error_code"] == INFRA
