"""`cocolab lab` against a stand-in KernelCI (lab_standin.py) that behaves as upstream's
code does, booting nothing: a job found `available` is run and its results posted in the
PULL_LABS body with the callback's token, and no node is ever written; its config comes from
the parent kbuild node or the image; a restarted lab runs no job twice; and a hostile job or
API is refused, each case in one line. (tests/smoke/test_lab_jobs.py runs tests/devmem in a
real guest through it.)"""

from __future__ import annotations

import base64
import gzip
import io
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_standin import API_TOKEN, CALLBACK_TOKEN, TOKEN_NAME, StandIn, definition, node_id

from fake_kernel import fake_bzimage

RUNTIME = "cocolab-test-lab"
KBUILD = node_id(0xB11D)
CONFIG = b"CONFIG_MODULES=y\nCONFIG_DEVMEM=y\n"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A checkout-like directory: tests/sample holds plain tests (no VM), the token files."""
    (tmp_path / "tests/sample").mkdir(parents=True)
    (tmp_path / "tests/sample/test_plain.py").write_text(
        "import pytest\n"
        "def test_one(): pass\n"
        "def test_two(): pass\n"
        "@pytest.mark.skip(reason='not here')\n"
        "def test_three(): pass\n")
    (tmp_path / "token").write_text(API_TOKEN + "\n")
    (tmp_path / "callback-token").write_text(CALLBACK_TOKEN + "\n")
    (tmp_path / "config").write_bytes(CONFIG)
    return tmp_path


def lab(workspace: Path, standin: StandIn, *extra: str, api: str | None = None,
        tokens: bool = True) -> subprocess.CompletedProcess[str]:
    callback = ["--callback-token", f"{TOKEN_NAME}=callback-token"] if tokens else []
    return subprocess.run([sys.executable, "-m", "cocolab.cli", "lab", "--api",
                           api or standin.api, "--runtime", RUNTIME, "--token-file", "token",
                           *callback, "--once", "--poll", "0.1", "--backoff", "0.05",
                           "--workdir", "labwork", *extra],
                          cwd=workspace, capture_output=True, text=True, timeout=300,
                          check=False)


def job(standin: StandIn, workspace: Path, **kwargs: object) -> dict[str, object]:
    """A job for a fake kernel whose config its kbuild node (KBUILD) names; the job's
    integrity carries the config's sha256 beside the kernel's."""
    kernel = standin.artifact("bzImage", fake_bzimage(workspace / "bzImage", "6.12.0-lab"))
    standin.add_kbuild(KBUILD, workspace / "config")
    made = definition(kernel, **kwargs)  # type: ignore[arg-type]
    sums = made["integrity"]["sha256"]
    sums.setdefault("config", standin.artifact("config", workspace / "config")[1])
    return made


def body(standin: StandIn, nid: str) -> dict[str, object]:
    return standin.results[nid]


def test_a_job_found_available_is_run_and_its_results_posted_in_the_pull_labs_body(
        standin: StandIn, workspace: Path) -> None:
    nid = node_id(1)
    standin.add_job(nid, job(standin, workspace, selection="tests/sample"), RUNTIME,
                    parent=KBUILD)
    standin.fail_next = 2  # the first two requests: 503, retried
    done = lab(workspace, standin)
    assert done.returncode == 0, done.stderr
    posted = body(standin, nid)
    assert posted["summary"] == {"total": 3, "failed": 0}
    assert posted["tests"]["sample"]["status"] == "pass"
    assert {k: v["status"] for k, v in posted["tests"]["sample"]["subtests"].items()} == {
        "test_plain.py::test_one": "pass", "test_plain.py::test_two": "pass",
        "test_plain.py::test_three": "skip"}
    assert posted["metadata"]["system"] == "qemu-x86_64" and "error_code" not in posted
    assert posted["metadata"]["kernel_config"].startswith(f"kbuild node {KBUILD} (_config: ")
    log = gzip.decompress(base64.b64decode(posted["artifacts"]["log"][7:])).decode()
    assert "2 passed, 1 skipped" in log
    assert standin.node_writes == [], "a pull lab never writes the job node"
    assert "again in 0.05s (1/5)" in done.stderr and "again in 0.1s (2/5)" in done.stderr


def test_the_api_token_goes_to_the_api_only_and_the_callback_gets_its_own(
        standin: StandIn, workspace: Path) -> None:
    nid = node_id(2)
    standin.add_job(nid, job(standin, workspace, selection="tests/sample"), RUNTIME,
                    parent=KBUILD)
    assert lab(workspace, standin).returncode == 0
    seen = {(m, p.split("/")[1]): a for m, p, a in standin.requests}
    assert seen[("GET", "latest")] == API_TOKEN
    assert seen[("GET", "storage")] is None  # job definition and artifacts: no token
    assert seen[("POST", "callback")] == CALLBACK_TOKEN


def test_a_job_whose_token_name_has_no_token_is_not_posted(standin: StandIn,
                                                           workspace: Path) -> None:
    nid = node_id(3)
    standin.add_job(nid, job(standin, workspace, selection="tests/sample"), RUNTIME,
                    parent=KBUILD)
    done = lab(workspace, standin, tokens=False)
    assert done.returncode == 0
    assert not standin.results and not [r for r in standin.requests if r[1].startswith("/cal")]
    assert f"not posted: no --callback-token {TOKEN_NAME}=FILE" in done.stderr
    assert (workspace / f"labwork/job-{nid}/callback.json").exists()


def test_a_restarted_lab_runs_no_job_twice(standin: StandIn, workspace: Path) -> None:
    nid = node_id(4)
    standin.add_job(nid, job(standin, workspace, selection="tests/sample"), RUNTIME,
                    parent=KBUILD)
    assert lab(workspace, standin).returncode == 0
    del standin.results[nid]
    again = lab(workspace, standin)
    assert again.returncode == 0 and not standin.results
    assert f"job {nid}: run already" in again.stderr


def test_older_deployments_poll_done_with_state(standin: StandIn, workspace: Path) -> None:
    nid = node_id(5)
    standin.add_job(nid, job(standin, workspace, selection="tests/sample"), RUNTIME,
                    state="done", parent=KBUILD)
    assert lab(workspace, standin).returncode == 0 and not standin.results
    assert lab(workspace, standin, "--state", "done").returncode == 0
    assert body(standin, nid)["summary"]["total"] == 3


def test_without_a_kbuild_node_the_config_comes_from_the_image(standin: StandIn,
                                                                workspace: Path) -> None:
    image = fake_bzimage(workspace / "bzImage", "6.12.0-lab")
    with image.open("ab") as f:  # as CONFIG_IKCONFIG builds it in (kernel/configs.c)
        f.write(b"IKCFG_ST" + gzip.compress(CONFIG) + b"IKCFG_ED")
    kernel = standin.artifact("bzImage", image)
    nid = node_id(6)
    standin.add_job(nid, definition(kernel, selection="tests/sample"), RUNTIME)
    done = lab(workspace, standin)
    assert done.returncode == 0, done.stderr
    posted = body(standin, nid)
    assert posted["metadata"]["kernel_config"] == "the kernel image (CONFIG_IKCONFIG)"
    assert "error_code" not in posted


def test_a_job_whose_config_cannot_be_found_is_an_infrastructure_error(
        standin: StandIn, workspace: Path) -> None:
    nid = node_id(7)
    standin.add_job(nid, job(standin, workspace), RUNTIME)  # no parent, no IKCONFIG
    assert lab(workspace, standin).returncode == 0
    posted = body(standin, nid)
    assert posted["error_code"] == "Infrastructure"
    assert "the kernel config is unknown: the job node names no parent kbuild node; the " \
        "kernel image has no CONFIG_IKCONFIG" in posted["error_msg"]


def infra(standin: StandIn, workspace: Path, nid: str, *extra: str) -> str:
    done = lab(workspace, standin, *extra)
    assert done.returncode == 0, done.stderr
    posted = body(standin, nid)
    assert posted["error_code"] == "Infrastructure" and posted["summary"]["total"] == 0
    assert not (workspace / f"labwork/job-{nid}/pytest.log").exists(), "it ran the job"
    return str(posted["error_msg"])


def test_a_kernel_whose_sha256_differs_is_an_infrastructure_error(
        standin: StandIn, workspace: Path) -> None:
    nid = node_id(8)
    standin.add_job(nid, job(standin, workspace, sha_override={"kernel": "00" * 32}), RUNTIME,
                    parent=KBUILD)
    said = infra(standin, workspace, nid)
    assert "has sha256" in said and "the job says 0000" in said


def test_an_artifact_without_a_sha256_runs_only_when_allowed(standin: StandIn,
                                                             workspace: Path) -> None:
    nid = node_id(9)
    unverified = job(standin, workspace, selection="tests/sample")
    del unverified["integrity"]
    standin.add_job(nid, unverified, RUNTIME, parent=KBUILD)
    said = infra(standin, workspace, nid)
    assert "gives no sha256 for its kernel artifact" in said and "--allow-unverified" in said
    (workspace / f"labwork/taken/{nid}").unlink()  # run it again, this time allowed
    done = lab(workspace, standin, "--allow-unverified")
    assert "error_code" not in body(standin, nid), done.stderr
    assert "the kernel artifact is unverified (sha256 " in done.stderr


def test_an_artifact_over_the_download_cap_is_an_infrastructure_error(
        standin: StandIn, workspace: Path) -> None:
    nid = node_id(10)
    standin.add_job(nid, job(standin, workspace), RUNTIME, parent=KBUILD)
    said = infra(standin, workspace, nid, "--max-download", "100")
    assert "is 1024 bytes, over the --max-download of 100" in said


def test_a_node_id_that_is_no_kernelci_id_never_names_a_path(standin: StandIn,
                                                              workspace: Path) -> None:
    victim = workspace / "victim"
    victim.write_text("still here")
    standin.add_job("../../../victim", job(standin, workspace), RUNTIME)
    standin.nodes["../../victim"] = standin.nodes["../../../victim"]  # what the path becomes
    done = lab(workspace, standin)
    assert done.returncode == 0
    assert victim.read_text() == "still here"
    assert "'../../../victim' is not a KernelCI node id (24 hex digits); left alone" in \
        done.stderr


@pytest.mark.parametrize("api, said", [
    ("http://203.0.113.7/latest", "--api 'http://203.0.113.7/latest': only https (http on "
     "loopback, or with --insecure-http)"),
    ("ftp://127.0.0.1/latest", "--api 'ftp://127.0.0.1/latest': only https (http on "
     "loopback"),
])
def test_an_api_without_tls_beyond_loopback_is_refused(standin: StandIn, workspace: Path,
                                                       api: str, said: str) -> None:
    done = lab(workspace, standin, api=api)
    assert done.returncode in (1, 2) and said in done.stderr, done.stderr
    assert not standin.requests


def test_a_callback_beyond_loopback_without_tls_is_not_posted(standin: StandIn,
                                                              workspace: Path) -> None:
    nid = node_id(11)
    made = job(standin, workspace, selection="tests/sample")
    made["callback"] = {"url": f"http://203.0.113.7/node/{nid}", "token_name": TOKEN_NAME}
    standin.add_job(nid, made, RUNTIME, parent=KBUILD)
    done = lab(workspace, standin)
    assert "the callback 'http://203.0.113.7/node/" in done.stderr and "only https" in \
        done.stderr


def test_the_work_directory_is_private(standin: StandIn, workspace: Path) -> None:
    (workspace / "labwork").mkdir(mode=0o755)
    os.chmod(workspace / "labwork", 0o755)
    standin.add_job(node_id(12), job(standin, workspace, selection="tests/sample"), RUNTIME,
                    parent=KBUILD)
    assert lab(workspace, standin).returncode == 0
    for path in (workspace / "labwork", workspace / f"labwork/job-{node_id(12)}"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_a_job_of_another_runtime_is_left_alone(standin: StandIn, workspace: Path) -> None:
    standin.add_job(node_id(13), job(standin, workspace), "someone-else", parent=KBUILD)
    done = lab(workspace, standin)
    assert done.returncode == 0 and not standin.results
    assert f"no job for runtime {RUNTIME}" in done.stderr


def test_an_api_that_stays_down_is_one_line_after_bounded_retries(
        standin: StandIn, workspace: Path) -> None:
    standin.fail_next = 100
    done = lab(workspace, standin)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"cocolab: GET {standin.api}/events?"), done.stderr
    assert "HTTP 503 Service Unavailable, 5 times" in done.stderr


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


def test_a_modules_tarball_loses_setuid_bits_and_its_owners(standin: StandIn,
                                                            workspace: Path) -> None:
    setuid = member("lib/modules/6.12.0-lab/kernel/evil.ko")
    setuid.mode, setuid.uid, setuid.gid, setuid.uname = 0o6755, 4242, 4242, "mallory"
    sticky = member("lib/modules/6.12.0-lab/kernel/shared", tarfile.DIRTYPE)
    sticky.mode = 0o1777
    nid = node_id(14)
    standin.add_job(nid, modules_job(standin, workspace, sticky, setuid), RUNTIME,
                    parent=KBUILD)
    assert lab(workspace, standin).returncode == 0
    unpacked = workspace / f"labwork/job-{nid}/modules/lib/modules/6.12.0-lab/kernel"
    for path, mode in ((unpacked / "evil.ko", 0o755), (unpacked / "shared", 0o755)):
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == mode, oct(st.st_mode)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_a_modules_tarball_that_unpacks_too_big_is_refused(standin: StandIn,
                                                           workspace: Path) -> None:
    big = member("lib/modules/6.12.0-lab/big.ko")
    nid = node_id(15)
    made = modules_job(standin, workspace)
    archive = workspace / "big.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(member("lib/modules/6.12.0-lab/modules.dep"), io.BytesIO(b""))
        big.size = 5000
        tar.addfile(big, io.BytesIO(b"\0" * 5000))
    made["artifacts"]["modules"], made["integrity"]["sha256"]["modules"] = \
        standin.artifact("big.tar", archive)
    standin.add_job(nid, made, RUNTIME, parent=KBUILD)
    assert "unpacks to over the --max-unpacked of 1000 bytes" in infra(
        standin, workspace, nid, "--max-unpacked", "1000")


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
    nid = node_id(16)
    standin.add_job(nid, modules_job(standin, workspace, *bad), RUNTIME, parent=KBUILD)
    assert said in infra(standin, workspace, nid)
    assert [p.name for p in workspace.rglob("escape.ko")] == []


def test_the_links_of_a_modules_tarball_are_left_out_and_the_job_runs(
        standin: StandIn, workspace: Path) -> None:
    """`build` points into the build machine, as `make modules_install` leaves it; a/b and
    a/b/c each point up, so a/b/c/escape.ko would land beside the job's directory were they
    made before it; left out, they cannot be."""
    base = "lib/modules/6.12.0-lab"
    links = [member(f"{base}/build", tarfile.SYMTYPE, "/home/builder/linux"),
             member(f"{base}/a/b", tarfile.SYMTYPE, ".."),
             member(f"{base}/a/b/c", tarfile.SYMTYPE, "..")]
    nid = node_id(17)
    standin.add_job(nid, modules_job(standin, workspace, *links,
                                     member(f"{base}/a/b/c/escape.ko")), RUNTIME, parent=KBUILD)
    done = lab(workspace, standin)
    assert done.returncode == 0, done.stderr
    assert "error_code" not in body(standin, nid), body(standin, nid)
    assert "3 link(s) left out (lib/modules/6.12.0-lab/build, " in done.stderr
    unpacked = workspace / f"labwork/job-{nid}/modules" / base
    assert not any(p.is_symlink() for p in unpacked.rglob("*"))
    assert [p.relative_to(unpacked) for p in workspace.rglob("escape.ko")] == \
        [Path("a/b/c/escape.ko")]
