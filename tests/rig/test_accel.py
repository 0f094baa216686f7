"""The accelerator verdict and the run-state watcher, against fake QEMU outcomes (no QEMU)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from cocolab.errors import AccelError, ConfigError
from cocolab.host.accel import (
    ProofBoot,
    choose_accel,
    decide,
    kvm_access_problem,
    retire_kvm,
    verdict_path,
)
from cocolab.host.process import qemu_said
from cocolab.vm.proof import proof_boot

FAKE_QEMU = Path(__file__).with_name("fake_qemu.py")
KVM_LINE = "KVM internal error. Suberror: 1 ... emulation failure"


class Prover:
    """A fake proof: the outcome per accelerator, and a count of boots it was asked for."""

    def __init__(self, **outcomes: ProofBoot):
        self.outcomes = outcomes
        self.calls: list[str] = []

    def __call__(self, accel: str) -> ProofBoot:
        self.calls.append(accel)
        return self.outcomes[accel]


OK_KVM = ProofBoot("kvm", True, 0.9)
SLOW_KVM = ProofBoot("kvm", True, 7.5)
DEAD_KVM = ProofBoot("kvm", False, 5.9, f"QEMU stopped the guest (internal-error): {KVM_LINE}")
OK_TCG = ProofBoot("tcg", True, 4.2)


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """A QEMU binary, a kernel image and a usable /dev/kvm, as plain files."""
    paths = {name: tmp_path / name for name in ("qemu", "vmlinuz", "kvm")}
    for path in paths.values():
        path.write_bytes(b"x")
    return paths


def choose(host: dict[str, Path], requested: str, prove: Prover, **kw: object):
    return choose_accel(str(host["qemu"]), requested, host["vmlinuz"], prove, dev=host["kvm"],
                        **kw)  # type: ignore[arg-type]


# --- the verdict ------------------------------------------------------------------------------

@pytest.mark.parametrize(("kvm", "tcg", "accel", "said"), [
    (OK_KVM, None, "kvm", "reached userspace under KVM in 0.9s"),
    (DEAD_KVM, None, "tcg", f"KVM refused: booting the kernel under KVM failed after 5.9s: "
                            f"QEMU stopped the guest (internal-error): {KVM_LINE}"),
    (SLOW_KVM, OK_TCG, "tcg", "KVM is slower than TCG here"),
    (ProofBoot("kvm", True, 3.0), OK_TCG, "kvm", "reached userspace under KVM in 3.0s"),
])
def test_decide(kvm: ProofBoot, tcg: ProofBoot | None, accel: str, said: str) -> None:
    choice = decide(kvm, tcg)
    assert choice.accel == accel
    assert said in choice.reason


def test_tcg_needs_no_proof(host: dict[str, Path]) -> None:
    prove = Prover()
    assert choose(host, "tcg", prove).accel == "tcg"
    assert prove.calls == []


def test_unknown_accel_is_a_config_error_naming_its_source(host: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="COCOLAB_ACCEL=hvf: no such accelerator; choose one of "
                                          "auto, kvm, tcg"):
        choose(host, "hvf", Prover(), source="COCOLAB_ACCEL")


def test_a_fast_kvm_wins_without_racing_tcg(host: dict[str, Path]) -> None:
    prove = Prover(kvm=OK_KVM)
    assert choose(host, "auto", prove).accel == "kvm"
    assert prove.calls == ["kvm"]


def test_a_crawling_kvm_is_raced_against_tcg_and_loses(host: dict[str, Path]) -> None:
    prove = Prover(kvm=SLOW_KVM, tcg=OK_TCG)
    choice = choose(host, "auto", prove)
    assert (choice.accel, prove.calls) == ("tcg", ["kvm", "tcg"])


def test_auto_falls_back_to_tcg_quoting_qemu(host: dict[str, Path]) -> None:
    choice = choose(host, "auto", Prover(kvm=DEAD_KVM))
    assert choice.accel == "tcg"
    assert KVM_LINE in choice.reason


def test_accel_kvm_that_cannot_boot_is_an_error_naming_kvm_and_tcg(host: dict[str, Path]) -> None:
    with pytest.raises(AccelError) as info:
        choose(host, "kvm", Prover(kvm=DEAD_KVM))
    assert str(info.value).startswith("--accel kvm: KVM cannot boot vmlinuz on this host: ")
    assert KVM_LINE in str(info.value)
    assert str(info.value).endswith("Use --accel tcg (or auto) on this host.")


def test_accel_kvm_keeps_a_slow_kvm_that_works(host: dict[str, Path]) -> None:
    assert choose(host, "kvm", Prover(kvm=SLOW_KVM, tcg=OK_TCG)).accel == "kvm"


def test_the_verdict_is_cached_per_kernel_and_written_whole(host: dict[str, Path]) -> None:
    prove = Prover(kvm=DEAD_KVM)
    first = choose(host, "auto", prove)
    second = choose(host, "auto", prove)
    assert prove.calls == ["kvm"]
    assert "cached for this host boot" in second.reason and first.accel == second.accel
    path = verdict_path(str(host["qemu"]), host["vmlinuz"])
    assert json.loads(path.read_text())["kvm"]["reached"] is False
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    other = host["vmlinuz"].with_name("vmlinuz-other")
    other.write_bytes(b"y")
    assert verdict_path(str(host["qemu"]), other) != path  # another kernel is proved anew


def test_refresh_and_a_torn_cache_file_prove_again(host: dict[str, Path]) -> None:
    prove = Prover(kvm=OK_KVM)
    choose(host, "auto", prove)
    choose(host, "auto", prove, refresh=True)
    verdict_path(str(host["qemu"]), host["vmlinuz"]).write_text('{"kvm": {"acc')
    choose(host, "auto", prove)
    assert prove.calls == ["kvm", "kvm", "kvm"]


def test_a_missing_or_closed_dev_kvm_is_never_cached(host: dict[str, Path]) -> None:
    prove = Prover(kvm=OK_KVM)
    host["kvm"].unlink()
    assert "does not exist" in choose(host, "auto", prove).reason
    host["kvm"].write_bytes(b"")  # the user loaded the module: no reboot, no stale verdict
    assert choose(host, "auto", prove).accel == "kvm"
    assert prove.calls == ["kvm"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_an_unreadable_dev_kvm_names_the_group(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.write_bytes(b"")
    dev.chmod(0)
    assert "add it to group kvm" in (kvm_access_problem(dev) or "")


def test_retiring_kvm_is_remembered(host: dict[str, Path]) -> None:
    prove = Prover(kvm=OK_KVM)
    assert choose(host, "auto", prove).accel == "kvm"
    retired = retire_kvm(str(host["qemu"]), host["vmlinuz"], KVM_LINE)
    assert retired.accel == "tcg" and KVM_LINE in retired.reason
    again = choose(host, "auto", prove)
    assert again.accel == "tcg" and KVM_LINE in again.reason
    assert prove.calls == ["kvm"]


# --- QEMU's own words -------------------------------------------------------------------------

def test_qemu_said_keeps_the_reason_of_a_kvm_internal_error() -> None:
    from fake_qemu import KVM_INTERNAL_ERROR

    assert qemu_said(KVM_INTERNAL_ERROR) == KVM_LINE
    assert qemu_said("\nqemu-system-x86_64: -device nope: 'nope' is not a valid device model "
                     "name\n") == "qemu-system-x86_64: -device nope: 'nope' is not a valid " \
                                 "device model name"
    assert qemu_said("") == ""


# --- the proof boot and the run-state watcher, against a fake QEMU -------------------------

@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(FAKE_QEMU.parent))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"x")

    def boot(outcome: str, accel: str = "kvm", deadline: float | None = None) -> ProofBoot:
        monkeypatch.setenv("FAKE_QEMU_OUTCOME", outcome)
        script = tmp_path / "qemu"
        script.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_QEMU} \"$@\"\n")
        script.chmod(0o755)
        return proof_boot(str(script), kernel, kernel, accel, deadline)
    return boot


def test_proof_of_a_clean_boot(fake_qemu) -> None:
    result = fake_qemu("clean")
    assert result.reached, result


def test_proof_sees_a_kvm_internal_error_at_once(fake_qemu) -> None:
    start = time.monotonic()
    result = fake_qemu("internal-error", deadline=60)
    # the fake stays alive: only QMP can tell, long before the deadline (half of it is a margin
    # no loaded host eats; the unit tests hold no wall-clock bound tighter than that)
    assert time.monotonic() - start < 30
    assert not result.reached
    assert result.detail == f"QEMU stopped the guest (internal-error): {KVM_LINE}"


def test_proof_sees_a_pause(fake_qemu) -> None:
    result = fake_qemu("pause")
    assert (result.reached, result.detail) == (False, "QEMU stopped the guest (paused)")


def test_proof_of_a_crawl_ends_at_its_deadline(fake_qemu) -> None:
    result = fake_qemu("crawl", deadline=0.5)
    assert not result.reached
    assert 0.5 <= result.seconds < 15  # at its deadline, not never (a loaded host is slow)
    assert result.detail == "no userspace within 0.5s (no console output at all)"


def test_proof_of_an_abort_at_start_quotes_qemu(fake_qemu) -> None:
    result = fake_qemu("abort")
    assert not result.reached
    assert result.detail == ("QEMU exited with status -6: qemu-system-x86_64: error: failed to "
                             "set MSR 0x10a to 0x69")
