"""The host's TSC frequency, which a microvm guest under TCG is told (host/tsc.py)."""

from __future__ import annotations

import shutil

import pytest

from cocolab.host import tsc
from cocolab.paths import cache_dir


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc: apt-get install gcc")
def test_the_host_tsc_is_measured_once_per_boot_in_whole_mhz(
        monkeypatch: pytest.MonkeyPatch) -> None:
    khz = tsc.host_tsc_khz()
    assert khz % 1000 == 0 and 100_000 <= khz <= 10_000_000  # 100 MHz to 10 GHz
    cached = cache_dir("host") / f"tsc-khz-{tsc.boot_id()}"
    assert cached.read_text() == f"{khz}\n"
    monkeypatch.setattr(tsc, "_program", lambda: pytest.fail("measured twice in one boot"))
    assert tsc.host_tsc_khz() == khz
