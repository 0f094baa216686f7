"""--shard I/N in real pytest runs (nothing boots: the VM tests skip; the plain tests pass,
fail, err, skip and xfail, so a merge that lost or swapped verdicts shows): the shards' union
is the selection, a VM's tests stay in one shard, -n inside a shard changes nothing, and
`cocolab results merge` gives the unsharded run's verdicts; a KCIDB report of it validates
and keeps its ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

NO_QEMU = ("--qemu", str(Path(__file__).with_name("fake_qemu.py")), "--accel", "tcg",
           "-p", "no:cacheprovider")

SAMPLE = """
    import pytest
    boots = pytest.mark.skip(reason="collection is what is checked")

    @boots
    def test_a1(vm): pass
    @boots
    def test_a2(vm): pass
    @boots
    def test_a3(vm): pass

    @boots
    @pytest.mark.cmdline("quiet")
    def test_b1(vm): pass
    @boots
    @pytest.mark.cmdline("quiet")
    def test_b2(vm): pass

    @boots
    @pytest.mark.cmdline("nokaslr")
    def test_c1(vm): pass

    @pytest.fixture
    def broken():
        raise RuntimeError("a fixture of the test's own")

    def test_error(broken): pass

    @pytest.mark.parametrize("n", range(4))
    def test_plain(n):
        if n == 1:
            assert n == 0, "a failure"
        if n == 2:
            pytest.xfail("known")
        if n == 3:
            pytest.skip("not here")
"""

MIXED = {"passed": 1, "failed": 1, "xfailed": 1, "error": 1, "skipped": 7}
"""The outcomes of SAMPLE's eleven tests, which every merge must give back."""

GROUPS = [{"test_a1", "test_a2", "test_a3"}, {"test_b1", "test_b2"}, {"test_c1"}]


def run(pytester: pytest.Pytester, results: str, *args: str) -> dict[str, str]:
    result = pytester.runpytest_subprocess("--results", results, *args, *NO_QEMU)
    assert result.ret in (0, 1), result.stdout.str() + result.stderr.str()  # 1: a failure
    data = json.loads((pytester.path / results / "cocolab-results.json").read_text())
    return {t["nodeid"]: t["outcome"] for t in data["tests"]}


def names(verdicts: dict[str, str]) -> set[str]:
    return {n.split("::")[1].split("[")[0].split("@")[0] for n in verdicts}


def test_two_shards_are_the_whole_run_and_merge_to_its_verdicts(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    whole = run(pytester, "whole")
    one = run(pytester, "s1", "--shard", "1/2")
    two = run(pytester, "s2", "--shard", "2/2")
    assert not set(one) & set(two)
    assert set(one) | set(two) == set(whole)
    for group in GROUPS:
        assert group <= names(one) or group <= names(two), f"{group} split over shards"
    assert names(one) and names(two)

    merged = pytester.path / "merged.json"
    cli = [sys.executable, "-m", "cocolab.cli"]
    out = subprocess.run([*cli, "results", "merge", "s2", "s1", "-o", str(merged)],
                         cwd=pytester.path, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    data = json.loads(merged.read_text())
    assert {t["nodeid"]: t["outcome"] for t in data["tests"]} == whole
    assert Counter(whole.values()) == MIXED
    assert data["shards"] == ["1/2", "2/2"]

    facts = data["facts"]
    assert facts["kernel_release"] == "not resolved: no VM booted in this run"
    assert not (Path(os.environ["COCOLAB_CACHE"]) / "kernels").exists(), \
        "writing the results fetched a kernel for a run that booted nothing"

    ids = []
    for name in ("k1.json", "k2.json"):
        out = subprocess.run([*cli, "kcidb", str(merged), "--origin", "cocolab_rig", "-o", name],
                             cwd=pytester.path, capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert "valid: 1 checkouts, 1 builds, 11 tests" in out.stdout
        ids.append(sorted(t["id"] for t in json.loads((pytester.path / name).read_text())
                          ["tests"]))
    assert ids[0] == ids[1] and len(set(ids[0])) == 11


def test_workers_inside_a_shard_run_the_same_tests_and_merge(
        pytester: pytest.Pytester) -> None:
    """Under -n the controller collects nothing: the workers tell it the selection and the
    partition, which the merge checks."""
    pytester.makepyfile(test_sample=SAMPLE)
    serial = run(pytester, "serial", "--shard", "2/3")
    workers = run(pytester, "workers", "--shard", "2/3", "-n", "2")
    assert serial == workers and serial
    run(pytester, "one", "--shard", "1/3", "-n", "2")
    run(pytester, "three", "--shard", "3/3")
    out = subprocess.run([sys.executable, "-m", "cocolab.cli", "results", "merge", "one",
                          "workers", "three", "-o", "m.json"], cwd=pytester.path,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "11 tests from shards 1/3, 2/3, 3/3: 1 error, 1 failed, 1 passed, 7 skipped, " \
        "1 xfailed" in out.stdout


def test_shards_of_different_partitions_do_not_merge(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    run(pytester, "s1", "--shard", "1/2")
    (pytester.path / "d.json").write_text(json.dumps({"test_sample.py::test_c1": 60}))
    run(pytester, "s2", "--shard", "2/2", "--durations-file", "d.json")
    out = subprocess.run([sys.executable, "-m", "cocolab.cli", "results", "merge", "s1", "s2",
                          "-o", "m.json"], cwd=pytester.path, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 1
    assert "is not a shard of s1's run: partition is" in out.stderr, out.stderr


@pytest.mark.parametrize("args, line", [
    (("--shard", "3/2"), "*--shard 3/2: give I/N with 1 <= I <= N, such as 1/4*"),
    (("--shard", "1/2", "--durations-file", "bad.json"),
     "*durations file bad.json: neither a cocolab-results.json nor a JSON object*"),
])
def test_bad_shard_options_are_one_usage_error(pytester: pytest.Pytester,
                                               args: tuple[str, ...], line: str) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    (pytester.path / "bad.json").write_text("[]")
    result = pytester.runpytest(*args, *NO_QEMU)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([line])
    assert "Traceback" not in result.stderr.str()


def test_a_fresh_vm_test_weighs_its_own_boot(pytester: pytest.Pytester) -> None:
    """A fresh_vm test boots a VM of its own: 5 s of boot and 1 s of test against five plain
    tests of 1 s each, it fills a shard alone (weighed as a plain test, it shared one)."""
    pytester.makepyfile(test_sample="""
        import pytest
        @pytest.mark.skip(reason="collection is what is checked")
        @pytest.mark.fresh_vm
        def test_fresh(vm): pass
        @pytest.mark.parametrize("n", range(5))
        def test_plain(n): pass
    """)
    one = run(pytester, "s1", "--shard", "1/2")
    assert names(one) == {"test_fresh"}, one
