"""How the plugin reports rig trouble, seen from outside with pytester (real QEMU, one boot)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def test_a_vm_that_cannot_boot_is_an_error_for_every_test_that_needed_it(inner) -> None:
    result = inner("""
        import pytest
        pytestmark = pytest.mark.qemu_args("-device", "no-such-device-model")
        def test_first(vm): pass
        def test_second(vm): pass
        def test_third(vm): pass
    """)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "*BootError: QEMU exited while starting with status 1*no-such-device-model*",
        "*ERROR at setup of test_second*",
        "cocolab: RIG FAILURE: its VM (qemu: -device no-such-device-model) failed to "
        "boot in *test_first: QEMU exited while starting with status 1*; bundle: *test_first",
    ])
    assert len(list(result.stdout.lines)) < 200, "the dependents' errors are one line each"


def test_a_guest_that_stops_during_a_test_is_a_rig_error_not_a_failure(inner) -> None:
    result = inner("""
        def test_pauses_its_guest(vm):
            vm.qmp.cmd("stop")
            vm.run("true")
    """)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*GuestStopped: the guest stopped running after boot: QEMU reported STOP, run state "
        "paused*",
        "*RIG FAILURE*"])


def test_a_missing_kernel_option_skips_with_its_name(inner) -> None:
    result = inner("""
        import pytest
        @pytest.mark.kconfig("COCOLAB_NO_SUCH_OPTION")
        def test_needs_it(vm): pass
    """)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "SKIPPED*needs CONFIG_COCOLAB_NO_SUCH_OPTION=y or =m, kernel has "
        "CONFIG_COCOLAB_NO_SUCH_OPTION is not set*--kernel*"])


def test_a_failing_test_leaves_a_bundle_that_relaunches_its_vm(inner, tmp_path: Path) -> None:
    result = inner("""
        import pytest
        @pytest.mark.cmdline("cocolab.bundle=1")
        def test_fails(vm):
            assert vm.run("cat /proc/cmdline").stdout == "nope"
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*failure bundle: *", "*re-enter this VM: *relaunch.sh"])
    bundles = list((tmp_path / "results/failures").iterdir())
    assert len(bundles) == 1
    bundle = bundles[0]
    assert "COCOLAB READY" in (bundle / "console.log").read_text()
    assert "cocolab.bundle=1" in (bundle / "dmesg.txt").read_text()
    assert "Child connection from" in (bundle / "dropbear.log").read_text()
    relaunch = (bundle / "relaunch.sh").read_text()
    assert "cocolab.bundle=1" in relaunch and "restrict=on" in relaunch
    assert (bundle / "argv.txt").read_text().startswith("/")


@pytest.mark.parametrize(("args", "outcome", "line"), [
    ((), {"skipped": 1}, "SKIPPED*QEMU * has no device igb (needed by topology with-igb); use "
                         "a QEMU that has it (--qemu)*"),
    (("--strict-lane",), {"errors": 1}, "cocolab: QEMU * has no device igb (needed by topology "
                                        "with-igb); use a QEMU that has it (--qemu) "
                                        "(--strict-lane: *"),
], ids=["skip", "strict-lane-error"])
def test_a_device_this_qemu_lacks_is_named(inner, tmp_path: Path, cocolab_rig,
                                           args: tuple[str, ...], outcome: dict[str, int],
                                           line: str) -> None:
    if cocolab_rig.qemu_info.has_device("igb"):
        pytest.skip(f"QEMU {cocolab_rig.qemu_info.version} has igb; nothing to show here")
    topo = tmp_path / "with-igb.toml"
    topo.write_text('machine = "q35"\n[[device]]\nid = "nic"\nmodel = "igb"\n')
    result = inner(f"""
        import pytest
        @pytest.mark.topology({str(topo)!r})
        def test_needs_igb(vm): pass
    """, *args)
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([line])


def test_equal_requests_share_one_vm_with_fresh_per_test_state(inner, tmp_path: Path) -> None:
    """Sharing, seen from outside so that it holds whatever order this suite runs in."""
    pids = tmp_path / "pids"
    result = inner(f"""
        import pytest
        def note(name, vm):
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{name}} {{vm.pid}}\\n")
        def test_a(vm):
            note("a", vm)
        def test_b(vm):
            vm.dmesg.mark()
            note("b", vm)
        def test_c(vm):
            with pytest.raises(RuntimeError, match="before this test's"):
                vm.dmesg.since_mark()  # test_b's mark does not reach this test
            note("c", vm)
        @pytest.mark.cmdline("cocolab.other=1")
        def test_d(vm):
            note("d", vm)
    """)
    result.assert_outcomes(passed=4)
    seen = dict(line.split() for line in pids.read_text().splitlines())
    assert seen["a"] == seen["b"] == seen["c"] != seen["d"]
