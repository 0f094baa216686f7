"""What a kernel needs: the rig's own options, the suites' gates, --check and the preflight."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cocolab import cli
from cocolab.errors import ImageError
from cocolab.kconfig_tool import Gate, check, fragment
from cocolab.kernel.kconfig import Kconfig
from cocolab.kernel.needs import RIG_NEEDS, rig_lacks
from fake_kernel import fake_bzimage

pytest_plugins = ["pytester"]


def _config(**values: str) -> Kconfig:
    return Kconfig.parse("".join(f"CONFIG_{k}={v}\n" for k, v in values.items()), "test")


EVERYTHING = {need.option: "y" for need in RIG_NEEDS}


def test_the_rig_needs_nothing_more_of_a_full_config() -> None:
    assert rig_lacks(_config(**EVERYTHING)) == []
    assert rig_lacks(_config(**{**EVERYTHING, "VIRTIO_NET": "m"})) == []  # /init loads it


def test_built_in_only_needs_refuse_a_module() -> None:
    lacks = rig_lacks(_config(**{**EVERYTHING, "SERIAL_8250_CONSOLE": "m", "DEVTMPFS": "n"}))
    assert [n.option for n in lacks] == ["DEVTMPFS", "SERIAL_8250_CONSOLE"]


def test_check_names_what_is_missing_and_what_skips() -> None:
    gates = [Gate("STRICT_DEVMEM", None, ["a.py::test_x[1]", "a.py::test_x[2]"]),
             Gate("E1000", "m", ["b.py::test_y"]), Gate("USB", "n", ["c.py::test_z"])]
    config = _config(**{**EVERYTHING, "E1000": "y", "USB": "y"})
    lines, skipping = check(config, gates)
    assert lines == [
        "wants CONFIG_E1000=m, has CONFIG_E1000=y: skips 1 test: test_y",
        "wants CONFIG_STRICT_DEVMEM=y, has CONFIG_STRICT_DEVMEM is not set: skips 2 tests: "
        "test_x",
        "wants # CONFIG_USB is not set, has CONFIG_USB=y: skips 1 test: test_z",
    ]
    assert skipping == 4


def test_the_fragment_lists_the_rig_then_the_gates() -> None:
    text = fragment([Gate("IOMMUFD", None, ["t.py::test_iommufd"])])
    lines = text.splitlines()
    assert lines[0].startswith("# cocolab: what the rig needs")
    assert any(line.startswith("CONFIG_VIRTIO_NET=y") and "(=m will do)" in line
               for line in lines)
    assert lines[-1].startswith("CONFIG_IOMMUFD=y") and lines[-1].endswith("1 test: "
                                                                          "test_iommufd")


def test_cocolab_kconfig_collects_the_real_suites(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kconfig", "devmem"]) == 0
    out = capsys.readouterr().out
    assert "CONFIG_STRICT_DEVMEM=y" in out and "CONFIG_VFIO_PCI" not in out
    assert cli.main(["kconfig", "nosuite"]) == 1
    assert "kconfig: no suite nosuite; choose from" in capsys.readouterr().err


def test_the_kernels_own_tests_are_opt_in_and_gate_without_building(
        capsys: pytest.CaptureFixture[str]) -> None:
    """KUnit's options (and a selftest target's) are in a fragment only when the suite is
    named; named, its gates come out with no kernel built or booted (on the default lane,
    whose kernel has no tree, kselftest says where its targets' options would come from)."""
    assert cli.main(["kconfig"]) == 0
    assert "CONFIG_KUNIT" not in capsys.readouterr().out
    assert cli.main(["kconfig", "kunit"]) == 0
    out = capsys.readouterr().out
    assert "CONFIG_KUNIT=y" in out and "CONFIG_LIST_KUNIT_TEST=y" in out
    assert cli.main(["kconfig", "kselftest"]) == 1
    assert "targets' options are read from the kernel's tree" in capsys.readouterr().err


def _fake_kernel(tmp: Path, config: str) -> Path:
    (tmp / "config").write_text(config)
    return fake_bzimage(tmp / "bzImage", "6.99.0-tiny")


def test_a_kernel_the_rig_cannot_use_is_refused_before_any_boot(
        pytester: pytest.Pytester) -> None:
    image = _fake_kernel(pytester.path, "CONFIG_64BIT=y\nCONFIG_TTY=y\n")  # as tinyconfig
    pytester.makepyfile("def test_a(vm): pass\ndef test_b(vm): pass\n")
    result = pytester.runpytest("--kernel", str(image), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*cocolab: kernel 6.99.0-tiny (*bzImage) lacks what cocolab "
                                 "needs to boot and reach its guest: CONFIG_BLK_DEV_INITRD, "
                                 "CONFIG_BINFMT_ELF, *; `cocolab kconfig` prints a fragment*"])
    assert not list(pytester.path.glob("results/vms/*")), "a VM was started"


