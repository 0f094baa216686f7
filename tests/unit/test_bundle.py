"""The failure bundle: what it copies from a VM's workdir when no guest is running."""

from __future__ import annotations

import stat
from pathlib import Path

from cocolab.pytest_plugin.bundle import write_bundle


def test_the_bundle_keeps_each_spdm_responders_log_beside_the_console(tmp_path: Path) -> None:
    workdir = tmp_path / "vm"
    workdir.mkdir()
    (workdir / "console.log").write_text("boot\n")
    (workdir / "spdm-spdm-disk.log").write_text("<- GET_VERSION v1.0\n")
    (workdir / "unrelated.txt").write_text("not for the bundle\n")
    dest = write_bundle(tmp_path / "failures", "tests/cma/test_doe.py::test_x", None, workdir)
    assert (dest / "spdm-spdm-disk.log").read_text() == "<- GET_VERSION v1.0\n"
    assert (dest / "console.log").exists() and not (dest / "unrelated.txt").exists()
    assert "guest was not running" in (dest / "dmesg.txt").read_text()


def test_two_long_ids_that_begin_alike_get_two_bundles(tmp_path: Path) -> None:
    workdir = tmp_path / "vm"
    workdir.mkdir()
    (workdir / "console.log").write_text("boot\n")
    stem = "tests/virtio_hostile/test_blk.py::test_" + "x" * 120
    first = write_bundle(tmp_path / "failures", stem + "[a]", None, workdir)
    second = write_bundle(tmp_path / "failures", stem + "[b]", None, workdir)
    assert first != second and first.exists() and second.exists()
    assert len(first.name) <= 120 and first.name.startswith("tests_virtio_hostile")


def test_a_bundle_is_private(tmp_path: Path) -> None:
    workdir = tmp_path / "vm"
    workdir.mkdir()
    dest = write_bundle(tmp_path / "failures", "t.py::test_x", None, workdir)
    for path in (dest, dest.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
