"""Smoke tests run an inner pytest (pytester) against the same warm kernel and image cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocolab.paths import cache_root

CACHE = cache_root()  # now, before pytester points HOME at a temp dir


@pytest.fixture
def inner(  # modules using it load pytester: pytest_plugins = ["pytester"]
        pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          cocolab_rig):
    if cocolab_rig.lane.cc:
        pytest.skip(f"the plugin's own outcomes are checked on non-confidential lanes; lane "
                    f"{cocolab_rig.lane.name} is for {cocolab_rig.lane.cc} guests")
    monkeypatch.setenv("COCOLAB_CACHE", str(CACHE))  # the warm kernel and image cache
    # the inner run boots what the outer one does (--kernel ~/linux included); a test's own
    # arguments come after, and win
    given = cocolab_rig.options
    same = [f"--{flag}={value}" for flag, value in (
        ("lane", given.lane), ("kernel", given.kernel), ("kernel-config", given.kernel_config),
        ("modules", given.modules), ("qemu", given.qemu), ("accel", given.accel)) if value]
    same += ["--module-debug"] if given.module_debug else []

    def run(source: str, *args: str) -> pytest.RunResult:
        pytester.makepyfile(source)
        return pytester.runpytest_subprocess("-rs", "--results", str(tmp_path / "results"),
                                             *same, *args)
    return run


