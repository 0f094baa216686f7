"""`-n 2 --dist loadgroup`: the tests of one VM run on one worker, which boots it once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

pytest_plugins = ["pytester"]


def test_two_workers_boot_each_vm_exactly_once(inner, tmp_path: Path) -> None:
    result = inner("""
        import pytest
        def test_a(vm): vm.run("true", check=True)
        def test_b(vm): vm.run("true", check=True)
        def test_c(vm): vm.run("! grep -q cocolab.parallel=1 /proc/cmdline", check=True)
        @pytest.mark.cmdline("cocolab.parallel=1")
        def test_d(vm): vm.run("grep -q cocolab.parallel=1 /proc/cmdline", check=True)
        @pytest.mark.cmdline("cocolab.parallel=1")
        def test_e(vm): vm.run("true", check=True)
    """, "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=5)
    booted = [p.name for p in (tmp_path / "results" / "vms").iterdir()]  # WORKER-NNN-KEY
    per_key = Counter(name.rsplit("-", 1)[1] for name in booted)
    assert len(per_key) == 2 and set(per_key.values()) == {1}, booted
