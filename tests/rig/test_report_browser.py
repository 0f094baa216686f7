"""`cocolab report` rendered by a real browser (Debian's headless Chromium): the cells show the
colours their verdicts have, the bundle link and the changes are there, and a screenshot is
kept (results/report-browser.png) for a person to look at.

The page's own script writes each cell's computed background colour into the DOM, which
Chromium's --dump-dom returns after it ran: what is asserted is what the browser rendered,
not the HTML source."""

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
from cocolab.results.report import COLOURS

REPO = Path(__file__).resolve().parents[2]
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


def rgb(colour: str) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_the_browser_shows_each_verdict_in_its_colour_with_links_and_changes(
        chromium: str, tmp_path: Path) -> None:
    bundle = tmp_path / "failures/test_b"
    bundle.mkdir(parents=True)
    (bundle / "console.log").write_text("COCOLAB READY\n")
    old = RunResults(FACTS, [TestResult(f"t.py::test_{n}", "passed", 1.0) for n in "abcd"])
    new = RunResults(dataclasses.replace(FACTS, kernel="debian:sid", kernel_release="7.3.4"), [
        TestResult("t.py::test_a", "passed", 1.0),
        TestResult("t.py::test_b", "failed", 2.0, "assert 'denied' in 'ok'", bundle=str(bundle)),
        TestResult("t.py::test_c", "xfailed", 1.0, "known", baseline="default: out of tree"),
        TestResult("t.py::test_d", "error", 3.0, "BootError: no READY", rig_failure=True)])
    old.write(tmp_path / "old.json")
    new.write(tmp_path / "new.json")
    page = tmp_path / "report.html"
    made = subprocess.run([sys.executable, "-m", "cocolab.cli", "report", "new.json",
                           "old.json", "-o", str(page), "--since", "old.json"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr

    dom = browse(chromium, page, "--dump-dom")
    assert '<body data-rendered="yes"' in dom, "the page's script did not run"
    cells = re.findall(r'<td class="cell ([a-z]+)[^"]*" data-outcome="\1" title="[^"]*" '
                       r'data-rendered="([^"]+)">(.*?)</td>', dom, re.S)
    assert len(cells) == 8, dom[-3000:]
    for cls, shown, _ in cells:
        assert shown == rgb(COLOURS[cls]), f"a {cls} cell is shown {shown}"
    assert sorted({c for c, _, _ in cells}) == ["baseline", "error", "fail", "pass"]
    link = next(text for cls, _, text in cells if cls == "fail")
    assert link == '<a href="failures/test_b">FAIL</a>'
    assert "Changed since the earlier results: 3" in dom

    shot = tmp_path / "report.png"
    browse(chromium, page, f"--screenshot={shot}", "--window-size=1000,500")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kept = REPO / "results"
    kept.mkdir(exist_ok=True)
    shutil.copy(shot, kept / "report-browser.png")
