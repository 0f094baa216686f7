"""/dev/mem and /dev/port in confidential guests (TDX, SEV-SNP).

The proposal: Dan Williams, "x86/devmem: Drop /dev/mem access for confidential guests" (v5 2/2,
2025-04-29): open_port() returns EPERM when STRICT_DEVMEM=y and
cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT). Patch 1/2 merged (1b3f2bd04d90, v6.16); patch 2/2
is not in mainline (kernel-behaviors.md §1.0). On a kernel without it the open succeeds and
the test fails: a lane that runs such a kernel says so in its known-issue baseline
([[expected_failure]] in the lane file, e.g. qemu-configs/lanes/cc-sim-tdx.toml), so the
failure is reported as that baseline, and a kernel that gains the rule turns the baseline red
until it is updated.
These tests need a guest that proved it is confidential (the cc_guest fixture); on any other
lane they skip and say which lane to use. The rule asks cc_platform_has() only, so a simulated
TDX guest (--lane cc-sim-tdx) runs it; the BIOS-data-area kill is the TDX module's doing and
needs the hardware.
"""

from __future__ import annotations

import errno

import pytest

from cocolab.assertions import assert_denied, refused_by_policy, require
from cocolab.errors import VMError
from cocolab.guest import Guest
from cocolab.guest.cc import CCProof


@pytest.mark.parametrize("path", [
    pytest.param("/dev/mem", marks=pytest.mark.kconfig("DEVMEM", "STRICT_DEVMEM")),
    pytest.param("/dev/port", marks=pytest.mark.kconfig("DEVPORT", "STRICT_DEVMEM")),
])
def test_open_is_denied_in_a_confidential_guest(cc_guest: CCProof, vm: Guest, path: str) -> None:
    """open_port() returns EPERM after the capability and lockdown checks, and logs nothing
    (v5 2/2: `IS_ENABLED(CONFIG_STRICT_DEVMEM) && cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT)`)."""
    vm.dmesg.mark()
    assert_denied(vm.probe("open", path), errno.EPERM, stage="open")
    assert not vm.dmesg.since_mark().contains("Lockdown:"), \
        "the CC rule is not a lockdown hook: a lockdown notice means lockdown refused it"


@pytest.mark.parametrize("path", [
    pytest.param("/dev/mem", marks=pytest.mark.kconfig("DEVMEM", "STRICT_DEVMEM")),
    pytest.param("/dev/port", marks=pytest.mark.kconfig("DEVPORT", "STRICT_DEVMEM")),
])
def test_open_is_allowed_in_a_plain_guest(plain_guest: None, vm: Guest, path: str) -> None:
    """The counterpart: the same open as root succeeds where cc_platform_has() is false."""
    assert vm.probe("open", path).ok


@pytest.mark.destructive
@pytest.mark.fresh_vm
@pytest.mark.kconfig("DEVMEM")
@pytest.mark.cc_hardware("the TD is killed by the TDX module's SEPT check")
def test_bios_data_area_read_kills_a_td(cc_guest: CCProof, vm: Guest) -> None:
    """Nikolay Borisov's report (2025-03-18): reading the BIOS data area through /dev/mem maps a
    private page shared; the reboot path's later private access to 0x472 takes a SEPT
    violation and the TD is killed. Expected: the guest dies, and cocolab says so."""
    if cc_guest.kind != "tdx":
        pytest.skip("the BIOS-data-area kill is specific to TDX; this is a "
                    f"{cc_guest.kind} guest")
    read = vm.probe("read", "/dev/mem", 0x497, 1)
    if refused_by_policy(read):  # EPERM: the CC rule (or STRICT_DEVMEM) closed the path
        pytest.skip(f"the read itself was refused ({read}): this kernel already protects it")
    require(read.ok, f"the read failed, but not as a protection refuses ({read}): the test "
                     "could not reach the BIOS data area")
    with pytest.raises(VMError):
        vm.run("reboot -f", timeout=120)
        vm.check_alive()
    # `reboot -f` under -no-reboot ends QEMU on a healthy TD too, as SHUTDOWN with reason
    # guest-reset: only another ending is the TD being killed.
    assert vm.run_stop is not None and "reason=guest-reset" not in vm.run_stop.detail, \
        f"the TD rebooted cleanly ({vm.run_stop}): it was not killed"


@pytest.mark.destructive
@pytest.mark.fresh_vm
@pytest.mark.cc_hardware("the counterpart of the TD kill")
def test_a_clean_reboot_of_a_td_is_told_apart(cc_guest: CCProof, vm: Guest) -> None:
    """The counterpart: without the BIOS-data-area read, the same reboot is a guest-reset."""
    with pytest.raises(VMError):
        vm.run("reboot -f", timeout=120)
        vm.check_alive()
    assert vm.run_stop is not None and "reason=guest-reset" in vm.run_stop.detail, vm.run_stop
