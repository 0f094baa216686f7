"""Progress lines: what a step says, and that a test's setup under output capture still
reaches the terminal through the plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocolab import progress
from fake_kernel import fake_bzimage

pytest_plugins = ["pytester"]


def test_a_step_says_start_parts_and_end_with_what_it_made() -> None:
    lines: list[str] = []
    previous = progress.set_sink(lines.append)
    try:
        with progress.step("fetching kernel debian:trixie") as step:
            step.part(1, 2, "unpacking a.deb")
            step.done = progress.mib(3 * 2**20)
    finally:
        progress.set_sink(previous)
    assert lines[0] == "cocolab: fetching kernel debian:trixie ..."
    assert lines[1] == "cocolab: fetching kernel debian:trixie: unpacking a.deb (1/2)"
    assert lines[2].startswith("cocolab: fetching kernel debian:trixie: done in ")
    assert lines[2].endswith("s (3.0 MiB)")


def test_a_failed_step_says_so_and_raises() -> None:
    lines: list[str] = []
    previous = progress.set_sink(lines.append)
    try:
        with pytest.raises(OSError), progress.step("building the guest image"):
            raise OSError("disk full")
    finally:
        progress.set_sink(previous)
    assert lines[-1].startswith("cocolab: building the guest image: failed after ")


def test_progress_in_a_captured_setup_reaches_the_terminal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from cocolab import progress

        @pytest.fixture
        def slow():
            print("captured, as usual")
            with progress.step("building something long"):
                pass

        def test_it(slow): pass
    """)
    fake_bzimage(pytester.path / "bzImage", "6.99.0-tiny")  # enough for --kernel to take it
    (pytester.path / "config").write_text("CONFIG_64BIT=y\n")
    fake_qemu = Path(__file__).with_name("fake_qemu.py")
    result = pytester.runpytest("-p", "no:cacheprovider", f"--kernel={pytester.path}/bzImage",
                                f"--qemu={fake_qemu}", "--accel=tcg")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["cocolab: building something long ...",
                                 "cocolab: building something long: done in *s"])
    result.stdout.no_fnmatch_line("captured, as usual")  # capture itself still holds
