"""Every guest on a confidential lane proves itself before any test uses it (real QEMU): a
lane that says it simulates TDX but boots a kernel without the cc-sim patch (Debian's) gets a
plain guest, and each test on it, CC or not, is a RIG FAILURE naming the missing simulation;
never a pass, never a skip. (The cc-sim lane in CI is the counterpart: its guests prove it.)"""

from __future__ import annotations

import json
from pathlib import Path

pytest_plugins = ["pytester"]


LANE = """
description = "claims a simulated TDX guest, boots a kernel that cannot simulate one"
kernel = "debian:trixie"
machine = "q35"
cc = "tdx"
simulated = true
append = ["cc_sim=tdx"]
"""


def test_a_guest_that_does_not_show_the_simulation_fails_every_test_on_it(
        inner, pytester, tmp_path: Path) -> None:
    lane = pytester.path / "unpatched-sim.toml"
    lane.write_text(LANE)
    result = inner("""
        def test_plain_looking(vm):
            assert vm.run("true").ok
        def test_cc(cc_guest):
            pass
    """, "--lane", str(lane))
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*RIG FAILURE: lane unpatched-sim asks for a simulated tdx "
                                 "guest but the guest did not show it*"])
    tests = json.loads((tmp_path / "results/cocolab-results.json").read_text())["tests"]
    assert [(t["outcome"], t["rig_failure"]) for t in tests] == [("error", True)] * 2
