"""`cocolab lab` against the stand-in KernelCI API (lab_standin.py), booting nothing: a job is
claimed, its artifacts fetched and checked, its selection run by pytest and its results
posted as nodes; a checksum that does not match, a definition that cannot be run, a job
another lab claimed, another runtime's job, and an API that answers 503 for a while.
(tests/smoke/test_lab_jobs.py runs tests/devmem in a real guest through it.)"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_standin import TOKEN, StandIn, definition

from fake_kernel import fake_bzimage

RUNTIME = "cocolab-test-lab"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A checkout-like directory: tests/sample holds plain tests (no VM), the token file."""
    (tmp_path / "tests/sample").mkdir(parents=True)
    (tmp_path / "tests/sample/test_plain.py").write_text(
        "import pytest\n"
        "def test_one(): pass\n"
        "def test_two(): pass\n"
        "@pytest.mark.skip(reason='not here')\n"
        "def test_three(): pass\n")
    (tmp_path / "token").write_text(TOKEN + "\n")
    return tmp_path


def lab(workspace: Path, standin: StandIn, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cocolab.cli", "lab", "--api", standin.api,
                           "--runtime", RUNTIME, "--token-file", "token", "--once",
                           "--poll", "0.1", "--backoff", "0.05", "--workdir", "labwork",
                           *extra],
                          cwd=workspace, capture_output=True, text=True, timeout=300,
                          check=False)


def job(standin: StandIn, workspace: Path, **kwargs: object) -> dict[str, object]:
    kernel = standin.artifact("bzImage", fake_bzimage(workspace / "bzImage", "6.12.0-lab"))
    (workspace / "config").write_text("CONFIG_MODULES=y\nCONFIG_DEVMEM=y\n")
    config = standin.artifact("config", workspace / "config")
    return definition(kernel, config, **kwargs)  # type: ignore[arg-type]


def test_a_job_is_claimed_run_and_its_results_posted_as_nodes(
        standin: StandIn, workspace: Path) -> None:
    standin.add_job("n1", job(standin, workspace, selection="tests/sample"), RUNTIME)
    standin.fail_next = 2  # the first two requests: 503, retried
    done = lab(workspace, standin)
    assert done.returncode == 0, done.stderr
    assert standin.claims == {"n1": RUNTIME}
    posted = standin.results["n1"]
    assert posted["node"]["result"] == "pass", posted["node"]
    assert posted["node"]["data"]["outcomes"] == {"passed": 2, "skipped": 1}
    by_name = {n["name"]: n["result"] for n in posted["nodes"]}
    assert by_name == {"boot": "pass", "sample": "pass", "test_plain.py::test_one": "pass",
                       "test_plain.py::test_two": "pass", "test_plain.py::test_three": "skip"}
    assert "again in 0.05s (1/5)" in done.stderr  # the 503s were retried with backoff
    assert "again in 0.1s (2/5)" in done.stderr  # doubled
    results = workspace / "labwork/job-n1/results/cocolab-results.json"
    assert '"kernel": "' + str(workspace / "labwork/job-n1/artifacts/kernel/bzImage") + '"' in \
        results.read_text()  # the job's kernel, as the lab fetched it


def test_a_kernel_whose_sha256_differs_is_an_infrastructure_error(
        standin: StandIn, workspace: Path) -> None:
    standin.add_job("n2", job(standin, workspace, sha_override={"kernel": "00" * 32}), RUNTIME)
    assert lab(workspace, standin).returncode == 0
    node = standin.results["n2"]["node"]
    assert node["result"] == "incomplete" and node["data"]["error_code"] == "Infrastructure"
    assert "has sha256" in node["data"]["error_msg"] and "the job says 0000" in \
        node["data"]["error_msg"]
    assert not (workspace / "labwork/job-n2/pytest.log").exists(), "it ran an unchecked kernel"


def test_a_job_that_cannot_be_run_updates_its_node_as_an_infrastructure_error(
        standin: StandIn, workspace: Path) -> None:
    bad = job(standin, workspace)
    bad["tests"] = [{"id": "x", "type": "cocolab", "parameters": "/etc/shadow"}]
    standin.add_job("n3", bad, RUNTIME)
    assert lab(workspace, standin).returncode == 0
    update = standin.updates["n3"]
    assert update["result"] == "incomplete"
    assert "must name test paths under tests/" in update["data"]["error_msg"]