def test_a_machine_s_kernel_needs_skip_its_tests_naming_option_and_machine(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    rig_ok = "".join(f"CONFIG_{need.option}=y\n" for need in RIG_NEEDS)
    pytester.makepyfile("""
        import pytest
        @pytest.mark.machine("q35-intel-iommu")
        def test_on_vtd(vm): pass
    """)
    monkeypatch.setenv("FAKE_QEMU_OUTCOME", "abort")  # nothing boots
    fake_qemu = f"--qemu={Path(__file__).with_name('fake_qemu.py')}"
    # the counterpart: with both options the kernel gate lets it through, to the next check
    # (this fake QEMU has no intel-iommu device)
    image = _fake_kernel(pytester.path, rig_ok + "CONFIG_IRQ_REMAP=y\nCONFIG_INTEL_IOMMU=y\n")
    result = pytester.runpytest("-rs", f"--kernel={image}", fake_qemu, "--accel=tcg",
                                "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["SKIPPED*has no device intel-iommu (needed by machine "
                                 "q35-intel-iommu)*"])
    result = pytester.runpytest("-rs", f"--kernel={_fake_kernel(pytester.path, rig_ok)}",
                                fake_qemu, "--accel=tcg", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "SKIPPED*kernel 6.99.0-tiny (*bzImage): needs CONFIG_INTEL_IOMMU=y, kernel has "
        "CONFIG_INTEL_IOMMU is not set (for machine q35-intel-iommu); needs CONFIG_IRQ_REMAP=y, "
        "kernel has CONFIG_IRQ_REMAP is not set (for machine q35-intel-iommu). Build a kernel "
        "with it and pass --kernel*"])


def test_kconfig_apply_merges_with_the_tree_s_tools_then_says_what_did_not_stick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A stand-in tree: its merge_config.sh appends the fragment, its `make olddefconfig`
    drops CONFIG_IOMMUFD as Kconfig drops an option whose dependencies are unmet."""
    tree, bin_dir = tmp_path / "linux", tmp_path / "bin"
    (tree / "scripts/kconfig").mkdir(parents=True)
    bin_dir.mkdir()
    (tree / "Makefile").write_text("# stand-in\n")
    (tree / "scripts/kconfig/merge_config.sh").write_text(
        '[ "$1" = -m ] && cat "$3" >> "$2"\n')
    make = bin_dir / "make"
    make.write_text('#!/bin/sh\necho "make $*" >> make.log\n'
                    'case "$1" in defconfig) echo CONFIG_64BIT=y > .config;;\n'
                    'olddefconfig) grep -v IOMMUFD .config > .new; mv .new .config;; esac\n')
    make.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert cli.main(["kconfig", "dma_ownership", "--apply", str(tree)]) == 0
    out = capsys.readouterr().out
    assert (tree / "make.log").read_text() == "make defconfig\nmake olddefconfig\n"
    config = Kconfig.from_file(tree / ".config")
    assert config.get("CONFIG_VFIO_PCI") == "y" and config.get("CONFIG_64BIT") == "y"
    assert out.splitlines() == [
        "wants CONFIG_IOMMUFD=y, has CONFIG_IOMMUFD is not set: skips 1 test: "
        "test_iommufd_as_container_then_device_fd_is_refused",
        f"{tree}/.config: 0 option(s) missing for the rig, 1 test(s) will skip; "
        "`cocolab kconfig` prints the fragment"]
    assert not (tree / ".cocolab.fragment").exists()
    assert cli.main(["kconfig", "--apply", str(tmp_path)]) == 1
    assert f"kconfig --apply {tmp_path}: not a kernel source tree" in capsys.readouterr().err


def test_the_fragment_for_kconfig_s_tools_is_bare_lines() -> None:
    text = fragment([Gate("A", None, ["t.py::x"]), Gate("B", "n", ["t.py::y"])], why=False)
    assert text.splitlines()[0] == "CONFIG_BLK_DEV_INITRD=y"
    assert text.splitlines()[-2:] == ["CONFIG_A=y", "# CONFIG_B is not set"]
    assert len(text.splitlines()) == len(RIG_NEEDS) + 2


def test_a_qemu_without_nvme_spdm_port_skips_the_cma_topology_naming_the_version(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """QMP device-list-properties decides, not the version number."""
    pytester.makepyfile("""
        import pytest
        @pytest.mark.topology("nvme-spdm")
        def test_cma(vm): pass
    """)
    monkeypatch.setenv("FAKE_QEMU_OUTCOME", "abort")  # nothing boots
    rig_ok = "".join(f"CONFIG_{need.option}=y\n" for need in RIG_NEEDS)
    args = ["-rs", f"--kernel={_fake_kernel(pytester.path, rig_ok)}",
            f"--qemu={Path(__file__).with_name('fake_qemu.py')}", "--accel=tcg",
            "-p", "no:cacheprovider"]
    result = pytester.runpytest(*args)
    result.stdout.fnmatch_lines([
        "SKIPPED*QEMU 7.2.0 (*fake_qemu.py): its nvme has no spdm_port property (needed by "
        "topology nvme-spdm, device spdm-disk: SPDM over DOE); QEMU 9.1 or later has it. On "
        "Debian 12, ./setup.sh installs QEMU 10 from bookworm-backports; else pass --qemu"])
    # counterpart: with the property, the gate lets it through to the boot, which fails. A
    # copy of the fake, so that the probe's answer (cached per binary) is its own
    newer = pytester.path / "fake_qemu_9_1.py"
    shutil.copy2(Path(__file__).with_name("fake_qemu.py"), newer)
    monkeypatch.setenv("FAKE_QEMU_SPDM", "1")
    monkeypatch.setattr("cocolab.rig.build_guest_image", _no_image)
    result = pytester.runpytest(*args[:2], f"--qemu={newer}", *args[3:])
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*stand-in: the guest image is where this test stops*"])
    result.stdout.no_fnmatch_line("*spdm_port property*")


def _no_image(*args: object, **kwargs: object) -> None:
    """Past every gate the next step is the guest image (apt, gcc): a unit test stops here."""
    raise ImageError("stand-in: the guest image is where this test stops")
