"""`cocolab lab` running real jobs from the stand-in KernelCI (tests/rig/lab_standin.py):
tests/devmem on the lane's own kernel, served as a kbuild would publish it (the job gives the
bzImage and a modules tarball, its kbuild node the config), passes and comes back in the
PULL_LABS body; a kernel that cannot boot comes back as an infrastructure error; SIGINT to
the lab mid-job leaves no QEMU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import descendants, is_live_qemu

from cocolab.deadline import Deadline
from cocolab.rig import Rig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rig"))  # the stand-in API
from lab_standin import API_TOKEN, CALLBACK_TOKEN, TOKEN_NAME, StandIn, definition

REPO = Path(__file__).resolve().parents[2]
RUNTIME = "cocolab-smoke-lab"


@pytest.fixture(scope="module")
def artifacts(cocolab_rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The lane's kernel as a KernelCI kbuild would publish it."""
    kernel = cocolab_rig.kernel
    if cocolab_rig.lane.cc:
        pytest.skip(f"the lab runs jobs on the default lane here, not {cocolab_rig.lane.name}")
    out = tmp_path_factory.mktemp("artifacts")
    files = {"kernel": kernel.image, "config": kernel.config_path}
    if kernel.modules is not None:
        files["modules"] = out / "modules.tar"
        with tarfile.open(files["modules"], "w") as tar:
            tar.add(kernel.modules, arcname=f"lib/modules/{kernel.release}")
    return files


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


JOBS = {"devmem": "0000000000000000000000d1", "broken": "0000000000000000000000d2",
        "stopped": "0000000000000000000000d3"}
KBUILD = "0000000000000000000000b1"


def add_job(standin: StandIn, files: dict[str, Path], name: str, selection: str) -> str:
    """The job `name` (its node id returned), its config named by its kbuild node."""
    served = {kind: standin.artifact(f"{name}-{kind}", path) for kind, path in files.items()}
    standin.add_kbuild(KBUILD, files["config"])
    made = definition(served["kernel"], selection, modules=served.get("modules"))
    made["integrity"]["sha256"]["config"] = served["config"][1]
    standin.add_job(JOBS[name], made, RUNTIME, parent=KBUILD)
    return JOBS[name]


def lab_argv(standin: StandIn, tmp_path: Path) -> list[str]:
    (tmp_path / "token").write_text(API_TOKEN)
    (tmp_path / "callback-token").write_text(CALLBACK_TOKEN)
    return [sys.executable, "-m", "cocolab.cli", "lab", "--api", standin.api, "--runtime",
            RUNTIME, "--token-file", str(tmp_path / "token"), "--callback-token",
            f"{TOKEN_NAME}={tmp_path / 'callback-token'}", "--once", "--lane", "default",
            "--workdir", str(tmp_path / "lab")]


DEVMEM_SHARE = "tests/devmem/test_strict_devmem.py tests/devmem/test_devport.py"
"""Two of tests/devmem's VMs: what a job goes through is the same for one test file as for
the suite (the closing note of issue 27 shows a job running all of tests/devmem)."""


def test_a_devmem_job_runs_in_real_guests_and_posts_its_nodes(
        standin: StandIn, artifacts: dict[str, Path], tmp_path: Path) -> None:
    nid = add_job(standin, artifacts, "devmem", DEVMEM_SHARE)
    done = subprocess.run(lab_argv(standin, tmp_path), cwd=REPO, capture_output=True,
                          text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr
    posted = standin.results[nid]
    log = (tmp_path / f"lab/job-{nid}/pytest.log").read_text()[-3000:]
    assert "error_code" not in posted, (posted.get("error_msg"), log)
    assert posted["tests"]["devmem"]["status"] in ("pass", "fail")  # a baseline is a fail
    tests = posted["tests"]["devmem"]["subtests"]
    assert sum(t["status"] == "pass" for t in tests.values()) >= 5, tests
    assert {name.split("::")[0] for name in tests} == {"test_strict_devmem.py",
                                                      "test_devport.py"}
    assert posted["summary"]["total"] == len(tests)
    assert posted["metadata"]["kernel_release"] == \
        artifacts["kernel"].name.removeprefix("vmlinuz-")
    assert posted["metadata"]["kernel_config"].startswith(f"kbuild node {KBUILD}")
    assert standin.node_writes == []


def test_a_kernel_that_cannot_boot_is_an_infrastructure_error(
        standin: StandIn, artifacts: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "bzImage"
    broken.write_bytes(artifacts["kernel"].read_bytes()[:1 << 20])  # its header, and no more
    nid = add_job(standin, {**artifacts, "kernel": broken}, "broken",
                  "tests/devmem/test_strict_devmem.py")
    env = {**os.environ, "PYTEST_ADDOPTS": "--boot-timeout 60"}
    done = subprocess.run(lab_argv(standin, tmp_path), cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False, env=env)
    assert done.returncode == 0, done.stderr
    posted = standin.results[nid]
    assert posted["error_code"] == "Infrastructure", posted
    assert "could not run for the rig's reasons" in posted["error_msg"], posted["error_msg"]


def test_sigint_to_the_lab_mid_job_leaves_no_qemu(
        standin: StandIn, artifacts: dict[str, Path], tmp_path: Path) -> None:
    nid = add_job(standin, artifacts, "stopped", "tests/devmem")
    lab = subprocess.Popen(lab_argv(standin, tmp_path), cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    seen: set[int] = set()
    try:
        deadline = Deadline(300)
        while not seen and not deadline.expired() and lab.poll() is None:
            seen = {p for p in descendants(lab.pid) if is_live_qemu(p)}
            time.sleep(0.2)  # poll interval
        assert seen, "the job never started a QEMU"
        lab.send_signal(signal.SIGINT)
        out = lab.communicate(timeout=120)[0]
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
    assert lab.returncode == 130, out
    deadline = Deadline(10)
    while any(map(is_live_qemu, seen)) and not deadline.expired():
        time.sleep(0.1)
    assert not any(map(is_live_qemu, seen)), f"QEMU {sorted(seen)} outlived the lab's SIGINT"
    posted = standin.results[nid]
    assert posted["error_code"] == "Infrastructure"
    assert "the lab was stopped (SIGINT)" in posted["error_msg"]
    assert posted["artifacts"]["log"].startswith("base64:")  # what pytest said until then
