"""PCI DOE and CMA/SPDM device authentication, through QEMU's SPDM-capable NVMe (topology
nvme-spdm) and cocolab's own responder (cocolab.spdm).

The guest requester (guests/cma/cocolab-doe.c) drives the DOE mailbox from user space, so the
path QEMU -> responder -> QEMU -> guest is proven on any kernel; the kernel's own side (the
doe_features listing, the TSM class, native CMA) is asserted where the booted kernel has it.
Sources: kernel-behaviors.md §4 and drivers/pci/doe.c, drivers/pci/tsm.c.
"""

from __future__ import annotations

import pytest

from cocolab.guest import Guest
from cocolab.guest.cma import DOE_FEATURES_SINCE, Requester, kernel_version

pytestmark = [pytest.mark.topology("nvme-spdm")]

STEPS = ["discovery", "version", "capabilities", "algorithms", "digests", "certificate",
         "chain", "san", "challenge", "measurements", "done"]


def _doe_features(vm: Guest, ident: str) -> set[str] | None:
    """The names in the function's doe_features directory; None if it has none."""
    path = f"/sys/bus/pci/devices/{vm.topology.bdf(ident)}/doe_features"
    result = vm.run(f"ls {path}")
    return set(result.stdout.split()) if result.returncode == 0 else None


@pytest.mark.kconfig("PCI_DOE")
def test_doe_features_list_discovery_and_both_cma_protocols(vm: Guest) -> None:
    release = vm.kernel_release
    if kernel_version(release) < DOE_FEATURES_SINCE:
        pytest.skip(f"kernel {release} has no doe_features in sysfs: it came in Linux 6.15 "
                    "(\"PCI/DOE: Expose DOE features via sysfs\"); choose debian:sid or a "
                    "newer --kernel")
    assert _doe_features(vm, "spdm-disk") == {"doe_discovery", "0001:01", "0001:02"}
    spdm = vm.topology.bdf("spdm-disk")
    assert vm.run(f"cat /sys/bus/pci/devices/{spdm}/doe_features/doe_discovery").stdout \
        .strip() == "0001:00"
    # counterpart: the NVMe without spdm_port has no DOE mailbox, so no listing at all
    assert _doe_features(vm, "plain-disk") in (None, set())


def test_the_guest_requester_authenticates_the_good_responder(requester: Requester) -> None:
    run = requester.run("good")
    assert run.authenticated, run
    assert [s["step"] for s in run.steps] == STEPS
    assert run.steps[0]["protocols"] == ["0001:00", "0001:01", "0001:02"]
    assert run.steps[3]["asym"] == "ECDSA P-384" and run.steps[3]["hash"] == "SHA384"
    assert run.steps[5]["portions"] >= 2  # the chain came in more than one CERTIFICATE


@pytest.mark.parametrize(("personality", "step", "says"), [
    ("untrusted-root", "chain", "self-signed certificate in certificate chain"),
    ("expired", "chain", "certificate has expired"),
    ("wrong-san", "san", "Device=0011"),
    ("no-san", "san", "no SubjectAltName"),
    ("bad-signature", "challenge", "signature does not verify"),
    ("changing-measurements", "measurements", "changed between two reads"),
    ("truncated", "certificate", "truncated"),
    ("stall", "challenge", "no DOE response within 2000 ms"),
])
def test_the_guest_requester_refuses_a_bad_responder_at_the_right_step(
        requester: Requester, personality: str, step: str, says: str) -> None:
    run = requester.run(personality)
    assert not run.authenticated, run
    assert run.returncode == 1, run
    assert run.last["step"] == step and run.last["ok"] is False, run
    assert says in str(run.last["error"]), run
    # every step before the failing one passed
    assert [s["step"] for s in run.steps] == STEPS[:STEPS.index(step) + 1], run


def test_the_responder_heard_the_whole_exchange(vm: Guest, requester: Requester) -> None:
    assert requester.run("good").authenticated
    log = (vm.workdir / "spdm-spdm-disk.log").read_text()
    for message in ("GET_VERSION", "VERSION", "NEGOTIATE_ALGORITHMS", "ALGORITHMS",
                    "GET_CERTIFICATE", "CERTIFICATE", "CHALLENGE_AUTH", "MEASUREMENTS"):
        assert f"-> {message}" in log or f"<- {message}" in log, message


@pytest.mark.kconfig("PCI_TSM")
def test_pci_tsm_class_exists_and_is_empty_in_a_plain_guest(vm: Guest) -> None:
    """drivers/virt/coco/tsm-core.c registers the class; only a TSM driver (AMD SEV-TIO on a
    host) adds tsmN, and a device's tsm/ group is visible only while one is registered."""
    assert vm.run("test -d /sys/class/tsm").returncode == 0
    assert vm.run("ls -A /sys/class/tsm").stdout.split() == []
    devices = vm.run("ls -d /sys/bus/pci/devices/*/tsm 2>/dev/null").stdout.split()
    assert devices == []


def test_native_cma_reads_authenticated_only_with_the_good_responder(
        vm: Guest, requester: Requester) -> None:
    attr = f"/sys/bus/pci/devices/{requester.bdf}/authenticated"
    if vm.run(f"test -e {attr}").returncode != 0:
        pytest.skip(f"kernel {vm.kernel_release} has no 'authenticated' attribute on the "
                    "SPDM NVMe: native CMA is out of tree (Lukas Wunner's \"PCI device "
                    "authentication\" series, CONFIG_PCI_CMA, or its Rust SPDM successor); "
                    "build one and pass --kernel")
    requester.responder.set_personality("good")
    reauth = vm.write_sysfs(attr, "re")
    assert reauth.ok, reauth
    assert vm.run(f"cat {attr}", check=True).stdout.strip() == "1"
    requester.responder.set_personality("bad-signature")
    vm.write_sysfs(attr, "re")  # may be refused with the failure's errno: the read decides
    assert vm.run(f"cat {attr}", check=True).stdout.strip() == "0"
