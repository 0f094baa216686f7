"""The failure bundle: what it copies from a VM's workdir when no guest is running."""

from __future__ import annotations

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
