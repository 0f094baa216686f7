"""Tests of the rig that start processes but boot no kernel: the fake QEMU (fake_qemu.py) and
an in-process SSH server (fake_sshd.py) stand in for a guest; pytest and avocado run in
pytester or in subprocesses. No network, no cache of yours: each test gets its own."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COCOLAB_CACHE", str(tmp_path / "cache"))
    for var in ("COCOLAB_KERNEL", "COCOLAB_QEMU", "COCOLAB_ACCEL", "COCOLAB_LANE"):
        monkeypatch.delenv(var, raising=False)
