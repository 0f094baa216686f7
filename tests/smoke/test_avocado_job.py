"""`avocado run` gives every item the verdict pytest gives it, and its timeout leaks no QEMU.

A sample of every pytest outcome (VM tests among them) and three real devmem tests run twice:
through avocado, and through plain `pytest -v`. avocado's results.json must agree with pytest's
own verbose words, item by item: PASSED is PASS, FAILED is FAIL, ERROR is ERROR, SKIPPED is
SKIP or CANCEL, XFAIL is PASS, XPASS is WARN.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from processes import descendants, is_live_qemu

from cocolab.deadline import Deadline
from cocolab.paths import cache_root

pytest_plugins = ["pytester"]

CACHE = cache_root()  # now, before pytester points HOME at a temp dir
REPO = Path(__file__).resolve().parents[2]
AVOCADO = Path(sys.executable).with_name("avocado")
DEVMEM = [f"tests/devmem/test_strict_devmem.py::{name}" for name in (
    "test_low_ram_reads_as_zeros", "test_ram_above_1mib_read_is_denied",
    "test_pwrite_to_low_ram_is_silently_discarded")]

SAMPLE = """
    import pytest

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture broke")

    def test_pass(): pass
    def test_fail(): assert 1 == 2
    def test_setup_error(broken): pass
    @pytest.mark.skip(reason="not on this host")
    def test_skip_mark(): pass
    def test_skip_in_body(): pytest.skip("gave up inside")
    @pytest.mark.xfail(reason="known bug")
    def test_xfail(): assert 0
    @pytest.mark.xfail(reason="fixed since")
    def test_xpass(): pass

    def test_vm_pass(vm): assert vm.run("true").ok
    def test_vm_kernel_says_no(vm):
        assert vm.run("uname -r").stdout.strip() == "0.0-not-this-kernel"
    @pytest.mark.kconfig("COCOLAB_NO_SUCH_OPTION")
    def test_vm_kconfig_gate(vm): pass
    def test_vm_stops_in_the_body(vm):
        vm.qmp.cmd("stop")
        vm.run("true")
"""
EXPECTED = {
    "test_sample.py::test_pass": "PASS",
    "test_sample.py::test_fail": "FAIL",
    "test_sample.py::test_setup_error": "ERROR",
    "test_sample.py::test_skip_mark": "SKIP",
    "test_sample.py::test_skip_in_body": "CANCEL",
    "test_sample.py::test_xfail": "PASS",
    "test_sample.py::test_xpass": "WARN",
    "test_sample.py::test_vm_pass": "PASS",
    "test_sample.py::test_vm_kernel_says_no": "FAIL",
    "test_sample.py::test_vm_kconfig_gate": "SKIP",
    "test_sample.py::test_vm_stops_in_the_body": "ERROR",
    **{nodeid: "PASS" for nodeid in DEVMEM},
}
PYTEST_WORD = {"PASSED": {"PASS"}, "FAILED": {"FAIL"}, "ERROR": {"ERROR"},
               "SKIPPED": {"SKIP", "CANCEL"}, "XFAIL": {"PASS"}, "XPASS": {"WARN"}}
_VERBOSE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


@pytest.fixture
def env(pytester: pytest.Pytester, tmp_path: Path, cocolab_rig) -> dict[str, str]:
    """The environment of the inner avocado and pytest runs: this run's kernel, lane and warm
    cache (pytester has pointed HOME elsewhere)."""
    if not AVOCADO.exists():
        pytest.fail(f"{AVOCADO} is missing: install the extra, pip install -e '.[avocado]' "
                    "(setup.sh does)", pytrace=False)
    if cocolab_rig.lane.cc:
        pytest.skip(f"the sample's verdicts are for non-confidential lanes; lane "
                    f"{cocolab_rig.lane.name} is for {cocolab_rig.lane.cc} guests")
    return {**os.environ, "COCOLAB_CACHE": str(CACHE), "HOME": str(tmp_path),
            "COCOLAB_KERNEL": str(cocolab_rig.kernel_setting.value),
            "COCOLAB_LANE": cocolab_rig.lane.name}


def pytest_verdicts(output: str) -> dict[str, str]:
    """Each node id's word in `pytest -v` output; a teardown ERROR line overrides its PASSED."""
    words: dict[str, str] = {}
    for line in output.splitlines():
        m = _VERBOSE.match(line)
        if m and words.get(m.group(1)) != "ERROR":
            words[m.group(1)] = m.group(2)
    return words


