"""A pull-lab job definition, as kernelci-core's pull_labs.jinja2 renders it, read and checked
(each problem one line); and a run's results in the callback's bodies: the PULL_LABS one
(kernelci-core runtime/pull_labs.py `Callback`) field by field, and the LAVA-shaped one the
pipeline's callback service parses today. A kernel failure fails the job and its suite alike;
anything that is not the kernel is an infrastructure error."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
from edited import REMOVED, edited

from cocolab.lab.job import INFRA, TEST_ERROR, Job, JobError, check_node_id, infra, outcome
from cocolab.results import RunFacts, RunResults, TestResult
from cocolab.results.verdict import Verdict

NODE = "65a1f0c2d3e4b5a6c7d8e9f0"

GOOD: dict[str, Any] = {  # the template's fields, in its order: no config artifact
    "artifacts": {"kernel": "https://h/bzImage", "modules": "https://h/modules.tar.xz",
                  "dtb": "https://h/x.dtb"},
    "tests": [{"id": "t1", "type": "cocolab", "depends": [], "timeout_s": 900,
               "parameters": "tests/devmem tests/cc/test_x.py::test_y[a]",
               "pre-commands": [], "post-commands": []},
              {"id": "boot-test-65a1f0c2", "type": "boot", "depends": [], "timeout_s": 600,
               "pre-commands": [], "post-commands": []}],
    "environment": {"platform": "qemu-x86_64", "arch": "x86_64",
                    "console": {"method": "serial", "baud": 115200}},
    "callback": {"url": f"https://h/node/{NODE}", "token_name": "kernelci-pipeline-callback"},
    "integrity": {"sha256": {"kernel": "AB" * 32, "_comment": "x"}},
}


def test_a_job_as_the_template_renders_it_reads_as_its_selection_timeout_and_sums() -> None:
    job = Job.parse(NODE, GOOD)
    assert job.selection == ("tests/devmem", "tests/cc/test_x.py::test_y[a]")
    assert job.timeout_s == 900 and job.callback_url == f"https://h/node/{NODE}"
    assert job.token_name == "kernelci-pipeline-callback"
    assert job.sha256 == {"kernel": "ab" * 32}  # "_comment" is the template's "none known"
    assert sorted(job.artifacts) == ["kernel", "modules"]  # not the dtb


def test_integrity_is_optional_as_in_the_template() -> None:
    assert Job.parse(NODE, edited(GOOD, "integrity", REMOVED)).sha256 == {}


def changed(path: str, value: Any) -> dict[str, Any]:
    return edited(GOOD, path, value)


@pytest.mark.parametrize("data, says", [
    ([], "not a JSON object"),
    (changed("artifacts", "x"), "no artifacts object of URLs"),
    (changed("artifacts.kernel", REMOVED), "no 'kernel' artifact"),
    (changed("artifacts.kernel", "file:///etc/shadow"), "kernel artifact 'file:///etc/shadow' "
     "is not an http(s) URL"),
    (changed("environment.arch", "arm64"), "arch 'arm64'; this lab runs x86_64"),
    (changed("tests.0.type", "ltp"), "no test of type 'cocolab' (it has boot, ltp)"),
    (changed("tests.0.parameters", ["tests/devmem"]), "parameters is list, not the string"),
    (changed("tests.0.parameters", "/etc/passwd"), "must name test paths under tests/"),
    (changed("tests.0.parameters", "tests/../../x"), "must name test paths under tests/"),
    (changed("tests.0.parameters", "tests/devmem; rm -rf /"), "must name test paths"),
    (changed("tests.0.parameters", ""), "must name test paths"),
    (changed("tests.0.timeout_s", "soon"), "timeout_s 'soon' is not a positive number"),
    (changed("tests.0.timeout_s", float("inf")), "timeout_s 'inf' is not a positive number"),
    (changed("tests.0.timeout_s", float("nan")), "timeout_s 'nan' is not a positive number"),
    (changed("tests.0.timeout_s", -1), "timeout_s '-1' is not a positive number"),
    (changed("tests.0.timeout_s", True), "timeout_s 'True' is not a positive number"),
    (changed("tests.0.timeout_s", 86400), "ask for 86400 s in all; this lab runs a job for at "
     "most 21600 s"),
    (changed("callback", REMOVED), "no callback url and token_name"),
    (changed("callback.token_name", REMOVED), "no callback url and token_name"),
    (changed("integrity.sha256", "x"), "integrity has no sha256 object"),
    (changed("integrity.sha256.kernel", "abc"), "integrity.sha256.kernel 'abc' is not a sha256"),
])
def test_a_bad_job_definition_is_one_line(data: Any, says: str) -> None:
    with pytest.raises(JobError) as info:
        Job.parse(NODE, data)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_timeout_1e999_from_json_is_refused() -> None:
    data = json.loads(json.dumps(GOOD).replace('"timeout_s": 900', '"timeout_s": 1e999'))
    with pytest.raises(JobError, match="timeout_s 'inf' is not a positive number"):
        Job.parse(NODE, data)


@pytest.mark.parametrize("node_id", ["../../../victim", "n1", NODE.upper(), NODE + "0",
                                     f"{NODE[:-1]}/", None, 7])
def test_only_a_kernelci_node_id_is_taken(node_id: object) -> None:
    with pytest.raises(JobError, match="is not a KernelCI node id"):
        check_node_id(node_id)


FACTS = RunFacts(lane="default", kernel="/lab/bzImage", kernel_release="6.12.1",
                 kernel_config_sha256="cd" * 32, qemu="qemu", accel="tcg", cc="none",
                 host_cpu="cpu", started="2026-12-03T00:00:00+00:00", selected=3)


def run(*tests: TestResult) -> RunResults:
    return RunResults(FACTS, list(tests))


PASSED = TestResult("tests/devmem/test_a.py::test_x", "passed", 1.25)
KNOWN = TestResult("tests/devmem/test_a.py::test_y", "xfailed", 1.0, "known",
                   baseline="default: out of tree")
SKIPPED = TestResult("tests/cc/test_b.py::test_z", "skipped", 0.0, "needs X")
RIG = TestResult("tests/devmem/test_a.py::test_r", "error", 9.0, "BootError: no READY",
                 rig_failure=True)


def test_the_pull_labs_body_follows_kernelcis_callback_field_by_field() -> None:
    body = outcome(run(PASSED, SKIPPED), b"pytest says\n", "qemu-x86_64").body()
    assert set(body) == {"tests", "summary", "metadata", "artifacts"}
    assert body["tests"] == {
        "devmem": {"status": "pass", "duration_ms": 1250,
                   "subtests": {"test_a.py::test_x": {"status": "pass", "duration_ms": 1250}}},
        "cc": {"status": "skip", "duration_ms": 0,
               "subtests": {"test_b.py::test_z": {"status": "skip", "duration_ms": 0}}}}
    assert body["summary"] == {"total": 2, "failed": 0}
    assert body["metadata"]["system"] == "qemu-x86_64" and "error_code" not in body["metadata"]
    log = body["artifacts"]["log"]
    assert log.startswith("base64:")
    assert gzip.decompress(base64.b64decode(log[7:])) == b"pytest says\n"


def test_a_known_issue_fails_its_suite_and_its_job_alike() -> None:
    got = outcome(run(PASSED, KNOWN))
    body = got.body()
    assert got.verdict is Verdict.KNOWN and got.result == "fail"
    assert body["tests"]["devmem"]["status"] == "fail"
    assert body["summary"] == {"total": 2, "failed": 1}  # Callback: failed > 0 -> fail


def test_a_rig_failure_is_an_infrastructure_error_never_a_kernel_failure() -> None:
    got = outcome(run(RIG, TestResult("tests/devmem/test_a.py::test_y", "failed", 1.0, "x")))
    body = got.body()
    assert got.result == "incomplete"
    assert body["error_code"] == body["metadata"]["error_code"] == INFRA
    assert "test_r: BootError: no READY" in body["error_msg"]
    assert body["tests"]["devmem"]["status"] == "error"


def test_a_tests_own_error_is_a_test_error_code() -> None:
    body = outcome(run(TestResult("tests/x/test_a.py::t", "error", 1.0, "fixture"))).body()
    assert body["error_code"] == TEST_ERROR


def test_a_run_without_tests_is_an_infrastructure_error() -> None:
    body = outcome(run()).body()
    assert body["error_code"] == INFRA and body["summary"] == {"total": 0, "failed": 0}


def test_the_lava_body_has_what_the_pipelines_lava_callback_reads() -> None:
    body = outcome(run(PASSED, KNOWN, RIG), b"a\nb\n", "qemu-x86_64").body("lava")
    assert body["status"] == 3  # LAVA's INCOMPLETE: the rig failure
    assert json.loads(body["definition"])["metadata"]["system"] == "qemu-x86_64"
    stages = json.loads(body["results"]["lava"])
    assert stages[0] == {"name": "job", "result": "fail", "metadata": {
        "error_type": INFRA, "error_msg": stages[0]["metadata"]["error_msg"]}}
    assert stages[1] == {"name": "1_devmem", "metadata": {}, "result": "incomplete"}
    suite = json.loads(body["results"]["1_devmem"])
    assert [(t["name"], t["result"]) for t in suite] == [
        ("test_a.py::test_x", "pass"), ("test_a.py::test_y", "fail"),
        ("test_a.py::test_r", "unknown")]
    assert all("metadata" in t for t in suite)  # lava.Callback reads test["metadata"]
    assert [e["msg"] for e in json.loads(body["log"])] == ["a", "b"]


def test_an_infrastructure_error_after_pytest_ran_carries_its_log() -> None:
    body = infra("pytest did not finish in 9s", log=b"collected 3 items\n").body()
    assert body["error_code"] == INFRA
    assert gzip.decompress(base64.b64decode(body["artifacts"]["log"][7:])) == \
        b"collected 3 items\n"
