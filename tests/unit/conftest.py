"""Unit tests: the logic, fast; no QEMU (not even a fake one), no network, no root.

tests/rig holds the tests that start a fake QEMU, an SSH server, pytest or avocado.
Golden files: COCOLAB_REGEN_GOLDEN=1 rewrites.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def golden():
    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if os.environ.get("COCOLAB_REGEN_GOLDEN") == "1":
            path.write_text(text)
        assert text == path.read_text(), f"{path} differs; COCOLAB_REGEN_GOLDEN=1 to accept"
    return check


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COCOLAB_CACHE", str(tmp_path / "cache"))
    for var in ("COCOLAB_KERNEL", "COCOLAB_QEMU", "COCOLAB_ACCEL", "COCOLAB_LANE"):
        monkeypatch.delenv(var, raising=False)
