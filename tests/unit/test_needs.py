"""What a kernel needs: the rig's own options, the suites' gates, --check and the preflight."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cocolab import cli
from cocolab.kernel.kconfig import Kconfig
from cocolab.kernel.needs import RIG_NEEDS, Gate, check, fragment, rig_lacks

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


def _fake_kernel(tmp: Path, config: str) -> Path:
    head = bytearray(0x400)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x100)
    head[0x300:0x310] = b"6.99.0-tiny (x)\0"
    (tmp / "bzImage").write_bytes(bytes(head))
    (tmp / "config").write_text(config)
    return tmp / "bzImage"


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