def avocado(env: dict[str, str], jobs: Path, *args: str, cwd: Path = REPO
            ) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = subprocess.run([str(AVOCADO), "run", "--job-results-dir", str(jobs),
                           "--disable-sysinfo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    results = json.loads((jobs / "latest" / "results.json").read_text())
    return proc, results


def test_avocado_gives_every_item_pytest_s_verdict(
        pytester: pytest.Pytester, env: dict[str, str], tmp_path: Path) -> None:
    sample = pytester.makepyfile(test_sample=SAMPLE)
    proc, results = avocado(env, tmp_path / "jobs", "--max-parallel-tasks",
                            str(len(os.sched_getaffinity(0))), str(sample), *DEVMEM)
    n = Counter(EXPECTED.values())
    assert (f"RESULTS    : PASS {n['PASS']} | ERROR {n['ERROR']} | FAIL {n['FAIL']} | SKIP "
            f"{n['SKIP']} | WARN {n['WARN']} | INTERRUPT 0 | CANCEL {n['CANCEL']}"
            ) in proc.stdout, proc.stdout + proc.stderr
    statuses = {t["name"]: t["status"] for t in results["tests"]}
    assert statuses == EXPECTED

    words = {}
    for cwd, items in ((pytester.path, [sample.name]), (REPO, DEVMEM)):
        plain = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                                "--results", str(tmp_path / "plain"), *items], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=1200, check=False)
        words.update(pytest_verdicts(plain.stdout))
    assert words.keys() == statuses.keys()
    disagree = {node: (words[node], statuses[node]) for node in words
                if statuses[node] not in PYTEST_WORD[words[node]]}
    assert not disagree, "pytest's word, avocado's status"

    reasons = {t["name"]: t["fail_reason"] for t in results["tests"]}
    assert reasons["test_sample.py::test_skip_in_body"] == "gave up inside"
    assert "needs CONFIG_COCOLAB_NO_SUCH_OPTION=y or =m" in \
        reasons["test_sample.py::test_vm_kconfig_gate"]
    assert "GuestStopped" in reasons["test_sample.py::test_vm_stops_in_the_body"]
    failed = next((tmp_path / "jobs/latest/test-results").glob("*test_vm_kernel_says_no*"))
    bundle, = (failed / "cocolab/failures").iterdir()
    assert "COCOLAB READY" in (bundle / "console.log").read_text()
    assert (bundle / "relaunch.sh").exists()


def test_avocado_s_timeout_leaves_no_qemu_behind(
        pytester: pytest.Pytester, env: dict[str, str], tmp_path: Path) -> None:
    sample = pytester.makepyfile(test_hang="""
        import time
        def test_hangs(vm):
            time.sleep(3600)
    """)
    jobs = tmp_path / "jobs"
    # 20 s: the VM is up in under 10 (a restore, or a cold boot); should the timeout fall
    # earlier on a slow host, it interrupts a boot instead of a hung test, and the QEMU being
    # booted must not outlive avocado either.
    run = subprocess.Popen([str(AVOCADO), "run", "--job-results-dir", str(jobs),
                            "--disable-sysinfo", "--job-timeout", "20", str(sample)],
                           cwd=pytester.path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # its words, if it fails
    seen: set[int] = set()  # QEMUs started under avocado (its runner, pytest, then QEMU)
    deadline = Deadline(600)
    while run.poll() is None and not deadline.expired():
        seen.update(p for p in descendants(run.pid) if is_live_qemu(p))
        time.sleep(0.2)  # poll interval
    out = run.communicate(timeout=60)[0]
    assert seen, f"the test's QEMU was never seen running:\n{out}"
    assert "INTERRUPT 1" in out, out
    deadline = Deadline(10)
    while any(map(is_live_qemu, seen)) and not deadline.expired():
        time.sleep(0.1)  # the kernel delivers the death signals
    assert not any(map(is_live_qemu, seen)), f"QEMU {sorted(seen)} outlived avocado's timeout"
