"""`cocolab report` rendered by a real browser (Debian's headless Chromium): each verdict's
cell shows the colour a person is meant to see, the bundle link, the changes and the
SIMULATED column head are there, and a screenshot is taken (under the test's tmp_path).

The page's own script writes each cell's computed background colour into the DOM, which
Chromium's --dump-dom returns after it ran: what is asserted is what the browser rendered,
not the HTML source; and the colours expected are written here, by the word in the cell,
not read from the table that generates the page's style."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cocolab.results import RunFacts, RunResults, TestResult

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FACTS = RunFacts(lane="default", kernel="debian:trixie", kernel_release="6.12.118",
                 kernel_config_sha256="ab" * 32, qemu="qemu 10.0.2", accel="tcg", cc="none",
                 host_cpu="cpu", started="2026-12-03T00:00:00+00:00", selected=4)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        why = ("needs Debian's chromium to render the report page: apt-get install "
               "--no-install-recommends chromium")
        if os.environ.get("COCOLAB_REQUIRE_BROWSER"):
            pytest.fail(f"COCOLAB_REQUIRE_BROWSER is set and this host {why}")
        pytest.skip(why)
    return CHROMIUM


def browse(chromium: str, page: Path, *args: str) -> str:
    argv = [chromium, "--headless", "--disable-gpu", "--no-first-run",
            "--user-data-dir=" + str(page.parent / "profile"), *args, page.as_uri()]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses root with its sandbox on
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


SHOWN = {"PASS": "rgb(46, 125, 50)", "FAIL": "rgb(198, 40, 40)", "KNOWN": "rgb(249, 168, 37)",
         "RIG": "rgb(55, 71, 79)", "-": "rgb(255, 255, 255)"}
"""What a person sees for each word: green, red, amber, slate (the rig's), white (not run)."""


def test_the_browser_shows_each_verdict_in_its_colour_with_links_and_changes(
        chromium: str, tmp_path: Path) -> None:
    bundle = tmp_path / "failures/test_b"
    bundle.mkdir(parents=True)
    (bundle / "console.log").write_text("COCOLAB READY\n")
    old = RunResults(FACTS, [TestResult(f"t.py::test_{n}", "passed", 1.0) for n in "abcd"])
    sim = RunResults(dataclasses.replace(FACTS, lane="cc-sim-tdx", cc="simulated TDX guest",
                                         simulated=True), [TestResult("t.py::test_a", "passed",
                                                                      1.0)])
    sim.write(tmp_path / "sim.json")
    new = RunResults(dataclasses.replace(FACTS, kernel="debian:sid", kernel_release="7.3.4"), [
        TestResult("t.py::test_a", "passed", 1.0),
        TestResult("t.py::test_b", "failed", 2.0, "assert 'denied' in 'ok'", bundle=str(bundle)),
        TestResult("t.py::test_c", "xfailed", 1.0, "known", baseline="default: out of tree"),
        TestResult("t.py::test_d", "error", 3.0, "BootError: no READY", rig_failure=True)])
    old.write(tmp_path / "old.json")
    new.write(tmp_path / "new.json")
    page = tmp_path / "report.html"
    made = subprocess.run([sys.executable, "-m", "cocolab.cli", "report", "new.json",
                           "old.json", "sim.json", "-o", str(page), "--since", "old.json"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr

    dom = browse(chromium, page, "--dump-dom")
    assert '<body data-rendered="yes"' in dom, "the page's script did not run"
    cells = re.findall(r'<td class="cell ([a-z]+)[^"]*" data-outcome="\1" title="[^"]*" '
                       r'data-rendered="([^"]+)">(.*?)</td>', dom, re.S)
    assert len(cells) == 12, dom[-3000:]
    for _, shown, text in cells:
        word = re.sub(r"<[^>]+>", "", text)
        assert shown == SHOWN[word], f"a {word} cell is shown {shown}, not {SHOWN[word]}"
    assert sorted({re.sub(r"<[^>]+>", "", t) for _, _, t in cells}) == [
        "-", "FAIL", "KNOWN", "PASS", "RIG"]
    link = next(text for _, _, text in cells if "FAIL" in text)
    assert link == '<a href="failures/test_b">FAIL</a>'
    assert "Changed since the earlier results: 3" in dom
    assert re.search(r"<small>cc-sim-tdx</small> <b class=\"?simulated\"?>SIMULATED</b>", dom)

    shot = tmp_path / "report.png"
    browse(chromium, page, f"--screenshot={shot}", "--window-size=1000,500")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
