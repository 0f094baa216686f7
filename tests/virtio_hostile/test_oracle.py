"""The memory-safety oracle can fail a test: on a kernel with KASAN (the hardening lane), a
test that makes the kernel write past a slab object (LKDTM's SLAB_LINEAR_OVERFLOW,
drivers/misc/lkdtm/heap.c) is failed by the plugin's kernel-warnings check with KASAN's
report, as a hostile device's would be. Run in a pytest of its own (a test that passed here
while its inner test was failed by the report would prove nothing otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cocolab.rig import Rig

INNER = '''
import pytest

@pytest.mark.kconfig("KASAN", "LKDTM")
def test_a_write_past_a_slab_object(vm):
    vm.run("mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug")
    vm.run("echo SLAB_LINEAR_OVERFLOW > /sys/kernel/debug/provoke-crash/DIRECT")
'''


def test_a_kasan_report_fails_the_test_it_came_in(cocolab_rig: Rig, tmp_path: Path) -> None:
    if not cocolab_rig.lane.name == "hardening":
        pytest.skip(f"shows the KASAN oracle at work: needs a KASAN kernel with LKDTM; run it "
                    f"with --lane hardening (lane {cocolab_rig.lane.name} is not)")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--lane", "hardening",
         "--kernel", str(cocolab_rig.kernel_setting.value), "--results", str(results),
         str(tmp_path / "test_inner.py")], capture_output=True, text=True, cwd=tmp_path,
        timeout=900, check=False)
    found = json.loads((results / "cocolab-results.json").read_text())["tests"]
    assert [t["outcome"] for t in found] == ["failed"], done.stdout[-3000:]
    assert not found[0]["rig_failure"], found[0]["reason"]
    assert "KASAN: slab-out-of-bounds" in found[0]["reason"], found[0]["reason"]