def test_a_job_of_another_runtime_or_claimed_by_another_lab_is_left_alone(
        standin: StandIn, workspace: Path) -> None:
    standin.add_job("other", job(standin, workspace), "someone-else")
    standin.add_job("taken", job(standin, workspace), RUNTIME)
    standin.claims["taken"] = "another-lab"
    done = lab(workspace, standin)
    assert done.returncode == 0
    assert not standin.results and standin.claims == {"taken": "another-lab"}
    assert "job taken: claimed by another lab" in done.stderr


def test_an_api_that_stays_down_is_one_line_after_bounded_retries(
        standin: StandIn, workspace: Path) -> None:
    standin.fail_next = 100
    done = lab(workspace, standin)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"cocolab: GET {standin.api}/events?"), done.stderr
    assert "HTTP 503 Service Unavailable, 5 times" in done.stderr


def test_a_wrong_token_is_refused_and_said(standin: StandIn, workspace: Path) -> None:
    standin.add_job("n4", job(standin, workspace), RUNTIME)
    (workspace / "token").write_text("wrong")
    done = lab(workspace, standin)
    assert done.returncode == 1
    assert "claiming job n4: HTTP 401" in done.stderr


def modules_job(standin: StandIn, workspace: Path, *extra: tarfile.TarInfo,
                selection: str = "tests/sample") -> dict[str, object]:
    """A job whose modules artifact holds a modules.dep and then `extra` (a file's is empty)."""
    archive = workspace / "modules.tar"
    with tarfile.open(archive, "w") as tar:
        for info in (tarfile.TarInfo("lib/modules/6.12.0-lab/modules.dep"), *extra):
            tar.addfile(info, io.BytesIO(b"") if info.isfile() else None)
    definition_ = job(standin, workspace, selection=selection)
    definition_["artifacts"]["modules"], definition_["integrity"]["sha256"]["modules"] = \
        standin.artifact("modules.tar", archive)
    return definition_


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(("bad", "said"), [
    ([member("../escape.ko")], "would land outside the job's directory"),
    ([member("/abs.ko")], "would land outside the job's directory"),
    # a/b/../.. stays inside on paper; made after the link a -> ".", it climbs out
    ([member("lib/modules/6.12.0-lab/a", tarfile.SYMTYPE, "."),
      member("lib/modules/6.12.0-lab/a/a/a/a/a/a/../../../../../../escape.ko")],
     "would land outside the job's directory"),
    ([member("lib/modules/6.12.0-lab/null", tarfile.CHRTYPE)],
     "is not a file, directory or link"),
], ids=["dotdot", "absolute", "climbs-through-a-link", "device-node"])
def test_a_modules_tarball_reaching_outside_its_directory_is_refused(
        standin: StandIn, workspace: Path, bad: list[tarfile.TarInfo], said: str) -> None:
    standin.add_job("n5", modules_job(standin, workspace, *bad), RUNTIME)
    assert lab(workspace, standin).returncode == 0
    node = standin.results["n5"]["node"]
    assert node["result"] == "incomplete"
    assert said in node["data"]["error_msg"], node["data"]["error_msg"]
    assert [p.name for p in workspace.rglob("escape.ko")] == []
    assert not (workspace / "labwork/job-n5/pytest.log").exists()


def test_the_links_of_a_modules_tarball_are_left_out_and_the_job_runs(
        standin: StandIn, workspace: Path) -> None:
    """`build` points into the build machine, as `make modules_install` leaves it; a/b and
    a/b/c each point up, so a/b/c/escape.ko would land beside the job's directory were they
    made before it; left out, they cannot be."""
    base = "lib/modules/6.12.0-lab"
    links = [member(f"{base}/build", tarfile.SYMTYPE, "/home/builder/linux"),
             member(f"{base}/a/b", tarfile.SYMTYPE, ".."),
             member(f"{base}/a/b/c", tarfile.SYMTYPE, "..")]
    standin.add_job("n6", modules_job(standin, workspace, *links,
                                      member(f"{base}/a/b/c/escape.ko")), RUNTIME)
    done = lab(workspace, standin)
    assert done.returncode == 0, done.stderr
    assert standin.results["n6"]["node"]["result"] == "pass", standin.results["n6"]["node"]
    assert "3 link(s) left out (lib/modules/6.12.0-lab/build, " in done.stderr
    unpacked = workspace / "labwork/job-n6/modules" / base
    assert not any(p.is_symlink() for p in unpacked.rglob("*"))
    assert [p.relative_to(unpacked) for p in workspace.rglob("escape.ko")] == \
        [Path("a/b/c/escape.ko")]
