"""Snapshots on a real guest: the first boot of a VM is saved, later boots restore it, and a
restored guest has the host's clock, its own randomness and the saved guest's devices."""

from __future__ import annotations

import secrets
from pathlib import Path

pytest_plugins = ["pytester"]

SOURCE = """
    import time
    import pytest

    WORD = "cocolab.snapshot_test={word}"  # a VM no earlier run has saved

    def sample(vm, name):
        restored = (vm.workdir / "restored-from.txt").exists()
        random = vm.run("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\\\n'").stdout
        skew = abs(int(vm.run("date +%s").stdout) - time.time())  # busybox: seconds
        edu = vm.run("cat /sys/bus/pci/devices/*/device | grep -c 0x11e8").stdout.strip()
        with open({out!r}, "a") as f:
            f.write(f"{{name}} {{restored}} {{random}} {{skew:.3f}} {{edu}}\\n")

    pytestmark = [pytest.mark.cmdline(WORD), pytest.mark.qemu_args("-device", "edu")]

    def test_cold(vm): sample(vm, "cold")

    @pytest.mark.fresh_vm
    def test_restored_once(vm): sample(vm, "restore1")

    @pytest.mark.fresh_vm
    def test_restored_twice(vm): sample(vm, "restore2")
"""


def test_later_boots_of_a_vm_restore_its_first(inner, tmp_path: Path) -> None:
    out = tmp_path / "samples.txt"
    result = inner(SOURCE.format(word=secrets.token_hex(4), out=str(out)))
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["cocolab snapshots: on (*", "cocolab VMs: 1 cold boot(s), "
                                 "2 restore(s) from snapshots"])
    samples = {line.split()[0]: line.split()[1:] for line in out.read_text().splitlines()}
    assert [samples[n][0] for n in ("cold", "restore1", "restore2")] == ["False", "True",
                                                                         "True"]
    randoms = [samples[n][1] for n in samples]
    assert len(set(randoms)) == 3, "two guests handed out the same random bytes"
    # A restored guest's clock is set from the host's (to the second `date +%s` shows, plus
    # a round trip); a cold guest's comes from the RTC at boot and then runs on TCG's own
    # timekeeping, which drifts on a busy host (3.2 s behind once in CI), so only a sanity bound
    assert float(samples["restore1"][2]) < 3.0, samples
    assert float(samples["restore2"][2]) < 3.0, samples
    assert float(samples["cold"][2]) < 60.0, samples
    assert all(s[3] == "1" for s in samples.values())  # edu there, its BAR written back


def test_no_snapshots_boots_every_vm_cold(inner, tmp_path: Path) -> None:
    out = tmp_path / "samples.txt"
    result = inner(SOURCE.format(word=secrets.token_hex(4), out=str(out)), "--no-snapshots")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["cocolab snapshots: off (--no-snapshots)",
                                 "cocolab VMs: 3 cold boot(s), 0 restore(s) from snapshots"])
